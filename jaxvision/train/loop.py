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
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxvision import workdir as workdir_lib
from jaxvision import writers
from jaxvision.evaluators import common as evaluators_lib
from jaxvision.train.preemption import Signals, any_process
from jaxvision.train.run import (
  Options,
  Run,
  SaveError,
  truncate_log,
  write_frozen,
  write_results,
)
from jaxvision.train.window import Window

__all__ = ["MAX_CALLS_AHEAD", "Members", "Options", "Outcome", "Track", "steps_this_call", "train"]

# The most compiled calls dispatched ahead of the host: waiting for older ones bounds the queue
# (XLA:CPU's client can deadlock when a device's launches queue up behind a collective; see
# parallel.ensure_cpu_threads) and costs nothing while the device is the bottleneck.
MAX_CALLS_AHEAD = 8


@dataclasses.dataclass(frozen=True)
class Outcome:
  """How a run ended: "finished", "halted" (halt_after_steps) or "preempted" (a signal)."""

  status: str
  step: int
  final: dict


@dataclasses.dataclass
class Track:
  """One run the loop writes: its workdir bookkeeping, evaluators and extra results; `index`
  is its place on the members axis of the state (None: the state is this run's own)."""

  run: Run
  evaluators: list
  results: Callable[[Any], dict] = lambda state: {}
  index: int | None = None
  name: str = ""  # a member's name, printed with what happens to it
  frozen: bool = False


@dataclasses.dataclass(frozen=True)
class Members:
  """How the loop reads a members state (`jaxvision.train.members`): `view(state, index)` is one
  member's placed state, `frozen_at(state)` each member's freezing step (-1: training) as numpy,
  `freeze(state, index, step)` freezes one from the host."""

  count: int
  view: Callable[[Any, int], Any]
  frozen_at: Callable[[Any], Any]
  freeze: Callable[[Any, int, int], Any]


