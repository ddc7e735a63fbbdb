"""Layers shared by model families, written to lower well on every XLA backend."""

from __future__ import annotations

import jax.numpy as jnp


def max_pool(x: jnp.ndarray, window: int) -> jnp.ndarray:
  """Non-overlapping max pooling (window = stride, VALID) over every spatial axis.

  Same values as `nn.max_pool(x, (window,) * d, strides=(window,) * d)` but written as a crop, a
  reshape and a max. XLA:CPU lowers the gradient of `reduce_window` to select-and-scatter, which
  took ~55 of the 82 ms of a CNN-A train step; the gradient of this form is a cheap elementwise
  select. (Where several inputs tie for a window's maximum, the gradient is shared among them
  instead of going to the first; after a ReLU, ties are exact zeros whose gradient is zero anyway.)

  Args:
    x: [B, *spatial, C].
    window: pooling window and stride along each spatial axis.

  Returns:
    [B, *(s // window for s in spatial), C].
  """
  if window == 1:
    return x
  spatial = x.shape[1:-1]
  out = tuple(s // window for s in spatial)
  if any(o == 0 for o in out):
    raise ValueError(f"cannot pool spatial shape {spatial} with window {window}")
  x = x[(slice(None), *(slice(0, o * window) for o in out), slice(None))]  # crop like VALID
  split = [x.shape[0]]
  for o in out:
    split += [o, window]
  x = x.reshape(*split, x.shape[-1])  # [B, o1, w, o2, w, ..., C]
  return x.max(axis=tuple(2 + 2 * i for i in range(len(out))))
