"""One training run in its workdir: the config check, checkpoints, elapsed time, results.json.

The file layout of a workdir is `jaxvision.workdir`'s; this module writes it during training.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax

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


class SaveError(OSError):
  """A checkpoint could not be written; the message names the newest complete one."""


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
    self.startup_s = None  # process start to this invocation's first step done (`loop.train`)
    self.saved_window = None
    self._reference_norm = (float("inf"), 0)  # (norm, step) of the state last saved or restored
    self._save_failed = False
    if jax.process_index() == 0:  # the workdir describes itself (load_run reads it)
      workdir_lib.write_json(
        workdir_lib.config_path(workdir), json.loads(config.to_json_best_effort())
      )

  def _recorded_config(self) -> dict | None:
    """The config this workdir was run with: its config.json, else (missing or damaged) the copy
    in its newest checkpoint, which is the run's identity; None for a new workdir."""
    path = workdir_lib.config_path(self.workdir)
    damage = None
    if os.path.isfile(path):
      try:
        with open(path, encoding="utf-8") as f:
          return json.load(f)
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        damage = f"{path} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:80]})"
    directory = workdir_lib.checkpoints_dir(self.workdir)
    meta = None
    if os.path.isdir(directory):
      try:
        step, meta = checkpoint.read_meta(directory)
      except FileNotFoundError:
        meta = None
    if meta is not None and isinstance(meta.get("config"), dict):
      print(
        f"{damage or f'{path} is missing'}: the run's config is taken from its checkpoint of "
        f"step {step} (config.json is written again)",
        flush=True,
      )
      return meta["config"]
    if damage:
      raise ValueError(
        f"{damage} and no checkpoint records the config: restore the file, or delete it (and the "
        "checkpoints) to start this workdir over"
      )
    return None

  def _check_config_unchanged(self) -> None:
    old = self._recorded_config()
    if old is None or self.options.allow_config_change:
      return
    changed = workdir_lib.config_changes(old, json.loads(self.config.to_json_best_effort()))
    if changed:
      raise ValueError(
        f"workdir {self.workdir} was run with another config ({'; '.join(changed)}); use a new "
        "--workdir, or --allow_config_change to continue this run with the new values"
      )

  def restore_or_create(
    self, create_fn: Callable[[], Any], *, place: bool = True, max_step: int | None = None
  ):
    """Restores the newest readable checkpoint (none after `max_step`), else calls
    `create_fn()`; returns the state, placed by the strategy unless `place` is False (a member's
    global state, stacked with the others' before placing). `create_fn` makes the global
    (unplaced) state; it is only traced for the restore."""
    abstract = self.strategy.abstract_state(jax.eval_shape(create_fn))
    restored = self.checkpointer.restore(abstract, max_step)
    placed = self.strategy.place_state if place else (lambda state: state)
    if restored is None:
      state = create_fn()
      self._reference_norm = (float(checkpoint.state_norm(state)), 0)
      return placed(state)
    state, meta = restored
    self._reference_norm = (float(checkpoint.state_norm(state)), int(meta["step"]))
    self._elapsed_before = float(meta.get("elapsed_s", 0.0))
    self.saved_window = meta.get("log_window")
    print(f"Resumed from {self.workdir}/checkpoints at step {meta['step']}", flush=True)
    return placed(state)

  @property
  def elapsed(self) -> float:
    return self._elapsed_before + time.perf_counter() - self._start

  def save(self, step: int, state, window: Window) -> None:
    """Saves a checkpoint of `state` after checking the losses since the last log and the state
    itself are finite. Batches are a pure function of (seed, step): the data position is the
    step."""
    host_window = window.fetch()  # raises on a non-finite metric
    global_state = self.strategy.global_state(state)
    if not bool(checkpoint.all_finite(global_state)):
      raise FloatingPointError(f"the train state has non-finite values at step {step}")
    norm = float(checkpoint.state_norm(global_state))
    growth = self.config.checkpoint.get("max_norm_growth", 0.0)
    reference, reference_step = self._reference_norm
    if growth and not norm <= growth * max(reference, 1e-6):
      raise FloatingPointError(
        f"the train state's norm grew from {reference:.3g} (step {reference_step}) to "
        f"{norm:.3g} at step {step}, more than config.checkpoint.max_norm_growth={growth:g} "
        "times: diverging, not saved"
      )
    meta = {
      **self._meta,
      "config": json.loads(self.config.to_json_best_effort()),
      "step": step,
      "data_position": step,
      "elapsed_s": self.elapsed,
      "log_window": host_window,
    }
    try:
      self.checkpointer.save(step, global_state, meta)
      self._reference_norm = (norm, step)
    except Exception as e:  # disk full, permissions (orbax raises several types): say what is safe
      self._save_failed = True
      text = str(e)
      if getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in text:
        reason = "No space left on device"
      else:
        reason = (text.strip().splitlines() or [type(e).__name__])[0][:200]
      raise SaveError(
        f"saving the checkpoint of step {step} in {self.checkpointer.directory} failed "
        f"({reason}); the newest complete checkpoint is step {self.checkpointer.latest_step()}"
      ) from e

  def last_good(self) -> str:
    """What a stopped run leaves to resume from, for its error message."""
    latest = self.checkpointer.latest_step()
    if latest is None:
      return "no checkpoint was saved before it"
    return f"nothing after it was saved: the newest checkpoint is step {latest}"

  def close(self) -> None:
    if self._save_failed:  # the process is ending on that error: closing Orbax's writers now
      return  # would only add their threads' tracebacks (a full disk) to its one line
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
  _write_record(run, {**extra, "final": final}, evaluators)


def write_frozen(run: Run, step: int, reason: str, evaluators) -> None:
  """results.json of a member frozen at `step` (`train.members`): no final metrics, its status
  and why; the run's newest checkpoint is its last good state."""
  frozen = {"step": step, "reason": reason, "last_checkpoint": run.checkpointer.latest_step()}
  _write_record(run, {"status": "frozen", "frozen": frozen, "final": {}}, evaluators)


def _write_record(run: Run, fields: dict, evaluators) -> None:
  if jax.process_index() != 0:
    return
  config = run.config
  record = {
    **run.options.invocation,
    **fields,
    "num_train_steps": config.num_train_steps,
    "seed": config.seed,
    "wall_time_s": round(run.elapsed, 2),
    # process start to the first step of the invocation that finished (None: no step ran there)
    "startup_s": None if run.startup_s is None else round(run.startup_s, 2),
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
