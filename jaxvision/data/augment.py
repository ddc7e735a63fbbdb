"""On-device augmentations: pure functions of (key, batch), run inside the jitted train step."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvision import parallel


def random_shift(
  key: jax.Array,
  x: jnp.ndarray,
  max_shift: int,
  axis_name: str | None = None,
  time_axes: int = 0,
) -> jnp.ndarray:
  """Translates each example by up to `max_shift` along every spatial axis, zero-filling.

  Args:
    key: PRNG key.
    x: [B, *time, *spatial, C].
    max_shift: largest shift in either direction; 0 returns `x` unchanged.
    axis_name: under pmap, the device axis: shifts are drawn for the global batch and this
      device's rows taken, so each example is shifted alike under every strategy.
    time_axes: how many axes after the batch axis are not spatial (1 for a clip's frames): each
      example moves by one shift in all of them. A 1-D signal [B, L, C] has none: L is shifted.

  Returns:
    Array of x's shape and dtype.
  """
  if max_shift == 0:
    return x
  spatial = x.shape[1 + time_axes : -1]
  if not spatial:
    raise ValueError(f"random_shift: inputs {x.shape} have no spatial axis after {time_axes=}")
  shifts = _draw_shifts(key, x.shape[0], len(spatial), max_shift, axis_name)
  return _shift(x, shifts, max_shift, time_axes)


def _draw_shifts(key, batch: int, dims: int, max_shift: int, axis_name) -> jnp.ndarray:
  """Crop offsets [B, dims] in [0, 2 * max_shift] of this device's rows, drawn for the global
  batch (so every strategy and device count shifts each example alike)."""
  global_batch = parallel.global_batch_size(batch, axis_name)
  shifts = jax.random.randint(key, (global_batch, dims), 0, 2 * max_shift + 1)
  return parallel.local_rows(shifts, axis_name)


def _shift(x: jnp.ndarray, shifts: jnp.ndarray, max_shift: int, time_axes: int) -> jnp.ndarray:
  """`x` [B, *time, *spatial, C] zero-padded by `max_shift` and cropped at `shifts` [B, D]: each
  example's content moves by `max_shift - shifts` pixels along each spatial axis."""
  spatial = x.shape[1 + time_axes : -1]
  fixed = x.shape[1 : 1 + time_axes]
  pad = [(0, 0)] * (1 + time_axes) + [(max_shift, max_shift)] * len(spatial) + [(0, 0)]
  padded = jnp.pad(x, pad)

  def crop(example, offset):  # example [*time, *spatial + 2 * max_shift, C]
    start = (0,) * time_axes + (*offset, 0)
    return jax.lax.dynamic_slice(example, start, (*fixed, *spatial, example.shape[-1]))

  return jax.vmap(crop)(padded, shifts)


def random_affine(
  key: jax.Array,
  x: jnp.ndarray,
  rotate: float = 0.0,
  scale: float = 0.0,
  shear: float = 0.0,
  axis_name: str | None = None,
) -> jnp.ndarray:
  """A random rotation, isotropic scaling and shear of each image about its centre (bilinear,
  edges extended: the border of a digit image is background whatever the normalisation).

  Args:
    key: PRNG key.
    x: images [B, H, W, C], or [B, H, W] (one channel; e.g. an image read as a sequence of rows).
    rotate: largest rotation in degrees, either way.
    scale: largest relative change of size (0.1: a factor in [0.9, 1.1]).
    shear: largest shear angle in degrees, either way.
    axis_name: under pmap, the device axis (parameters are drawn for the global batch, as in
      `random_shift`).

  Returns:
    Array of x's shape and dtype; `x` itself when every range is 0.
  """
  if not (rotate or scale or shear):
    return x
  if x.ndim == 3:
    return random_affine(key, x[..., None], rotate, scale, shear, axis_name)[..., 0]
  if x.ndim != 4:
    raise ValueError(f"random_affine: expected images [B, H, W(, C)], got {x.shape}")
  batch, height, width, channels = x.shape
  limits = jnp.array([rotate * jnp.pi / 180, scale, shear * jnp.pi / 180])
  draws = jax.random.uniform(key, (parallel.global_batch_size(batch, axis_name), 3), minval=-1)
  params = parallel.local_rows(draws * limits, axis_name)  # [B, 3]: angle, scale - 1, shear
  centre = jnp.array([(height - 1) / 2, (width - 1) / 2])[:, None]
  grid = jnp.stack(jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij"))
  grid = grid.reshape(2, -1) - centre  # [2, H * W] output coordinates about the centre

  def warp(image, p):  # image [H, W, C]
    angle, size, tangent = p[0], 1 + p[1], jnp.tan(p[2])
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    # forward map: size * rotation @ [[1, tan], [0, 1]]; each output pixel reads its inverse
    forward = size * jnp.array([[cos, cos * tangent - sin], [sin, sin * tangent + cos]])
    source = jnp.linalg.inv(forward) @ grid + centre  # [2, H * W]
    read = lambda plane: jax.scipy.ndimage.map_coordinates(plane, source, order=1, mode="nearest")
    return jnp.stack([read(image[..., c]) for c in range(channels)], -1).reshape(image.shape)

  return jax.vmap(warp)(x, params).astype(x.dtype)


def shift_scene(key: jax.Array, batch: dict, max_shift: int, axis_name: str | None = None) -> dict:
  """Translates each scene of a `jaxvision.data.scenes` batch, its class map and its boxes alike.

  Args:
    key: PRNG key.
    batch: {"inputs": [B, (T,) S, S, C], "targets": class maps [B, (T,) S, S], and optionally
      "boxes": [B, (T,) M, 4] (x0, y0, x1, y1) with "labels": [B, M], ...}.
    max_shift: largest shift in either direction along each axis; 0 returns `batch` unchanged.
    axis_name: under pmap, the device axis (shifts are drawn for the global batch, as in
      `random_shift`).

  Returns:
    The batch with inputs and class maps shifted (zero, i.e. background, filled), boxes moved with
    them and clipped to the canvas, and the labels of boxes moved wholly off the canvas set to -1
    (their boxes zeroed). Other keys are unchanged.
  """
  if max_shift == 0:
    return batch
  inputs, classes = batch["inputs"], batch["targets"]
  time_axes = inputs.ndim - 4
  shifts = _draw_shifts(key, inputs.shape[0], 2, max_shift, axis_name)  # [B, 2] (rows, cols)
  inputs = _shift(inputs, shifts, max_shift, time_axes)
  classes = _shift(classes[..., None], shifts, max_shift, time_axes)[..., 0]
  if "boxes" not in batch:  # a segmentation batch: pixels and class maps only
    return {**batch, "inputs": inputs, "targets": classes}
  boxes = batch["boxes"]
  dy, dx = (max_shift - shifts[:, 0]), (max_shift - shifts[:, 1])  # [B]
  move = jnp.stack([dx, dy, dx, dy], -1).astype(boxes.dtype)  # [B, 4]
  move = move.reshape(move.shape[0], *(1,) * (boxes.ndim - 2), 4)
  size = jnp.array([inputs.shape[-2], inputs.shape[-3]] * 2, boxes.dtype)  # (W, H, W, H)
  moved = jnp.clip(boxes + move, 0, size)
  real = batch["labels"] >= 0  # [B, M]
  on_canvas = (moved[..., 2] > moved[..., 0]) & (moved[..., 3] > moved[..., 1])  # [B, (T,) M]
  # A digit of a clip stays while it is on the canvas in any frame (its box is zero in the others).
  keep = real & (on_canvas.any(axis=1) if time_axes else on_canvas)  # [B, M]
  keep_boxes = (keep[:, None] if time_axes else keep) & on_canvas
  return {
    **batch,
    "inputs": inputs,
    "targets": classes,
    "boxes": jnp.where(keep_boxes[..., None], moved, 0.0),
    "labels": jnp.where(keep, batch["labels"], -1),
    "num_objects": keep.sum(-1).astype(jnp.int32),
  }
