"""Per-frame losses and metrics of predicted video, and the copy-last-frame baseline.

Every function is pure `jnp` (jit- and vmap-able) and keeps the batch and time axes, returning
[B, T] values: a trainer takes the mean for the loss, an evaluator reports per-frame curves
(error typically grows with the prediction horizon). Frames are [B, T, H, W, C]; pixels in
[0, 1]; predictor outputs are logits (`jax.nn.sigmoid` gives pixels).
"""

from __future__ import annotations

import jax.numpy as jnp

# SSIM's standard settings (Wang et al. 2004; as tf.image.ssim and dm_pix.ssim).
SSIM_FILTER_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def frame_mse(pixels: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """Mean squared error of each frame.

  Args:
    pixels: predicted frames [B, T, H, W, C] in [0, 1] (sigmoid of the logits).
    targets: true frames [B, T, H, W, C].

  Returns:
    [B, T] mean over pixels and channels.
  """
  return jnp.mean(jnp.square(pixels - targets), axis=(-3, -2, -1))


def frame_bce(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """Binary cross-entropy of each frame, from logits (pixels in [0, 1] are soft targets).

  Computed as max(x, 0) - x z + log(1 + exp(-|x|)), which never overflows.

  Args:
    logits: predicted frames [B, T, H, W, C] as logits.
    targets: true frames [B, T, H, W, C] in [0, 1].

  Returns:
    [B, T] mean over pixels and channels (nats per pixel).
  """
  per_pixel = jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  return jnp.mean(per_pixel, axis=(-3, -2, -1))


def _gaussian_band(n: int, filter_size: int, sigma: float) -> jnp.ndarray:
  """The 'VALID' 1-D Gaussian filter along an axis of length n, as a matrix [n - size + 1, n]."""
  offsets = jnp.arange(filter_size, dtype=jnp.float32) - (filter_size - 1) / 2
  weights = jnp.exp(-0.5 * jnp.square(offsets / sigma))
  weights = weights / weights.sum()
  rows = jnp.arange(n - filter_size + 1)[:, None]
  taps = jnp.arange(n)[None, :] - rows  # [n', n]: which tap of the filter meets pixel j at row i
  return jnp.where(
    (taps >= 0) & (taps < filter_size), weights[jnp.clip(taps, 0, filter_size - 1)], 0
  )


def _gaussian_blur(x: jnp.ndarray, filter_size: int, sigma: float) -> jnp.ndarray:
  """'VALID' separable Gaussian filter of images [N, H, W, C], each channel on its own.

  Written as two matmuls with banded matrices: XLA:CPU runs a convolution with one input and one
  output channel on a slow path (50x slower here), a matmul on its fast one.
  """
  rows = _gaussian_band(x.shape[1], filter_size, sigma)  # [H', H]
  cols = _gaussian_band(x.shape[2], filter_size, sigma)  # [W', W]
  return jnp.einsum("ph,nhwc,qw->npqc", rows, x, cols)  # [N, H', W', C]


def ssim(
  a: jnp.ndarray,
  b: jnp.ndarray,
  *,
  max_val: float = 1.0,
  filter_size: int = SSIM_FILTER_SIZE,
  sigma: float = SSIM_SIGMA,
  k1: float = SSIM_K1,
  k2: float = SSIM_K2,
) -> jnp.ndarray:
  """Structural similarity of images, with Gaussian-weighted local statistics.

  The SSIM map over the 'VALID' window positions (no padding, as tf.image.ssim) is averaged over
  positions and channels.

  Args:
    a, b: images [..., H, W, C] with values in [0, max_val]; H, W >= filter_size.
    max_val: the dynamic range of the pixel values.
    filter_size, sigma: the Gaussian window.
    k1, k2: the stabilising constants (c1 = (k1 max_val)^2, c2 = (k2 max_val)^2).

  Returns:
    SSIM [...]: 1 for identical images, lower for less similar ones.
  """
  if a.shape != b.shape:
    raise ValueError(f"ssim of images of different shapes {a.shape} and {b.shape}")
  *lead, h, w, c = a.shape
  if min(h, w) < filter_size:
    raise ValueError(f"images {h}x{w} are smaller than the SSIM window {filter_size}")
  a = a.reshape(-1, h, w, c).astype(jnp.float32)
  b = b.reshape(-1, h, w, c).astype(jnp.float32)
  blur = lambda x: _gaussian_blur(x, filter_size, sigma)
  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a * mu_a
  var_b = blur(b * b) - mu_b * mu_b
  cov = blur(a * b) - mu_a * mu_b
  c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
  luminance = (2 * mu_a * mu_b + c1) / (mu_a * mu_a + mu_b * mu_b + c1)
  structure = (2 * cov + c2) / (var_a + var_b + c2)
  return jnp.mean(luminance * structure, axis=(-3, -2, -1)).reshape(lead)


def frame_ssim(pixels: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """SSIM of each frame: pixels and targets [B, T, H, W, C] in [0, 1] -> [B, T]."""
  return ssim(pixels, targets)


def copy_last_prediction(clip: jnp.ndarray, num_predict: int) -> jnp.ndarray:
  """The baseline prediction: the last observed frame, repeated.

  Args:
    clip: whole clips [B, T, H, W, C]; the last `num_predict` frames are to be predicted.
    num_predict: P, 1 <= P < T.

  Returns:
    [B, P, H, W, C]: frame T - P - 1 for every predicted frame.
  """
  t = clip.shape[1]
  if not 1 <= num_predict < t:
    raise ValueError(f"need 1 <= num_predict < T = {t}, got {num_predict}")
  last = clip[:, t - num_predict - 1 : t - num_predict]  # [B, 1, H, W, C]
  return jnp.broadcast_to(last, (clip.shape[0], num_predict, *clip.shape[2:]))


def prediction_metrics(pixels: jnp.ndarray, targets: jnp.ndarray) -> dict[str, jnp.ndarray]:
  """{"mse", "ssim"}, each [B, P], of predicted frames `pixels` against `targets`."""
  return {"mse": frame_mse(pixels, targets), "ssim": frame_ssim(pixels, targets)}


def copy_last_metrics(clip: jnp.ndarray, num_predict: int) -> dict[str, jnp.ndarray]:
  """{"mse", "ssim"}, each [B, P], of the copy-last-frame baseline on clips [B, T, H, W, C].

  A predictor worth its name beats this on both (lower MSE, higher SSIM) at every horizon.
  """
  return prediction_metrics(copy_last_prediction(clip, num_predict), clip[:, -num_predict:])
