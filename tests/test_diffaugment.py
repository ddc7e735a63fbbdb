"""DiffAugment: identity, shapes, determinism, gradients, and what translation/cutout do."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.tasks.diffaugment import diff_augment

POLICIES = ["color", "translation", "cutout", "color,translation,cutout"]


def images(n=8, h=16, w=16, c=3, seed=0):
  return jax.random.uniform(jax.random.key(seed), (n, h, w, c), minval=-1.0, maxval=1.0)


def test_empty_policy_is_identity():
  x = images()
  np.testing.assert_array_equal(diff_augment(jax.random.key(0), x, ""), x)


@pytest.mark.parametrize("policy", POLICIES)
def test_shape_dtype_determinism_and_randomness(policy):
  x = images()
  a = diff_augment(jax.random.key(1), x, policy)
  assert a.shape == x.shape and a.dtype == x.dtype
  np.testing.assert_array_equal(a, diff_augment(jax.random.key(1), x, policy))
  assert not np.allclose(a, diff_augment(jax.random.key(2), x, policy))
  # per-image randomness: the same image twice in a batch is augmented differently
  pair = diff_augment(jax.random.key(3), jnp.stack([x[0], x[0]] * 4), policy)
  assert any(not np.allclose(pair[0], pair[i]) for i in range(1, 8))


@pytest.mark.parametrize("policy", POLICIES)
def test_gradient_is_finite_and_nonzero(policy):
  x = images()
  weights = jax.random.normal(jax.random.key(4), x.shape)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(diff_augment(jax.random.key(5), x, policy) * weights)))(
    x
  )
  assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).sum()) > 0


def test_translation_moves_a_bright_pixel_by_at_most_an_eighth():
  h = w = 16  # shifts of up to 2 pixels each way
  x = jnp.zeros((64, h, w, 1)).at[:, 8, 8, 0].set(1.0)
  out = np.asarray(diff_augment(jax.random.key(6), x, "translation"))
  sums = out.sum(axis=(1, 2, 3))
  np.testing.assert_array_equal(sums, 1.0)  # moved whole, never blurred or lost (inside frame)
  rows, cols = np.nonzero(out[..., 0].sum(2))[1], np.nonzero(out[..., 0].sum(1))[1]
  shifts = {(r - 8, c - 8) for r, c in zip(rows, cols, strict=True)}
  assert all(abs(dr) <= 2 and abs(dc) <= 2 for dr, dc in shifts)
  assert len(shifts) > 10  # of 25 possible shifts, many occur in 64 draws
  # a pixel on the border leaves the frame when shifted out: zero padding, no wrap-around
  edge = jnp.zeros((64, h, w, 1)).at[:, 0, 0, 0].set(1.0)
  kept = np.asarray(diff_augment(jax.random.key(6), edge, "translation")).sum(axis=(1, 2, 3))
  assert set(kept.tolist()) == {0.0, 1.0} and 0 < kept.mean() < 1


def expected_cutout_fraction(side: int) -> float:
  """Mean hidden fraction of the reference cutout: a half-side square, centre uniform on 0..side,
  clipped at the borders (even side)."""
  size = side // 2
  covered = [min(c - size // 2 + size, side) - max(c - size // 2, 0) for c in range(side + 1)]
  return (np.mean(covered) / side) ** 2


def test_cutout_zeroes_one_rectangle_of_the_expected_fraction():
  n, side = 2000, 16
  x = jnp.ones((n, side, side, 2))
  out = np.asarray(diff_augment(jax.random.key(7), x, "cutout"))
  assert np.all(out[..., 0] == out[..., 1])  # every channel of a hidden pixel
  hidden = out[..., 0] == 0  # [N, H, W]
  fractions = hidden.mean(axis=(1, 2))
  assert fractions.max() == 0.25 and fractions.min() >= (side // 4) ** 2 / side**2
  rows, cols = hidden.any(2), hidden.any(1)  # each image: a solid rectangle
  np.testing.assert_array_equal(hidden.sum((1, 2)), rows.sum(1) * cols.sum(1))
  assert abs(fractions.mean() - expected_cutout_fraction(side)) < 0.005


def test_color_keeps_spatial_structure_and_changes_values():
  x = images(c=3)
  out = diff_augment(jax.random.key(8), x, "color")
  assert not np.allclose(out, x)
  # brightness, saturation and contrast are affine in each pixel: a constant image stays constant
  flat = diff_augment(jax.random.key(8), jnp.full((4, 8, 8, 3), 0.3), "color")
  np.testing.assert_allclose(flat, flat[:, :1, :1, :1] * jnp.ones_like(flat), atol=1e-6)


def test_unknown_policy_is_an_error():
  with pytest.raises(ValueError, match="unknown DiffAugment policy"):
    diff_augment(jax.random.key(0), images(), "translation,rotate")
