"""The training loop every trainer shares: the periodic work around a trainer's step.

A trainer validates its config, loads data, builds its model, state and evaluators, and calls
`train(...)` with a function that advances the state by k steps. The loop owns everything else,
identically for every trainer (big_vision's `itstime`/`chrono`, clu's periodic actions):

- the workdir: refuses a resume whose config differs in anything that changes the computation
  (naming the keys) before writing anything; restores the newest readable checkpoint or creates
  the state; writes `config.json`;
- logging (`metrics.jsonl`, TensorBoard, a progress line; process 0 only) every
  `log_every_steps`, evaluation every `eval_every_steps`, checkpoints every
  `checkpoint.every_steps`, and a final evaluation and `results.json`;
- a non-finite check of every loss the step returns (every metric named `*loss`) at each log step
  and before every save, and of the state itself before every save: a bad state is never saved,
  so the last good checkpoint is never rotated out;
- preemption: SIGTERM or Ctrl-C saves a checkpoint at the next step and stops (all processes
  together in a multi-host run), status "preempted"; `halt_after_steps` stops likewise, "halted";
- closing on any exception (checkpoint writes finished, writers closed, signal handlers restored).

The log window is saved with each checkpoint, so a resumed run logs exactly the rows an
uninterrupted one would have.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from jaxvision import checkpoint, metrics
from jaxvision.evaluators import common as evaluators_lib
from jaxvision.workdir import config_changes, cpu_model, git_commit, read_results

# The most compiled calls dispatched ahead of the host: waiting for older ones bounds the queue
# (XLA:CPU's client can deadlock when a device's launches queue up behind a collective; see
# parallel.ensure_cpu_threads) and costs nothing while the device is the bottleneck.
MAX_CALLS_AHEAD = 8


@dataclasses.dataclass(frozen=True)
class Options:
  """How this invocation runs (flags, not experiment config)."""

  halt_after_steps: int | None = None  # stop with a checkpoint once this many steps are done
  allow_config_change: bool = False  # resume a workdir whose config differs
  invocation: dict = dataclasses.field(default_factory=dict)  # command, config file, overrides


@dataclasses.dataclass(frozen=True)
class Outcome:
  """How a run ended: "finished", "halted" (halt_after_steps) or "preempted" (a signal)."""

  status: str
  step: int
  final: dict


def validate(config) -> None:
  """Checks the keys every trainer's config has; raises ValueError naming the key and the fix."""
  positive = {
    "num_train_steps": config.num_train_steps,
    "log_every_steps": config.log_every_steps,
    "eval_every_steps": config.eval_every_steps,
    "checkpoint.every_steps": config.checkpoint.every_steps,
    "checkpoint.keep": config.checkpoint.keep,
    "data.batch_size": config.data.batch_size,
    "data.eval_batch_size": config.data.eval_batch_size,
  }
  for key, value in positive.items():
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f"config.{key}={value!r} must be a positive integer")
  if config.get("steps_per_call", 1) < 1:
    raise ValueError(f"config.steps_per_call={config.steps_per_call} must be >= 1")
  for name in ("optimizer", "g_optimizer", "d_optimizer"):
    if name in config and not config[name].learning_rate > 0:
      raise ValueError(f"config.{name}.learning_rate={config[name].learning_rate} must be > 0")


class _Signals:
  """SIGTERM and SIGINT set `stop`; a second Ctrl-C aborts at once. Restored by `restore()`."""

  def __init__(self):
    self.stop, self.name, self._previous = False, None, {}
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals to the caller
        pass

  def _handle(self, signum, frame):
    if self.stop and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: the user wants out now
    self.stop, self.name = True, signal.Signals(signum).name
    print(f"{self.name}: saving a checkpoint after this step, then stopping.", flush=True)

  def restore(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}


