"""GAN losses: known values of the two objectives and of the R1 penalty."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.tasks import gan_losses


def test_losses_at_known_logits():
  zero = jnp.zeros(4)
  # non-saturating at D = 1/2 everywhere: log 2 per term
  np.testing.assert_allclose(gan_losses.d_loss_fn(zero, zero, "non_saturating"), 2 * np.log(2))
  np.testing.assert_allclose(gan_losses.g_loss_fn(zero, "non_saturating"), np.log(2))
  real, fake = jnp.array([2.0, 0.5]), jnp.array([-2.0, 0.0])
  # hinge: relu(1 - real) = [0, 0.5], relu(1 + fake) = [0, 1]
  np.testing.assert_allclose(gan_losses.d_loss_fn(real, fake, "hinge"), 0.25 + 0.5)
  np.testing.assert_allclose(gan_losses.g_loss_fn(fake, "hinge"), 1.0)
  with pytest.raises(ValueError, match="unknown GAN loss"):
    gan_losses.d_loss_fn(real, fake, "wasserstein")


def real_images():
  return jax.random.normal(jax.random.key(0), (5, 4, 4, 2))


def test_r1_of_a_linear_discriminator_is_the_squared_weight_norm():
  w = jax.random.normal(jax.random.key(1), (4, 4, 2))
  d_fn = lambda x: jnp.sum(w * x, axis=(1, 2, 3))  # [B]
  r1 = gan_losses.r1_penalty(d_fn, real_images())
  np.testing.assert_allclose(r1, jnp.sum(w**2), rtol=1e-6)
  # differentiable in D's parameters (R1 regularises D): d/dw ||w||^2 = 2w
  grad = jax.grad(lambda w: gan_losses.r1_penalty(lambda x: jnp.sum(w * x, (1, 2, 3)), x))
  x = real_images()
  np.testing.assert_allclose(grad(w), 2 * w, rtol=1e-6)


def test_r1_of_a_quadratic_discriminator_is_the_mean_squared_image_norm():
  x = real_images()
  d_fn = lambda x: 0.5 * jnp.sum(x**2, axis=(1, 2, 3))  # grad_x D(x) = x
  expected = np.mean(np.sum(np.asarray(x) ** 2, axis=(1, 2, 3)))
  np.testing.assert_allclose(gan_losses.r1_penalty(d_fn, x), expected, rtol=1e-6)


def test_r1_takes_only_real_images_and_can_return_the_logits():
  assert list(inspect.signature(gan_losses.r1_penalty).parameters)[:2] == ["d_fn", "real_images"]
  x = real_images()
  fake = 10 * jax.random.normal(jax.random.key(2), x.shape)
  d_fn = lambda x: 0.5 * jnp.sum(x**2, axis=(1, 2, 3))
  r1 = gan_losses.r1_penalty(d_fn, x)
  # the value is a function of the real batch alone: fakes in the batch would change it
  assert not np.isclose(r1, gan_losses.r1_penalty(d_fn, jnp.concatenate([x, fake])))
  penalty, (logits, aux) = gan_losses.r1_penalty(lambda x: (d_fn(x), "stats"), x, has_aux=True)
  np.testing.assert_allclose(penalty, r1)
  np.testing.assert_allclose(logits, d_fn(x))
  assert aux == "stats"
