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
  batch, spatial = x.shape[0], x.shape[1 + time_axes : -1]
  if not spatial:
    raise ValueError(f"random_shift: inputs {x.shape} have no spatial axis after {time_axes=}")
  global_batch = parallel.global_batch_size(batch, axis_name)
  shifts = jax.random.randint(key, (global_batch, len(spatial)), 0, 2 * max_shift + 1)
  shifts = parallel.local_rows(shifts, axis_name)  # [B, D]
  fixed = x.shape[1 : 1 + time_axes]
  pad = [(0, 0)] * (1 + time_axes) + [(max_shift, max_shift)] * len(spatial) + [(0, 0)]
  padded = jnp.pad(x, pad)

  def crop(example, offset):  # example [*time, *spatial + 2 * max_shift, C]
    start = (0,) * time_axes + (*offset, 0)
    return jax.lax.dynamic_slice(example, start, (*fixed, *spatial, example.shape[-1]))

  return jax.vmap(crop)(padded, shifts)
