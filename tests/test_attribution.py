"""Attribution maps and their faithfulness on models whose answers are known."""

import flax.linen as nn
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


class TwoConvs(nn.Module):
  """Conv -> relu -> Conv (1x1, one channel) -> logits (mean, -mean) of the last conv's output."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(3, (3, 3), name="first")(x))
    a = nn.Conv(1, (1, 1), name="last")(x)  # [N, H, W, 1]
    m = a.mean(axis=(1, 2, 3))
    return jnp.stack([m, -m], axis=1)


def test_gradcam_weights_the_last_conv_by_its_mean_gradient():
  model = TwoConvs()
  params = model.init(jax.random.key(0), X)
  logits_fn = lambda x: model.apply(params, x)
  path, shape = attribution.last_conv(logits_fn, X)
  assert path == ("last",) and shape == (5, 4, 4, 1)
  last = nn.relu(nn.Conv(3, (3, 3)).apply({"params": params["params"]["first"]}, X))
  a = nn.Conv(1, (1, 1)).apply({"params": params["params"]["last"]}, last)[..., 0]  # [N, 4, 4]
  # d mean(A) / dA = 1 / 16 everywhere: class 0's map is relu(A) / 16, class 1's relu(-A) / 16.
  target = jnp.asarray([0, 1, 0, 1, 1])
  maps = attribution.gradcam(logits_fn, X, target)
  sign = np.where(np.asarray(target) == 0, 1.0, -1.0)[:, None, None]
  expected = np.maximum(sign * np.asarray(a), 0) / 16
  np.testing.assert_allclose(maps[..., 0], expected, rtol=1e-5, atol=1e-7)
  assert float(maps.max()) > 0  # the case is not trivially zero


def test_gradcam_needs_a_convolution():
  with pytest.raises(ValueError, match="Grad-CAM needs a model with a convolution"):
    attribution.gradcam(linear, X, TARGET)


def test_cascading_randomization_replaces_layers_from_the_top():
  trained = {"conv": 1, "dense": 2, "out": 3}
  fresh = {"conv": -1, "dense": -2, "out": -3}
  stages = attribution.randomized_params(trained, fresh)
  assert stages == [
    ("out", {"conv": 1, "dense": 2, "out": -3}),
    ("dense", {"conv": 1, "dense": -2, "out": -3}),
    ("conv", {"conv": -1, "dense": -2, "out": -3}),
  ]
  with pytest.raises(ValueError, match="parameter trees differ"):
    attribution.randomized_params(trained, {"conv": 0})


def test_spearman_matches_scipy():
  from scipy.stats import spearmanr

  a = RNG.normal(size=(4, 3, 3))
  b = a + RNG.normal(size=(4, 3, 3))
  b[1] = -a[1]
  b[2] = np.round(a[2])  # ties
  got = attribution.spearman(a, b)
  want = [spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(4)]
  np.testing.assert_allclose(got, want, rtol=1e-10)
  assert got[1] == pytest.approx(-1.0)
  assert attribution.spearman(a[:1], np.zeros((1, 3, 3)))[0] == 0.0
