"""On-device augmentations: pure functions of (key, batch), run inside the jitted train step."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_shift(key: jax.Array, x: jnp.ndarray, max_shift: int) -> jnp.ndarray:
  """Translates each example by up to `max_shift` along every spatial axis, zero-filling.

  Args:
    key: PRNG key.
    x: [B, *spatial, C].
    max_shift: largest shift in either direction; 0 returns `x` unchanged.

  Returns:
    Array of x's shape and dtype.
  """
  if max_shift == 0:
    return x
  batch, spatial = x.shape[0], x.shape[1:-1]
  shifts = jax.random.randint(key, (batch, len(spatial)), 0, 2 * max_shift + 1)  # [B, D]
  pad = [(0, 0)] + [(max_shift, max_shift)] * len(spatial) + [(0, 0)]
  padded = jnp.pad(x, pad)

  def crop(example, offset):  # example [*spatial + 2 * max_shift, C]
    return jax.lax.dynamic_slice(example, (*offset, 0), (*spatial, example.shape[-1]))

  return jax.vmap(crop)(padded, shifts)
