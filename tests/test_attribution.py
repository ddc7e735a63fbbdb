"""Attribution maps and their faithfulness on models whose answers are known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import attribution

RNG = np.random.default_rng(0)
W = jnp.asarray(RNG.normal(size=(4 * 4 * 1, 3)), jnp.float32)  # a linear classifier of 4x4 images


def linear(x):
  return x.reshape(len(x), -1) @ W


def nonlinear(x):  # a small two-layer net: IG's completeness is not trivial for it
  h = jnp.tanh(x.reshape(len(x), -1) @ W)
  return jnp.concatenate([h, h**2], axis=1)


X = jnp.asarray(RNG.normal(size=(5, 4, 4, 1)), jnp.float32)
TARGET = jnp.asarray([0, 1, 2, 0, 1])


def test_gradient_of_a_linear_model_is_its_weights():
  grads = attribution.gradient(linear, X, TARGET)
  np.testing.assert_allclose(grads.reshape(5, -1), W[:, TARGET].T, rtol=1e-6)


def test_integrated_gradients_are_complete():
  target = jnp.asarray([0, 4, 2, 5, 1])
  maps = attribution.integrated_gradients(nonlinear, X, target, 0.0, steps=256)
  f = lambda x: jnp.take_along_axis(nonlinear(x), target[:, None], 1)[:, 0]
  np.testing.assert_allclose(
    maps.reshape(5, -1).sum(1), f(X) - f(jnp.zeros_like(X)), rtol=1e-3, atol=1e-4
  )


def test_occlusion_of_a_linear_model_is_each_patch_s_contribution():
  maps = attribution.occlusion(linear, X, TARGET, 0.0, patch=2)
  contribution = X[..., 0] * W[:, TARGET].T.reshape(5, 4, 4)  # [N, H, W]
  patch_sum = contribution.reshape(5, 2, 2, 2, 2).sum((2, 4))  # [N, 2, 2] per 2x2 patch
  expected = jnp.repeat(jnp.repeat(patch_sum, 2, 1), 2, 2)
  np.testing.assert_allclose(maps[..., 0], expected, rtol=1e-5, atol=1e-6)


def test_smoothgrad_of_a_linear_model_is_its_gradient():
  maps = attribution.smoothgrad(linear, X, TARGET, jax.random.key(0), samples=4)
  np.testing.assert_allclose(maps, attribution.gradient(linear, X, TARGET), rtol=1e-5)


def test_a_true_ranking_deletes_faster_than_a_random_one():
  def probs(x):
    return np.asarray(jax.nn.softmax(linear(jnp.asarray(x))))

  x = np.abs(np.asarray(X)) * np.sign(np.asarray(W[:, 0]).reshape(1, 4, 4, 1))  # all for class 0
  target = np.zeros(5, int)
  truth = attribution.pixel_map(np.asarray(x) * np.asarray(W[:, 0]).reshape(1, 4, 4, 1))
  random = RNG.uniform(size=truth.shape)
  good = attribution.deletion_insertion(probs, x, truth, target, 0.0, steps=16)
  chance = attribution.deletion_insertion(probs, x, random, target, 0.0, steps=16)
  assert good["deletion_auc"].mean() < chance["deletion_auc"].mean()
  assert good["insertion_auc"].mean() > chance["insertion_auc"].mean()
  np.testing.assert_allclose(good["deletion"][:, 0], good["insertion"][:, -1])  # x itself
  np.testing.assert_allclose(good["deletion"][:, -1], good["insertion"][:, 0])  # the baseline


def test_unknown_method_is_one_line():
  with pytest.raises(ValueError, match="unknown attribution method 'xrai'"):
    attribution.attribute("xrai", linear, X, TARGET, baseline=0.0)
