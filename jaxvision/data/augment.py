"""On-device augmentations: pure functions of (key, batch), run inside the jitted train step."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvision import parallel


def random_shift(
  key: jax.Array, x: jnp.ndarray, max_shift: int, axis_name: str | None = None
) -> jnp.ndarray:
  """Translates each example by up to `max_shift` along every spatial axis, zero-filling.

  Args:
    key: PRNG key.
    x: [B, *spatial, C].
    max_shift: largest shift in either direction; 0 returns `x` unchanged.
    axis_name: under pmap, the device axis: shifts are drawn for the global batch and this
      device's rows taken, so each example is shifted alike under every strategy.

  Returns:
    Array of x's shape and dtype.
  """
  if max_shift == 0:
    return x
  batch, spatial = x.shape[0], x.shape[1:-1]
  global_batch = parallel.global_batch_size(batch, axis_name)
  shifts = jax.random.randint(key, (global_batch, len(spatial)), 0, 2 * max_shift + 1)
  shifts = parallel.local_rows(shifts, axis_name)  # [B, D]
  pad = [(0, 0)] + [(max_shift, max_shift)] * len(spatial) + [(0, 0)]
  padded = jnp.pad(x, pad)

  def crop(example, offset):  # example [*spatial + 2 * max_shift, C]
    return jax.lax.dynamic_slice(example, (*offset, 0), (*spatial, example.shape[-1]))

  return jax.vmap(crop)(padded, shifts)
