"""Runs one experiment: `python -m jaxvision.main --config=experiments/X.py --workdir=runs/X`.

Config values are overridden with `--config.a.b=value`; the config is locked, so an unknown key
or a value of the wrong type is an error before any compute. Rerunning a command on the same
workdir resumes from its newest checkpoint (refused, before anything is written, if the config
changed in a way that changes the computation; `--allow_config_change` overrides).

Every error a user can cause is one line on stderr naming the fix (`--verbosity=1` adds the
traceback). Exit status: 0 finished (or halted by `--halt_after_steps`), 1 an error of the run
or its environment (a lost process of a multi-host run included), 2 a usage or config error
(bad arguments, out-of-range values; nothing is written), 75 (EX_TEMPFAIL) stopped early by
SIGTERM or Ctrl-C: with a checkpoint saved once training has started, or during start-up before
any step; rerun to continue.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

EXIT_ERROR, EXIT_USAGE, EXIT_PREEMPTED = 1, 2, 75


def _stop_before_training(signum, frame):
  """Nothing to save yet: say so and exit at once (an exception raised here could be swallowed
  by whatever the interpreter is running, e.g. a garbage-collection callback)."""
  del frame
  name = signal.Signals(signum).name
  print(
    f"{name}: stopped during start-up, before any step; nothing to save. Rerun the same command "
    "to start.",
    file=sys.stderr,
    flush=True,
  )
  os._exit(EXIT_PREEMPTED)


def install_startup_handlers() -> None:
  """From the first instruction, SIGTERM and SIGINT end the start-up with exit status 75 and one
  line; the training loop installs its own (checkpoint, then stop) and restores these after."""
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, _stop_before_training)


FLAGS = flags.FLAGS
HELP = ("--help", "-h", "--helpshort", "--helpfull", "-?")


def _define_flags() -> None:
  """Flags are defined only when this runs as a program: importing it defines nothing."""
  config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/*.py[:ARG]).", lock_config=True
  )
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
  flags.DEFINE_integer(
    "halt_after_steps",
    None,
    "Stop with a checkpoint once this many steps are done; rerun the same command to continue.",
  )
  flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir even though its config differs (see --help)."
  )
  flags.DEFINE_bool(
    "jax_distributed",
    False,
    "Multi-host: call jax.distributed.initialize() first. On SLURM (srun) or a TPU pod it needs "
    "nothing else; elsewhere give --coordinator_address, --num_processes and --process_id "
    "(./launch.sh -n N does this for N local processes).",
  )
  flags.DEFINE_string(
    "compilation_cache_dir",
    None,
    "Where compiled programs are kept for later runs (default: $JAXVISION_CACHE_DIR/xla, else "
    "~/.cache/jaxvision/xla; '' turns the cache off).",
  )
  flags.DEFINE_string("coordinator_address", "", "With --jax_distributed: host:port of process 0.")
  flags.DEFINE_integer("num_processes", 0, "With --jax_distributed: the number of processes.")
  flags.DEFINE_integer("process_id", -1, "With --jax_distributed: this process's index.")
  flags.DEFINE_integer(
    "heartbeat_timeout_s",
    10,
    "With --jax_distributed: a process silent this many seconds counts as lost; the others then "
    "stop with one line (exit 1), to be rerun together.",
    lower_bound=1,
  )


def _config_error(argv: list[str], error: Exception) -> str:
  """One line saying which --config argument failed, instead of a traceback."""
  if isinstance(error, (AttributeError, KeyError)):  # a path that the locked config lacks
    key = str(error.args[0] if error.args else error).strip("\"'")
    bad = [a for a in argv if a.startswith("--config.") and f".{key}" in a.split("=")[0]]
    return f"unknown config key {key!r} in {bad[0] if bad else 'a --config override'}"
  first_lines = str(error).strip().splitlines()
  return " ".join(line.strip() for line in first_lines[:4])


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; every config problem is one line on stderr and exit status 2."""
  if any(a in HELP for a in argv[1:]):
    print(__doc__.strip() + "\n\nFlags:\n" + FLAGS.main_module_help())
    sys.exit(0)
  try:
    rest = FLAGS(argv)
    if FLAGS.config is not None:
      FLAGS.config.keys()  # a failed load is deferred to first use: surface it now
  except flags.Error as e:
    lines = [line for line in str(e).splitlines() if line.strip()]
    # A failing get_config arrives as the flag's name followed by a traceback: keep both ends.
    print(f"error: {lines[0]} {lines[-1]}" if len(lines) > 1 else f"error: {e}", file=sys.stderr)
    sys.exit(EXIT_USAGE)
  except Exception as e:  # config file missing, failing get_config, unknown override key
    print(f"error: {_config_error(argv, e)}", file=sys.stderr)
    sys.exit(EXIT_USAGE)
  return rest


