"""Pieces every trainer shares: the train state, run bookkeeping and the results file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.training import train_state

from jaxvision import checkpoint, metrics


class TrainState(train_state.TrainState):
  """Params, optimizer state and step (flax's), plus batch-norm statistics (may be empty)."""

  batch_stats: Any = flax.struct.field(default_factory=dict)

  @classmethod
  def create(cls, *, apply_fn, params, tx, **kwargs):
    # flax stores step=0 as a Python int: the first jitted step would then trace with a weak
    # scalar and the second with an int32 array, compiling twice. Start with the array.
    state = super().create(apply_fn=apply_fn, params=params, tx=tx, **kwargs)
    return state.replace(step=jnp.zeros((), jnp.int32))


def num_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` used: its config.json, else its results.json's copy."""
  for name, key in (("config.json", None), ("results.json", "config")):
    path = os.path.join(workdir, name)
    if os.path.isfile(path):
      with open(path, encoding="utf-8") as f:
        record = json.load(f)
      return ml_collections.ConfigDict(record[key] if key else record)
  raise FileNotFoundError(f"no config.json or results.json in {workdir!r}: not a jaxvision workdir")


def restore_latest(workdir: str) -> tuple[dict, dict]:
  """The latest checkpoint in `workdir`: (train state as nested dicts of arrays, its meta)."""
  return checkpoint.restore_latest(os.path.join(workdir, "checkpoints"))


def git_commit() -> str | None:
  """The commit of the jaxvision checkout this runs from ("-dirty" if modified), if any."""
  here = os.path.dirname(__file__)
  try:
    run = lambda *args: subprocess.run(
      ["git", *args], cwd=here, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()
    commit = run("rev-parse", "HEAD")
    dirty = run("status", "--porcelain", "--untracked-files=no")
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ("-dirty" if dirty else "")


def write_results(
  workdir: str, config: ml_collections.ConfigDict, results: dict, commit: str | None
) -> str:
  """Writes `<workdir>/results.json`: final metrics, the resolved config and provenance."""
  path = os.path.join(workdir, "results.json")
  record = {
    **results,
    "config": json.loads(config.to_json_best_effort()),
    "jax_version": jax.__version__,
    "backend": jax.default_backend(),
    "devices": jax.device_count(),
    "git_commit": commit,  # taken when the run started: the code that ran
    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
  }
  if jax.process_index() == 0:
    with open(path, "w", encoding="utf-8") as f:
      json.dump(record, f, indent=2)
  return path


def steps_this_call(step: int, steps_per_call: int, intervals, last_step: int) -> int:
  """How many steps the next compiled call runs: `steps_per_call` when no logging, eval or
  checkpoint step falls strictly inside that span, else 1 (so events land where they would in a
  per-step loop and only two step functions are ever compiled)."""
  if steps_per_call <= 1:
    return 1
  next_event = min([last_step] + [(step // n + 1) * n for n in intervals])
  return steps_per_call if step + steps_per_call <= next_event else 1


class Run:
  """The bookkeeping of one training run in a workdir: checkpoints, writers, elapsed time."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, meta: dict | None = None):
    """`meta`: facts saved with every checkpoint beside the step (e.g. a generator's shape)."""
    os.makedirs(workdir, exist_ok=True)
    self._meta = dict(meta or {})
    self.git_commit = git_commit()  # the code this run started with, not what is there at its end
    self.preempted = False
    self._previous_handler = None
    try:  # SIGTERM (what schedulers send before a kill): checkpoint at the next step and stop
      self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
    except ValueError:  # not the main thread: leave signals to the caller
      pass
    self.workdir = workdir
    self.total_steps = config.num_train_steps
    self.checkpointer = checkpoint.Checkpointer(
      os.path.join(workdir, "checkpoints"),
      every_steps=config.checkpoint.every_steps,
      keep=config.checkpoint.keep,
    )
    self.writer = metrics.create_writer(workdir, self.total_steps)
    self._start = time.perf_counter()
    self._elapsed_before = 0.0  # seconds spent by earlier runs in this workdir
    if jax.process_index() == 0:  # the workdir describes itself (jaxvision.sample reads it)
      with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
        f.write(config.to_json_best_effort(indent=2))

  def restore_or_create(self, create_fn, sharding):
    """Restores the latest checkpoint, else calls `create_fn()`; returns the placed state."""
    abstract = checkpoint.abstract_like(jax.eval_shape(create_fn), sharding)
    restored = self.checkpointer.restore(abstract)
    if restored is None:
      return jax.device_put(create_fn(), sharding)
    state, meta = restored
    self._elapsed_before = float(meta.get("elapsed_s", 0.0))
    print(f"Resumed from {self.workdir}/checkpoints at step {meta['step']}", flush=True)
    return state

  @property
  def elapsed(self) -> float:
    return self._elapsed_before + time.perf_counter() - self._start

  def save(self, step: int, state, *, force: bool = False) -> None:
    # Batches are a pure function of (seed, step), so the data position is the step.
    meta = {**self._meta, "step": step, "data_position": step, "elapsed_s": self.elapsed}
    self.checkpointer.save(step, state, meta, force=force)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self.preempted = True

  def close(self) -> None:
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)
      self._previous_handler = None
    self.checkpointer.close()
    self.writer.close()

  def save_and_maybe_stop(self, step: int, state, last_step: int) -> bool:
    """Saves on the interval, at `last_step`, or at once when preempted; True means stop now."""
    self.save(step, state, force=step == last_step or self.preempted)
    if self.preempted and step < last_step:
      print(f"SIGTERM: saved a checkpoint at step {step}.", flush=True)
      return True
    return False

  def halt(self, step: int) -> dict:
    """Ends a run stopped before its last step (its checkpoint is saved); returns {}."""
    self.close()
    print(f"Halted at step {step}; rerun the same command to continue.", flush=True)
    return {}

  def finish(self, config: ml_collections.ConfigDict, final: dict, results: dict) -> dict:
    """Logs the final eval metrics, closes, and writes results.json; returns `final`.

    Args:
      config: the run's config.
      final: the final eval metrics.
      results: what else results.json should hold (invocation, data set, parameter counts).
    """
    self.writer.write(config.num_train_steps, final)
    elapsed = self.elapsed
    self.close()
    record = {
      **results,
      "num_train_steps": config.num_train_steps,
      "seed": config.seed,
      "wall_time_s": round(elapsed, 2),
      "final": final,
    }
    write_results(self.workdir, config, record, commit=self.git_commit)
    return final
