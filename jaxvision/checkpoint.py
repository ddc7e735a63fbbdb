"""Orbax checkpoints of a whole train state: periodic, resumable, preemption-safe.

One `CheckpointManager` per workdir (`<workdir>/checkpoints`). Each checkpoint holds the train
state and a JSON record (step, data position, elapsed time, and a digest of every leaf of the
state). Orbax writes to a temporary folder and renames it when complete, so a run killed mid-save
leaves the previous checkpoint intact; a checkpoint that cannot be read, whose restored state does
not match the digest written with it (bytes changed on disk, the file still readable), or whose
state is not finite is skipped for the newest good one, with a one-line warning (and deleted once
an older one restores, so that the run saves that step again). Restoring goes
against an abstract target with shardings, so a checkpoint restores onto another device count,
strategy or process count. The training loop saves only states it has checked to be finite, so
rotation never drops a good checkpoint for a bad one.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from jaxvision.config_dict import block

CHECKPOINT_DEFAULTS = dict(
  every_steps=1000,  # save every this many steps (and always at the end or on halt)
  keep=3,  # how many recent checkpoints to keep
  # A state whose norm grew more than this many times since the last save (or the start) is
  # diverging: it is not saved and the run stops, so it never rotates a good checkpoint out.
  # 0 turns the check off.
  max_norm_growth=1000.0,
)
META_ITEM, META_FILE = "meta", "metadata"  # <step>/meta/metadata: Orbax's JsonSave of the meta


def checkpoint_config(**overrides) -> ml_collections.ConfigDict:
  return block(CHECKPOINT_DEFAULTS, **overrides)


def _leaf_digest(x: jax.Array) -> jax.Array:
  """Two uint32 checksums of a leaf's bits: their sum and a position-weighted sum (a changed,
  swapped or zeroed block of values changes one or both)."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  size = x.dtype.itemsize
  if size in (2, 4, 8):
    bits = jax.lax.bitcast_convert_type(x, {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[size])
  else:
    bits = x
  flat = bits.astype(jnp.uint32).ravel()
  weights = jnp.arange(flat.size, dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
  return jnp.stack([jnp.sum(flat), jnp.sum(flat * weights)])


@jax.jit
def _digest(state) -> list:
  return [_leaf_digest(x) for x in jax.tree.leaves(state)]


def digest(state) -> list[list[int]]:
  """Per leaf (in tree order), two checksums of its bits: what a checkpoint's meta records and
  its restore verifies."""
  return [[int(v) for v in np.asarray(d)] for d in jax.device_get(_digest(state))]


@jax.jit
def all_finite(state) -> jax.Array:
  """Whether every inexact leaf of `state` is finite (a scalar bool, on device)."""
  leaves = [
    jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(state) if jnp.issubdtype(x, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


@jax.jit
def state_norm(state) -> jax.Array:
  """The L2 norm over every inexact leaf of `state` (parameters and optimizer moments alike)."""
  leaves = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x, jnp.inexact)]
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


def check(state, meta: dict) -> str | None:
  """Why a restored (state, meta) is not to be trusted, or None: a digest that does not match
  (checkpoints older than digests have none and pass) or non-finite values."""
  expected = meta.get("digest")
  if expected is not None:
    actual = digest(state)
    if actual != expected:
      paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state)]
      bad = [p for p, a, e in zip(paths, actual, expected, strict=False) if a != e]
      where = bad[0] if bad else f"{len(actual)} leaves, {len(expected)} recorded"
      return f"its state does not match the digest saved with it (first at {where})"
  if not bool(all_finite(state)):
    return "its state has non-finite values"
  return None


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

  def restore(self, abstract_state, max_step: int | None = None):
    """Restores the newest readable checkpoint onto the shardings of `abstract_state`.

    Args:
      abstract_state: pytree of `jax.ShapeDtypeStruct` (with `sharding`), e.g. from
        `jax.eval_shape`; fixes the structure, dtypes and placement of what is restored.
      max_step: restore no checkpoint after this step (members resume at their common step);
        newer ones are deleted, as unreadable ones are.

    Returns:
      (state, meta), or None when there is no checkpoint.

    Raises:
      ValueError: when checkpoints exist but none can be read into `abstract_state` (e.g. a
        workdir of another model), naming the directory.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    if max_step is not None:
      for newer in [s for s in steps if s > max_step]:
        self._manager.delete(newer)
      steps = [s for s in steps if s <= max_step]
    errors = []
    for step in steps:
      try:
        state, meta = _restore(self._manager, step, abstract_state)
      except Exception as e:  # orbax raises many types for a truncated or mismatched checkpoint
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        errors.append(f"step {step}: {type(e).__name__}: {first}")
        print(f"warning: checkpoint step {step} is unreadable ({first}); trying an older one")
        continue
      problem = check(state, meta)
      if problem is None:
        for newer in steps[: steps.index(step)]:  # unusable: they would shadow this one's saves
          self._manager.delete(newer)
        return state, meta
      errors.append(f"step {step}: {problem}")
      print(
        f"warning: checkpoint step {step} is corrupt ({problem}); trying an older one",
        flush=True,
      )
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
    meta = {**meta, "digest": digest(state)}
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
  """(step, meta) of the newest checkpoint in `directory` whose meta reads, without its state.

  Reads the JSON file itself rather than through a `CheckpointManager`: it runs on one process
  of a multi-host run at a time (e.g. when config.json is missing), and a manager's collectives
  would meet another process's different ones. Orbax renames a checkpoint's folder to its step
  only once complete, so only folders named by a number are read.

  Raises:
    FileNotFoundError: no checkpoint in `directory` has a readable meta.
  """
  steps = sorted((int(n) for n in _listdir(directory) if n.isdigit()), reverse=True)
  for step in steps:
    path = os.path.join(directory, str(step), META_ITEM, META_FILE)
    try:
      with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    except (OSError, ValueError):  # a damaged checkpoint: the next older one
      continue
    if isinstance(meta, dict):
      return step, meta
  raise FileNotFoundError(f"no checkpoint in {directory} has a readable record")


def _listdir(directory: str) -> list[str]:
  try:
    return os.listdir(directory)
  except FileNotFoundError:
    return []


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
