"""Magnitude pruning during training, as an Optax transformation (Zhu & Gupta 2017).

`magnitude_pruning(...)` goes last in an optimizer chain. Every `every` steps between `begin`
and `end` it sets the smallest-magnitude weights to exactly zero, up to the sparsity that the
gradual schedule gives at that step,

    s(t) = s_final * (1 - (1 - (t - begin) / (end - begin)) ** 3),

and after every step it keeps the pruned ones at zero (the update is replaced by the one that
lands on the masked parameters). Only kernels are pruned (leaves with two or more axes: conv and
dense weights); biases and normalisation scales are kept. The masks live in the optimizer state,
so they are part of the train state and its checkpoint, and a resumed run prunes the same
weights. With `per_layer`, each kernel reaches the sparsity on its own; otherwise one threshold
over all kernels (global magnitude pruning) decides.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class PruningState(NamedTuple):
  count: jax.Array  # steps done (int32)
  masks: Any  # like the params: bool, True where a weight is kept (a scalar True if not pruned)


def prunable(leaf) -> bool:
  """Kernels (two or more axes) are pruned; biases, scales and other vectors are not."""
  return jnp.ndim(leaf) >= 2


def sparsity_at(step, final: float, begin: int, end: int) -> jax.Array:
  """The gradual schedule's sparsity after `step` steps: 0 before `begin`, `final` from `end`."""
  progress = jnp.clip((step - begin) / max(end - begin, 1), 0.0, 1.0)
  return final * (1.0 - (1.0 - progress) ** 3)


def _kth_smallest(values: jax.Array, fraction) -> jax.Array:
  """The magnitude at or below which `fraction` of `values` lie (-1 when fraction is 0)."""
  k = jnp.floor(fraction * values.size).astype(jnp.int32)
  ordered = jnp.sort(values)
  return jnp.where(k > 0, ordered[jnp.maximum(k - 1, 0)], -1.0)


def masks_for(params, sparsity, per_layer: bool):
  """Masks keeping the largest-magnitude kernel weights at `sparsity` (ties at the threshold
  are pruned too)."""
  leaves, treedef = jax.tree.flatten(params)
  kernels = [jnp.abs(p) for p in leaves if prunable(p)]
  if not kernels:
    return jax.tree.unflatten(treedef, [jnp.ones((), bool) for _ in leaves])
  if not per_layer:
    threshold = _kth_smallest(jnp.concatenate([k.ravel() for k in kernels]), sparsity)
  masks = []
  for p in leaves:
    if not prunable(p):
      masks.append(jnp.ones((), bool))
      continue
    cut = _kth_smallest(jnp.abs(p).ravel(), sparsity) if per_layer else threshold
    masks.append(jnp.abs(p) > cut)
  return jax.tree.unflatten(treedef, masks)


def magnitude_pruning(
  sparsity: float, begin: int, end: int, every: int, per_layer: bool = False
) -> optax.GradientTransformation:
  """The pruning transformation (see the module docstring).

  Args:
    sparsity: the final fraction of kernel weights at zero, in [0, 1).
    begin: the step from which weights are pruned.
    end: the step at which the final sparsity is reached (>= begin).
    every: steps between two mask updates.
    per_layer: each kernel to the sparsity, instead of one global threshold.

  Returns:
    A GradientTransformation whose updates need the params (`tx.update(g, state, params)`).
  """
  if not 0.0 <= sparsity < 1.0:
    raise ValueError(f"sparsity={sparsity} must be in [0, 1)")
  if begin < 0 or end < begin or every < 1:
    raise ValueError(
      f"pruning steps begin={begin}, end={end}, every={every}: need 0 <= begin <= end, every >= 1"
    )

  def init(params):
    masks = jax.tree.map(lambda p: jnp.ones(jnp.shape(p) if prunable(p) else (), bool), params)
    return PruningState(jnp.zeros((), jnp.int32), masks)

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("magnitude_pruning needs the params: tx.update(grads, state, params)")
    count = state.count + 1
    new = optax.apply_updates(params, updates)
    due = (count >= begin) & (count <= end) & ((count - begin) % every == 0)
    masks = jax.lax.cond(
      due,
      lambda: masks_for(
        jax.tree.map(lambda p, m: p * m, new, state.masks),
        sparsity_at(count, sparsity, begin, end),
        per_layer,
      ),
      lambda: state.masks,
    )
    pruned = jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), new, masks)
    updates = jax.tree.map(lambda q, p: q - p, pruned, params)
    return updates, PruningState(count, masks)

  return optax.GradientTransformation(init, update)


def nonzeros(params) -> int:
  """The number of non-zero parameters."""
  return int(sum(jnp.count_nonzero(p) for p in jax.tree.leaves(params)))