def steps_this_call(step: int, steps_per_call: int, intervals, last_step: int) -> int:
  """How many steps the next compiled call runs: `steps_per_call` when no logging, eval or
  checkpoint step falls strictly inside that span, else 1 (so events land where they would in a
  per-step loop and only two step functions are ever compiled)."""
  if steps_per_call <= 1:
    return 1
  next_event = min([last_step] + [(step // n + 1) * n for n in intervals])
  return steps_per_call if step + steps_per_call <= next_event else 1


def train(
  tracks: list[Track],
  state,
  advance: Callable[[Any, int, int], tuple[Any, dict]],
  *,
  steps_per_call: int = 1,
  members: Members | None = None,
) -> Outcome:
  """Runs `advance` from the state's step to `config.num_train_steps` with the periodic work.

  Args:
    tracks: the runs written: one, or (with `members`) one per member, in member order.
    state: the placed train state (with members: the members state).
    advance: `(state, step, k) -> (state, metrics)` runs k steps from `step` (steps done so far);
      metric values are scalars (k = 1) or [k] arrays (with members, a trailing [K] axis), left
      on device.
    steps_per_call: the most steps one `advance` call may run (events still land on time).
    members: how to read a members state; None for one run.

  Returns:
    How the run ended; a finished run's final evaluation in `Outcome.final` (with members:
    member name -> final evaluation).
  """
  first = tracks[0].run
  config, strategy = first.config, first.strategy
  total = config.num_train_steps
  last_step = min(
    total, first.options.halt_after_steps if first.options.halt_after_steps is not None else total
  )
  step = strategy.step(state)
  view = (lambda s, t: s) if members is None else (lambda s, t: members.view(s, t.index))
  done = [workdir_lib.read_results(t.run.workdir) for t in tracks]
  if step >= total and all(d is not None for d in done):
    for t in tracks:
      t.run.close()
    where = f"{first.workdir}/results.json" if members is None else os.path.dirname(first.workdir)
    print(f"Already finished at step {step}; results in {where}", flush=True)
    finals = [d.get("final", {}) for d in done]
    return Outcome("finished", step, finals[0] if members is None else _by_name(tracks, finals))
  for t in tracks:
    truncate_log(workdir_lib.metrics_path(t.run.workdir), step)
  output = [writers.create_writer(t.run.workdir, total, label=t.name) for t in tracks]
  signals = Signals()
  count = members.count if members else 0

  def new_window(saved=None):
    return Window(step + 1, strategy.fetch, saved, members=count)

  window = new_window(_saved_window(tracks, members))
  intervals = (config.log_every_steps, config.eval_every_steps, config.checkpoint.every_steps)
  status = "finished"
  in_flight = collections.deque()
  failed = False

  def track_window(t):
    return window if members is None else window.member(t.index)

  def check_frozen(state):
    """Marks members the step froze (printing which and when); returns the state."""
    if members is None:
      return state
    frozen_at = members.frozen_at(state)
    for t in tracks:
      if not t.frozen and frozen_at[t.index] >= 0:
        bad = track_window(t).first_non_finite(int(frozen_at[t.index]))
        state = _freeze(t, state, int(frozen_at[t.index]), f"non-finite {bad or 'state'}")
    return state

  def _freeze(t, state, at_step, reason):
    t.frozen = True
    print(
      f"{t.name}: frozen at step {at_step} ({reason}); the others go on. {t.run.last_good()}",
      flush=True,
    )
    write_frozen(t.run, at_step, reason, t.evaluators)
    return state

  def save(state, step):
    for t in tracks:
      if t.frozen:
        continue
      try:
        t.run.save(step, view(state, t), track_window(t))
      except FloatingPointError as e:
        if members is None:
          raise
        state = members.freeze(state, t.index, step)
        state = _freeze(t, state, step, str(e))
    return state

  try:
    while step < last_step:
      k = steps_this_call(step, steps_per_call, intervals, last_step)
      state, step_metrics = advance(state, step, k)
      if first.startup_s is None:  # process start to the first call's end (its compile included)
        jax.block_until_ready(step_metrics)
        age = workdir_lib.process_age_s()
        for t in tracks:
          t.run.startup_s = age
        if age is not None:
          print(f"First step done {age:.2f} s after the process started", flush=True)
      window.append(step_metrics)
      in_flight.append(step_metrics)
      if len(in_flight) > MAX_CALLS_AHEAD:
        jax.block_until_ready(in_flight.popleft())
      step += k
      stopping = any_process(signals.stop) and step < total
      if step % config.log_every_steps == 0 or step == total:
        state = check_frozen(state)
        summary = window.summary()  # with members: [K] per metric, computed once
        for t, writer in zip(tracks, output, strict=True):
          if not t.frozen:
            row = summary if members is None else {k: float(v[t.index]) for k, v in summary.items()}
            writer.write(step, row, window=True)
        window = new_window()
      if step % config.eval_every_steps == 0 and step != total:
        state = check_frozen(state)
        for t, writer in zip(tracks, output, strict=True):
          if not t.frozen:
            writer.write(step, evaluators_lib.run_all(t.evaluators, view(state, t), step))
      if step % config.checkpoint.every_steps == 0 or step == last_step or stopping:
        state = save(check_frozen(state), step)
      if stopping:
        status = "preempted"
        print(f"{signals.name or 'stop'}: saved a checkpoint at step {step}.", flush=True)
        break
    if status == "finished" and step < total:
      status = "halted"
      for t in tracks:
        if not t.frozen and t.run.checkpointer.latest_step() != step:  # halted before any step
          t.run.save(step, view(state, t), track_window(t))  # ran: save the start
      print(f"Halted at step {step}; rerun the same command to continue.", flush=True)
    if status != "finished":
      return Outcome(status, step, {})
    finals = []
    for t, writer in zip(tracks, output, strict=True):
      if t.frozen:
        finals.append({})
        continue
      final = evaluators_lib.run_all(t.evaluators, view(state, t), step)
      writer.write(step, final)
      write_results(t.run, final, t.evaluators, t.results(view(state, t)))
      finals.append(final)
    return Outcome(status, step, finals[0] if members is None else _by_name(tracks, finals))
  except FloatingPointError as e:  # a non-finite metric or state: say what is safe to resume
    failed = True
    raise FloatingPointError(f"{e}; {first.last_good()} (try a lower learning rate)") from None
  except SaveError:
    failed = True
    raise
  except OSError as e:  # a full disk or a lost mount while writing metrics, events or samples
    failed = True
    raise _write_error(e, first) from None
  except BaseException:
    failed = True
    raise
  finally:
    signals.restore()
    closing_error = None
    closes = [w.close for w in output] + [t.run.close for t in tracks]
    for close in closes:  # flushes can fail on a full disk too
      try:
        close()
      except OSError as e:
        closing_error = closing_error or e
    if closing_error is not None and not failed:  # else the first error is the one to report
      raise _write_error(closing_error, first) from None


def _by_name(tracks: list[Track], finals: list[dict]) -> dict:
  return {t.name: final for t, final in zip(tracks, finals, strict=True)}


def _saved_window(tracks: list[Track], members: Members | None) -> dict | None:
  """The log window restored with the checkpoint(s): one run's, or the members' as [K] rows
  (NaN for members frozen earlier)."""
  if members is None:
    return tracks[0].run.saved_window
  live = [t.run.saved_window for t in tracks if not t.frozen]
  if not live or not live[0]:
    return None
  columns = [
    {k: [np.nan] * len(v) for k, v in live[0].items()} if t.frozen else t.run.saved_window
    for t in tracks
  ]
  return {k: [np.array(row) for row in zip(*(c[k] for c in columns), strict=True)] for k in live[0]}


def _write_error(error: OSError, run: Run) -> OSError:
  """One line: which file could not be written, why, and what the run can resume from."""
  what = error.filename or "a file of the run"
  return OSError(f"writing {what} failed ({error.strerror or error}); {run.last_good()}")
