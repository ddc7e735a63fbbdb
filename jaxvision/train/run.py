"""One training run in its workdir: the config check, checkpoints, elapsed time, results.json.

The file layout of a workdir is `jaxvision.workdir`'s; this module writes it during training.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxvision import checkpoint
from jaxvision import workdir as workdir_lib
from jaxvision.evaluators import common as evaluators_lib
from jaxvision.train.window import Window


@dataclasses.dataclass(frozen=True)
class Options:
  """How this invocation runs (flags, not experiment config)."""

  halt_after_steps: int | None = None  # stop with a checkpoint once this many steps are done
  allow_config_change: bool = False  # resume a workdir whose config differs
  invocation: dict = dataclasses.field(default_factory=dict)  # command, config file, overrides


def _all_finite(tree) -> jax.Array:
  leaves = [
    jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


class Run:
  """One training run in a workdir: its config check, checkpoints and elapsed time."""

  def __init__(
    self, config, workdir: str, strategy, options: Options | None = None, meta: dict | None = None
  ):
    self.config, self.workdir, self.strategy = config, workdir, strategy
    self.options = options or Options()
    self._meta = dict(meta or {})
    self._check_config_unchanged()
    os.makedirs(workdir, exist_ok=True)
    self.git_commit = workdir_lib.git_commit()  # the code this run started with, not at its end
    self.checkpointer = checkpoint.Checkpointer(
      workdir_lib.checkpoints_dir(workdir),
      every_steps=config.checkpoint.every_steps,
      keep=config.checkpoint.keep,
    )
    self._start = time.perf_counter()
    self._elapsed_before = 0.0  # seconds spent by earlier runs in this workdir
    self.saved_window = None
    self._finite = jax.jit(_all_finite)
    if jax.process_index() == 0:  # the workdir describes itself (load_run reads it)
      workdir_lib.write_json(
        workdir_lib.config_path(workdir), json.loads(config.to_json_best_effort())
      )

  def _check_config_unchanged(self) -> None:
    path = workdir_lib.config_path(self.workdir)
    if not os.path.isfile(path) or self.options.allow_config_change:
      return
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
    changed = workdir_lib.config_changes(old, json.loads(self.config.to_json_best_effort()))
    if changed:
      raise ValueError(
        f"workdir {self.workdir} was run with another config ({'; '.join(changed)}); use a new "
        "--workdir, or --allow_config_change to continue this run with the new values"
      )

  def restore_or_create(self, create_fn: Callable[[], Any]):
    """Restores the newest readable checkpoint, else calls `create_fn()`; returns the placed
    state. `create_fn` makes the global (unplaced) state; it is only traced for the restore."""
    abstract = self.strategy.abstract_state(jax.eval_shape(create_fn))
    restored = self.checkpointer.restore(abstract)
    if restored is None:
      return self.strategy.place_state(create_fn())
    state, meta = restored
    self._elapsed_before = float(meta.get("elapsed_s", 0.0))
    self.saved_window = meta.get("log_window")
    print(f"Resumed from {self.workdir}/checkpoints at step {meta['step']}", flush=True)
    return self.strategy.place_state(state)

  @property
  def elapsed(self) -> float:
    return self._elapsed_before + time.perf_counter() - self._start

  def save(self, step: int, state, window: Window) -> None:
    """Saves a checkpoint of `state` after checking the losses since the last log and the state
    itself are finite. Batches are a pure function of (seed, step): the data position is the
    step."""
    host_window = window.fetch()  # raises on a non-finite metric
    global_state = self.strategy.global_state(state)
    if not bool(self._finite(global_state)):
      raise FloatingPointError(f"the train state has non-finite values at step {step}")
    meta = {
      **self._meta,
      "step": step,
      "data_position": step,
      "elapsed_s": self.elapsed,
      "log_window": host_window,
    }
    try:
      self.checkpointer.save(step, global_state, meta)
    except Exception as e:  # disk full, permissions (orbax raises several types): say what is safe
      reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
      raise OSError(
        f"saving the checkpoint of step {step} failed ({reason}); the newest complete "
        f"checkpoint is step {self.checkpointer.latest_step()}"
      ) from e

  def last_good(self) -> str:
    """What a stopped run leaves to resume from, for its error message."""
    latest = self.checkpointer.latest_step()
    if latest is None:
      return "no checkpoint was saved before it"
    return f"nothing after it was saved: the newest checkpoint is step {latest}"

  def close(self) -> None:
    self.checkpointer.close()


def truncate_log(path: str, step: int) -> None:
  """Drops rows after `step` (written after the checkpoint a crashed run resumes from)."""
  if jax.process_index() != 0 or not os.path.isfile(path):
    return
  with open(path, encoding="utf-8") as f:
    rows = f.readlines()
  keep = [r for r in rows if r.strip() and json.loads(r).get("step", 0) <= step]
  if len(keep) != len(rows):
    with open(path, "w", encoding="utf-8") as f:
      f.writelines(keep)


def write_results(run: Run, final: dict, evaluators, extra: dict) -> None:
  """`<workdir>/results.json`: final metrics, the metrics declared, the config and provenance."""
  if jax.process_index() != 0:
    return
  config = run.config
  record = {
    **run.options.invocation,
    **extra,
    "num_train_steps": config.num_train_steps,
    "seed": config.seed,
    "wall_time_s": round(run.elapsed, 2),
    "final": final,
    "metrics": evaluators_lib.declared(evaluators),
    "config": json.loads(config.to_json_best_effort()),
    "jax_version": jax.__version__,
    "backend": jax.default_backend(),
    "devices": jax.device_count(),
    "processes": jax.process_count(),
    "machine": {"cpu": workdir_lib.cpu_model(), "cores": os.cpu_count()},
    "strategy": run.strategy.name,
    "git_commit": run.git_commit,  # taken when the run started: the code that ran
    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
  }
  workdir_lib.write_json(workdir_lib.results_path(run.workdir), record)
