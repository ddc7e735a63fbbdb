"""Orbax checkpoints of a whole train state: periodic, resumable, preemption-safe.

One `CheckpointManager` per workdir (`<workdir>/checkpoints`). Each checkpoint holds the train
state and a JSON record (step, data position, elapsed time). Orbax writes to a temporary folder and
renames it when complete, so a run killed mid-save leaves the previous checkpoint intact; a
checkpoint that cannot be read (corrupted on disk) is skipped for the newest readable one, with a
one-line warning. Restoring goes against an abstract target with shardings, so a checkpoint
restores onto another device count, strategy or process count. The training loop saves only
states it has checked to be finite, so rotation never drops a good checkpoint for a bad one.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from jaxvision.config_dict import block

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
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, abstract_state):
    """Restores the newest readable checkpoint onto the shardings of `abstract_state`.

    Args:
      abstract_state: pytree of `jax.ShapeDtypeStruct` (with `sharding`), e.g. from
        `jax.eval_shape`; fixes the structure, dtypes and placement of what is restored.

    Returns:
      (state, meta), or None when there is no checkpoint.

    Raises:
      ValueError: when checkpoints exist but none can be read into `abstract_state` (e.g. a
        workdir of another model), naming the directory.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    errors = []
    for step in steps:
      try:
        return _restore(self._manager, step, abstract_state)
      except Exception as e:  # orbax raises many types for a truncated or mismatched checkpoint
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        errors.append(f"step {step}: {type(e).__name__}: {first}")
        print(f"warning: checkpoint step {step} is unreadable ({first}); trying an older one")
    if steps:
      raise ValueError(
        f"no checkpoint in {self.directory} fits this run ({'; '.join(errors)}); use another "
        "--workdir or remove that one"
      )
    return None

  def save(self, step: int, state, meta: dict) -> bool:
    """Saves (state, meta) as checkpoint `step` (the loop decides when); returns whether it
    saved (False when `step` is already saved). Writes finish before this returns, so a failure
    (a full disk) surfaces here, at the step that caused it."""
    if self._manager.latest_step() == step:
      return False  # already saved (e.g. the last step is also on the interval)
    saved = self._manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
      force=True,
    )
    self._manager.wait_until_finished()
    return saved

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


def read_meta(directory: str) -> tuple[int, dict]:
  """(step, meta) of the newest checkpoint in `directory` whose meta reads, without its state."""
  manager = ocp.CheckpointManager(
    os.path.abspath(directory), item_handlers={"meta": ocp.JsonCheckpointHandler()}
  )
  try:
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
      except Exception:  # a damaged checkpoint: the next older one
        continue
      return step, meta
  finally:
    manager.close()
  raise FileNotFoundError(f"no readable checkpoint in {os.path.abspath(directory)}")


def restore_latest(directory: str):
  """Reads the latest checkpoint in `directory` without a target (for sampling, features).

  Returns:
    (state as nested dicts of arrays, meta).
  """
  manager = ocp.CheckpointManager(
    os.path.abspath(directory),
    item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
  )
  try:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {os.path.abspath(directory)}")
    # A target of the saved shapes on this process's first device, so that a checkpoint written
    # on any topology (other device or process counts) restores here.
    metadata = manager.item_metadata(step)["state"]
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      metadata.tree if hasattr(metadata, "tree") else metadata,
    )
    return _restore(manager, step, target)
  finally:
    manager.close()
