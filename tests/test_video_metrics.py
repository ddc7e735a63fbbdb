"""Video losses and metrics on known inputs, the copy-last baseline, GIF and PNG strips."""

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxvision import video_images, video_metrics

# Jitted once here: eager op-by-op dispatch would make these tests ten times slower.
ssim = jax.jit(video_metrics.ssim)
frame_ssim = jax.jit(video_metrics.frame_ssim)
frame_mse = jax.jit(video_metrics.frame_mse)
frame_bce = jax.jit(video_metrics.frame_bce)
copy_last_metrics = jax.jit(video_metrics.copy_last_metrics, static_argnums=1)


def _ssim_reference(a, b, size=11, sigma=1.5, c1=0.01**2, c2=0.03**2):
  """SSIM of two [H, W, C] images by explicit windows (numpy float64), as Wang et al. 2004."""
  offsets = np.arange(size) - (size - 1) / 2
  g = np.exp(-0.5 * (offsets / sigma) ** 2)
  w = np.outer(g, g) / np.outer(g, g).sum()
  h, wd, c = a.shape
  values = []
  for ch in range(c):
    for y in range(h - size + 1):
      for x in range(wd - size + 1):
        pa, pb = a[y : y + size, x : x + size, ch], b[y : y + size, x : x + size, ch]
        ma, mb = (w * pa).sum(), (w * pb).sum()
        va, vb = (w * pa * pa).sum() - ma**2, (w * pb * pb).sum() - mb**2
        cov = (w * pa * pb).sum() - ma * mb
        values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
  return float(np.mean(values))


def test_ssim_matches_the_definition_and_orders_by_noise():
  rng = np.random.default_rng(0)
  a = rng.uniform(0, 1, (16, 14, 2)).astype(np.float32)
  b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1).astype(np.float32)
  np.testing.assert_allclose(ssim(a, b), _ssim_reference(a, b), atol=1e-5)
  frames = jnp.asarray(rng.uniform(0, 1, (2, 3, 32, 32, 1)), jnp.float32)  # [B, T, H, W, C]
  same = frame_ssim(frames, frames)
  assert same.shape == (2, 3)
  np.testing.assert_allclose(same, 1.0, atol=1e-5)
  scores = [
    float(frame_ssim(jnp.clip(frames + s * rng.normal(size=frames.shape), 0, 1), frames).mean())
    for s in (0.02, 0.1, 0.3)
  ]
  assert 1.0 > scores[0] > scores[1] > scores[2] > 0.0, scores


def test_mse_and_bce_on_known_values():
  targets = jnp.zeros((2, 3, 4, 4, 1)).at[:, 1].set(1.0)  # frame 1 all ones
  mse = frame_mse(jnp.full_like(targets, 0.5), targets)
  assert mse.shape == (2, 3)
  np.testing.assert_allclose(mse, 0.25)
  mse = frame_mse(targets, jnp.zeros_like(targets))
  np.testing.assert_allclose(mse, [[0.0, 1.0, 0.0]] * 2)
  bce = frame_bce(jnp.zeros_like(targets), targets)
  np.testing.assert_allclose(bce, np.log(2.0), rtol=1e-6)
  logits = jnp.asarray(np.random.default_rng(1).normal(0, 3, (1, 2, 5, 5, 1)), jnp.float32)
  soft = jnp.asarray(np.random.default_rng(2).uniform(0, 1, logits.shape), jnp.float32)
  p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
  expected = -(soft * np.log(p) + (1 - soft) * np.log(1 - p)).mean(axis=(2, 3, 4))
  np.testing.assert_allclose(frame_bce(logits, soft), expected, rtol=1e-5)
  # Saturated logits neither overflow nor lose the loss of a confident mistake.
  extreme = frame_bce(jnp.full((1, 1, 2, 2, 1), 100.0), jnp.zeros((1, 1, 2, 2, 1)))
  np.testing.assert_allclose(extreme, 100.0, rtol=1e-6)


def test_copy_last_baseline():
  static = jnp.broadcast_to(jnp.linspace(0, 1, 32 * 32).reshape(1, 1, 32, 32, 1), (2, 8, 32, 32, 1))
  metrics = copy_last_metrics(static, 3)
  assert metrics["mse"].shape == (2, 3)
  np.testing.assert_allclose(metrics["mse"], 0.0)
  np.testing.assert_allclose(metrics["ssim"], 1.0, atol=1e-5)
  # Frame t is the constant t / 10: copying frame 4 misses frame 5 + k by (k + 1) / 10.
  ramp = jnp.broadcast_to(jnp.arange(8.0)[None, :, None, None, None] / 10, (1, 8, 16, 16, 1))
  prediction = video_metrics.copy_last_prediction(ramp, 3)
  np.testing.assert_allclose(prediction[0, :, 0, 0, 0], [0.4] * 3)
  np.testing.assert_allclose(copy_last_metrics(ramp, 3)["mse"][0], [0.01, 0.04, 0.09], rtol=1e-5)


def test_gif_and_strip_are_written_and_readable(tmp_path):
  rng = np.random.default_rng(0)
  clip = rng.uniform(0, 1, (6, 16, 16, 1)).astype(np.float32)  # T = 6, every frame different
  predicted = rng.uniform(0, 1, (2, 16, 16, 1)).astype(np.float32)
  panels = video_images.prediction_panels(clip, predicted)
  assert [p.shape for p in panels] == [(6, 16, 16, 1)] * 3
  np.testing.assert_array_equal(panels[0][4:], clip[[3, 3]])  # observed holds its last frame
  np.testing.assert_array_equal(panels[1][4:], predicted)
  path = video_images.save_gif(str(tmp_path / "a" / "clip.gif"), [panels, panels], scale=2)
  with Image.open(path) as gif:
    assert gif.n_frames == 6
    # 3 panels of 16 px with 2 px borders, 2 rows; doubled.
    assert gif.size == (2 * (3 * 18 + 2), 2 * (2 * 18 + 2))
    gif.seek(5)
    last = np.asarray(gif.convert("L"))
  # The true future panel of the last GIF frame (row 0, column 2) shows the clip's last frame.
  np.testing.assert_allclose(
    last[4:36:2, 2 * 38 : 2 * 38 + 32 : 2] / 255, clip[5, ..., 0], atol=1 / 255
  )
  strip = video_images.save_strip(
    str(tmp_path / "strip.png"), video_images.prediction_strip(clip, predicted)
  )
  with Image.open(strip) as png:
    assert png.size == (6 * 18 + 2, 2 * 18 + 2)
    pixels = np.asarray(png.convert("L"))
  assert (pixels[20:36, 2:18] == 128).all()  # no prediction under the first (context) frame
  np.testing.assert_allclose(pixels[20:36, 74:90] / 255, predicted[0, ..., 0], atol=1 / 255)
  assert (tmp_path / "strip.png").stat().st_size < 20_000
