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
from collections.abc import Callable
from typing import Any

import jax

from jaxvision import workdir as workdir_lib
from jaxvision import writers
from jaxvision.evaluators import common as evaluators_lib
from jaxvision.train.preemption import Signals, any_process
from jaxvision.train.run import Options, Run, SaveError, truncate_log, write_results
from jaxvision.train.window import Window

__all__ = ["MAX_CALLS_AHEAD", "Options", "Outcome", "steps_this_call", "train"]

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
  log_path = workdir_lib.metrics_path(run.workdir)
  done = workdir_lib.read_results(run.workdir)
  if step >= total and done is not None:
    run.close()
    print(f"Already finished at step {step}; results in {run.workdir}/results.json", flush=True)
    return Outcome("finished", step, done.get("final", {}))
  truncate_log(log_path, step)
  writer = writers.create_writer(run.workdir, total)
  signals = Signals()
  window = Window(step + 1, strategy.fetch, run.saved_window)
  intervals = (config.log_every_steps, config.eval_every_steps, config.checkpoint.every_steps)
  status = "finished"
  in_flight = collections.deque()
  failed = False
  try:
    while step < last_step:
      k = steps_this_call(step, steps_per_call, intervals, last_step)
      state, step_metrics = advance(state, step, k)
      window.append(step_metrics)
      in_flight.append(step_metrics)
      if len(in_flight) > MAX_CALLS_AHEAD:
        jax.block_until_ready(in_flight.popleft())
      step += k
      stopping = any_process(signals.stop) and step < total
      if step % config.log_every_steps == 0 or step == total:
        writer.write(step, window.summary(), window=True)
        window = Window(step + 1, strategy.fetch)
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
    write_results(run, final, evaluators, results(state))
    return Outcome(status, step, final)
  except FloatingPointError as e:  # a non-finite metric or state: say what is safe to resume
    failed = True
    raise FloatingPointError(f"{e}; {run.last_good()} (try a lower learning rate)") from None
  except SaveError:
    failed = True
    raise
  except OSError as e:  # a full disk or a lost mount while writing metrics, events or samples
    failed = True
    raise _write_error(e, run) from None
  except BaseException:
    failed = True
    raise
  finally:
    signals.restore()
    closing_error = None
    for close in (writer.close, run.close):  # flushes can fail on a full disk too
      try:
        close()
      except OSError as e:
        closing_error = closing_error or e
    if closing_error is not None and not failed:  # else the first error is the one to report
      raise _write_error(closing_error, run) from None


def _write_error(error: OSError, run: Run) -> OSError:
  """One line: which file could not be written, why, and what the run can resume from."""
  what = error.filename or "a file of the run"
  return OSError(f"writing {what} failed ({error.strerror or error}); {run.last_good()}")
