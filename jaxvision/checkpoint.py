"""Orbax checkpoints of a whole train state: periodic, resumable, preemption-safe.

One `CheckpointManager` per workdir (`<workdir>/checkpoints`). Each checkpoint holds the train
state and a JSON record (step, data position, elapsed time). Orbax writes to a temporary folder and
renames it when complete, so a run killed mid-save leaves the previous checkpoint intact. Restoring
goes against an abstract target with shardings, so a checkpoint restores onto another device count.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from jaxvision.config_lib import block

CHECKPOINT_DEFAULTS = dict(
  every_steps=1000,  # save every this many steps (and always at the end or on halt)
  keep=3,  # how many recent checkpoints to keep
)


def checkpoint_config(**overrides) -> ml_collections.ConfigDict:
  return block(CHECKPOINT_DEFAULTS, **overrides)


class Checkpointer:
  """Saves and restores (state, meta) pairs in one directory."""

  def __init__(self, directory: str, *, every_steps: int, keep: int):
    if every_steps <= 0 or keep <= 0:
      raise ValueError(f"checkpoint every_steps={every_steps} and keep={keep} must be positive")
    self._manager = ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
    )
    self.every_steps = every_steps

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, abstract_state, step: int | None = None):
    """Restores the latest (or given) checkpoint onto the shardings of `abstract_state`.

    Args:
      abstract_state: pytree of `jax.ShapeDtypeStruct` (with `sharding`), e.g. from
        `jax.eval_shape`; fixes the structure, dtypes and placement of what is restored.
      step: which checkpoint; the latest when None.

    Returns:
      (state, meta), or None when there is no checkpoint.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    return _restore(self._manager, step, abstract_state)

  def save(self, step: int, state, meta: dict, *, force: bool = False) -> bool:
    """Saves when `step` is a multiple of `every_steps` (or `force`); returns whether it saved."""
    if not force and step % self.every_steps:
      return False
    if self._manager.latest_step() == step:
      return False  # already saved (e.g. the last step is also on the interval)
    return self._manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
      force=True,
    )

  def close(self) -> None:
    """Waits for pending asynchronous saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()


def _restore(manager: ocp.CheckpointManager, step: int, abstract_state):
  """(state, meta) of checkpoint `step`; state as nested dicts of arrays when no target."""
  restored = manager.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
    ),
  )
  return restored.state, restored.meta


def restore_latest(directory: str):
  """Reads the latest checkpoint in `directory` without a target (for sampling, features).

  Returns:
    (state as nested dicts of arrays, meta).
  """
  manager = ocp.CheckpointManager(os.path.abspath(directory))
  try:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {os.path.abspath(directory)}")
    return _restore(manager, step, None)
  finally:
    manager.close()


def abstract_like(tree, sharding):
  """`jax.ShapeDtypeStruct`s of `tree` (arrays or structs) placed with `sharding`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