def _all_finite(tree) -> jax.Array:
  leaves = [
    jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


class _Window:
  """Per-step metrics since the last log row; on device until fetched, then host floats."""

  def __init__(self, next_step: int, fetch, saved: dict | None = None):
    """`next_step`: the step the next appended metrics belong to; `fetch`: the strategy's
    device-to-host transfer of replicated values; `saved`: host values of the steps just before
    `next_step` (a window restored from a checkpoint)."""
    self._fetch = fetch
    self._host: dict[str, list] = {k: list(v) for k, v in (saved or {}).items()}
    self.first_step = next_step - len(next(iter(self._host.values()), []))
    self._device: list[dict] = []

  def append(self, step_metrics: dict) -> None:
    self._device.append(step_metrics)

  def fetch(self) -> dict[str, list]:
    """Host values of every metric so far; raises FloatingPointError on a non-finite loss."""
    if self._device:
      start = self.first_step + len(next(iter(self._host.values()), []))
      host = self._fetch(self._device)
      series = {k: np.concatenate([np.atleast_1d(m[k]) for m in host]) for k in host[0]}
      for key, values in series.items():
        bad = np.flatnonzero(~np.isfinite(values))
        if key.endswith("loss") and bad.size:
          raise FloatingPointError(
            f"non-finite {key} ({values[bad[0]]}) at step {start + int(bad[0])}; the last "
            "checkpoint holds the last good state (try a lower learning rate)"
          )
        self._host.setdefault(key, []).extend(float(v) for v in values)
      self._device = []
    return self._host

  def summary(self) -> dict:
    return {k: float(np.mean(v)) for k, v in self.fetch().items()}


class Run:
  """One training run in a workdir: checkpoints, writers, elapsed time, config and signals."""

  def __init__(
    self, config, workdir: str, strategy, options: Options | None = None, meta: dict | None = None
  ):
    self.config, self.workdir, self.strategy = config, workdir, strategy
    self.options = options or Options()
    self._meta = dict(meta or {})
    self._check_config_unchanged()
    os.makedirs(workdir, exist_ok=True)
    self.git_commit = git_commit()  # the code this run started with, not what is there at its end
    self.checkpointer = checkpoint.Checkpointer(
      os.path.join(workdir, "checkpoints"),
      every_steps=config.checkpoint.every_steps,
      keep=config.checkpoint.keep,
    )
    self._start = time.perf_counter()
    self._elapsed_before = 0.0  # seconds spent by earlier runs in this workdir
    self.saved_window = None
    self._finite = jax.jit(_all_finite)
    if jax.process_index() == 0:  # the workdir describes itself (jaxvision.sample reads it)
      with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
        f.write(config.to_json_best_effort(indent=2))

  def _check_config_unchanged(self) -> None:
    path = os.path.join(self.workdir, "config.json")
    if not os.path.isfile(path) or self.options.allow_config_change:
      return
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
    changed = config_changes(old, json.loads(self.config.to_json_best_effort()))
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

  def save(self, step: int, state, window: _Window) -> None:
    """Saves a checkpoint of `state` after checking the losses since the last log and the state
    itself are finite. Batches are a pure function of (seed, step): the data position is the
    step."""
    host_window = window.fetch()  # raises on a non-finite loss
    global_state = self.strategy.global_state(state)
    if not bool(self._finite(global_state)):
      raise FloatingPointError(
        f"the train state has non-finite values at step {step}; not saved, the last checkpoint "
        "holds the last good state"
      )
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

  def close(self) -> None:
    self.checkpointer.close()


def _truncate_log(path: str, step: int) -> None:
  """Drops rows after `step` (written after the checkpoint a crashed run resumes from)."""
  if jax.process_index() != 0 or not os.path.isfile(path):
    return
  with open(path, encoding="utf-8") as f:
    rows = f.readlines()
  keep = [r for r in rows if r.strip() and json.loads(r).get("step", 0) <= step]
  if len(keep) != len(rows):
    with open(path, "w", encoding="utf-8") as f:
      f.writelines(keep)


def _any_process(flag: bool) -> bool:
  """True on every process when `flag` is True on any (a coordinated multi-host stop)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def steps_this_call(step: int, steps_per_call: int, intervals, last_step: int) -> int:
  """How many steps the next compiled call runs: `steps_per_call` when no logging, eval or
  checkpoint step falls strictly inside that span, else 1 (so events land where they would in a
  per-step loop and only two step functions are ever compiled)."""
  if steps_per_call <= 1:
    return 1
  next_event = min([last_step] + [(step // n + 1) * n for n in intervals])
  return steps_per_call if step + steps_per_call <= next_event else 1


def train(
  run: Run,
  state,
  advance: Callable[[Any, int, int], tuple[Any, dict]],
  evaluators: list,
  *,
  steps_per_call: int = 1,
  results: Callable[[Any], dict] = lambda state: {},
) -> Outcome:
  """Runs `advance` from the state's step to `config.num_train_steps` with the periodic work.

  Args:
    run: the run's workdir bookkeeping (`Run`), its state already restored or created.
    state: the placed train state.
    advance: `(state, step, k) -> (state, metrics)` runs k steps from `step` (steps done so far);
      metric values are scalars (k = 1) or [k] arrays, left on device.
    evaluators: from `jaxvision.evaluators.common.from_config`.
    steps_per_call: the most steps one `advance` call may run (events still land on time).
    results: extra fields for results.json (e.g. parameter counts) from the final state.

  Returns:
    How the run ended; a finished run's final evaluation in `Outcome.final`.
  """
  config, strategy = run.config, run.strategy
  total = config.num_train_steps
  last_step = min(
    total, run.options.halt_after_steps if run.options.halt_after_steps is not None else total
  )
  step = strategy.step(state)
  log_path = os.path.join(run.workdir, "metrics.jsonl")
  done = read_results(run.workdir)
  if step >= total and done is not None:
    run.close()
    print(f"Already finished at step {step}; results in {run.workdir}/results.json", flush=True)
    return Outcome("finished", step, done.get("final", {}))
  _truncate_log(log_path, step)
  writer = metrics.create_writer(run.workdir, total)
  signals = _Signals()
  window = _Window(step + 1, strategy.fetch, run.saved_window)
  intervals = (config.log_every_steps, config.eval_every_steps, config.checkpoint.every_steps)
  status = "finished"
  in_flight = collections.deque()
  try:
    while step < last_step:
      k = steps_this_call(step, steps_per_call, intervals, last_step)
      state, step_metrics = advance(state, step, k)
      window.append(step_metrics)
      in_flight.append(step_metrics)
      if len(in_flight) > MAX_CALLS_AHEAD:
        jax.block_until_ready(in_flight.popleft())
      step += k
      stopping = _any_process(signals.stop) and step < total
      if step % config.log_every_steps == 0 or step == total:
        writer.write(step, window.summary())
        window = _Window(step + 1, strategy.fetch)
      if step % config.eval_every_steps == 0 and step != total:
        writer.write(step, evaluators_lib.run_all(evaluators, state, step))
      if step % config.checkpoint.every_steps == 0 or step == last_step or stopping:
        run.save(step, state, window)
      if stopping:
        status = "preempted"
        print(f"{signals.name or 'stop'}: saved a checkpoint at step {step}.", flush=True)
        break
    if status == "finished" and step < total:
      status = "halted"
      if run.checkpointer.latest_step() != step:  # halted before any step ran: save the start
        run.save(step, state, window)
      print(f"Halted at step {step}; rerun the same command to continue.", flush=True)
    if status != "finished":
      return Outcome(status, step, {})
    final = evaluators_lib.run_all(evaluators, state, step)
    writer.write(step, final)
    _write_results(run, final, evaluators, results(state))
    return Outcome(status, step, final)
  finally:
    signals.restore()
    writer.close()
    run.close()


def _write_results(run: Run, final: dict, evaluators, extra: dict) -> None:
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
    "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
    "strategy": run.strategy.name,
    "git_commit": run.git_commit,  # taken when the run started: the code that ran
    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
  }
  with open(os.path.join(run.workdir, "results.json"), "w", encoding="utf-8") as f:
    json.dump(record, f, indent=2)