def check_workdir(workdir: str | None) -> str:
  """The workdir as given, after checks that need no compute; raises app.UsageError (a bad
  argument, exit status 2) or ValueError (a workdir that cannot be written), naming the fix."""
  if not workdir or not workdir.strip():
    raise app.UsageError("--workdir is empty; name a directory for this run (e.g. runs/NAME)")
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise app.UsageError(f"--workdir {workdir} is a file, not a directory")
  parent = path
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise app.UsageError(f"--workdir {workdir} lies under {parent}, which is a file")
  if not os.access(parent, os.W_OK):
    raise ValueError(f"--workdir {workdir}: {parent} is not writable")
  return workdir


def run(argv) -> int:
  """Runs the experiment the flags name; returns the exit status."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.config or FLAGS.workdir is None:
    raise app.UsageError("--config and --workdir are required (see --help)")
  workdir = check_workdir(FLAGS.workdir)
  if FLAGS.halt_after_steps is not None and FLAGS.halt_after_steps < 0:
    raise app.UsageError(f"--halt_after_steps={FLAGS.halt_after_steps} must be >= 0")
  # Imported after flag parsing so that --help and flag errors stay instant.
  from jaxvision import distributed, parallel, xla
  from jaxvision.data import cache
  from jaxvision.train import loop, trainer

  parallel.ensure_cpu_threads()
  if FLAGS.compilation_cache_dir != "":
    xla.enable_compilation_cache(
      FLAGS.compilation_cache_dir or os.path.join(cache.cache_dir(), "xla")
    )
  if FLAGS.jax_distributed:
    distributed.initialize(
      FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.heartbeat_timeout_s
    )
  config = FLAGS.config
  options = loop.Options(
    halt_after_steps=FLAGS.halt_after_steps,
    allow_config_change=FLAGS.allow_config_change,
    invocation={
      "command": shlex.join(["python", "-m", "jaxvision.main", *sys.argv[1:]]),
      "config_file": config_flags.get_config_filename(FLAGS["config"]),
      "overrides": {
        k: repr(v) for k, v in config_flags.get_override_values(FLAGS["config"]).items()
      },
    },
  )
  outcome = trainer.train_and_evaluate(config, workdir, options)
  return EXIT_PREEMPTED if outcome.status == "preempted" else 0


def _quiet_checkpoint_threads(record) -> bool:
  """Drops Orbax's background-thread error logs (and asyncio's, whose loops Orbax runs): the
  failed save they report is raised again, as one line, by the save that waits for it."""
  return "orbax" not in record.pathname and record.name != "asyncio"


def _quiet_thread_exceptions(args) -> None:
  """Background threads' tracebacks (Orbax's writers on a full disk: "Event loop is closed")
  are dropped: the error reaches the main thread, which reports it in one line."""
  del args


class _WithoutClosedLoopTracebacks:
  """stderr without asyncio's "Event loop is closed" tracebacks from Orbax's closed loops.

  On a full disk, TensorStore's C++ threads call back into the event loop of a checkpoint write
  that has already failed and closed it; Python prints those tracebacks straight to
  `sys.stderr` (past `sys.excepthook` and `threading.excepthook`), before the failed save's own
  one-line error. A traceback is held until it is complete and dropped only if every frame is
  asyncio's and it ends in that error; everything else passes through unchanged.
  """

  HEADER = "Traceback (most recent call last):"

  def __init__(self, stream):
    self._stream, self._held = stream, ""

  def write(self, text: str) -> int:
    if not self._held and not text.startswith(self.HEADER):
      return self._stream.write(text)
    self._held += text
    lines = self._held.splitlines()
    if self._held.endswith("\n") and len(lines) > 1 and not lines[-1].startswith(" "):
      held, self._held = self._held, ""
      frames = [line for line in lines[1:-1] if line.startswith("  File ")]
      closed_loop = lines[-1] == "RuntimeError: Event loop is closed" and all(
        "asyncio" in frame for frame in frames
      )
      if not closed_loop:
        self._stream.write(held)
    return len(text)

  def flush(self) -> None:
    self._stream.flush()

  def __getattr__(self, name):
    return getattr(self._stream, name)


def main(argv):
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # library INFO logs (orbax) drown the progress lines
  if FLAGS.verbosity < 1:
    logging.get_absl_handler().addFilter(_quiet_checkpoint_threads)
    threading.excepthook = _quiet_thread_exceptions
    sys.stderr = _WithoutClosedLoopTracebacks(sys.stderr)
  from jaxvision.config_dict import ConfigError

  try:
    status = run(argv)
  except (app.UsageError, ConfigError) as e:  # the command line's fault: one line, status 2
    print(
      f"error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
      file=sys.stderr,
    )
    sys.exit(EXIT_USAGE)
  except (ValueError, OSError, KeyError, FloatingPointError, ImportError) as e:
    if FLAGS.verbosity >= 1:
      traceback.print_exc()
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f"error: {message}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: after a failed checkpoint write, Orbax's background threads would print
    # tracebacks while the interpreter shuts down. Files are closed and writes finished by now.
    os._exit(EXIT_ERROR)
  sys.exit(status)


if __name__ == "__main__":
  install_startup_handlers()  # before the heavy imports that loading a config file starts
  _define_flags()
  app.run(main, flags_parser=parse_flags)
