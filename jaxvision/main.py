"""Runs one experiment: `python -m jaxvision.main --config=experiments/X.py --workdir=runs/X`.

Config values are overridden with `--config.a.b=value`; the config is locked, so an unknown key
or a value of the wrong type is an error before any compute. Rerunning a command on the same
workdir resumes from its latest checkpoint.
"""

from __future__ import annotations

import importlib
import shlex
import sys

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file(
  "config", None, "Experiment config file (experiments/*.py).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_integer(
  "halt_after_steps",
  None,
  "Stop with a checkpoint once this many steps are done; rerun the same command to continue.",
)
flags.DEFINE_bool(
  "jax_distributed",
  False,
  "Call jax.distributed.initialize() first (multi-host; coordinator from the environment).",
)
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def _config_error(argv: list[str], error: Exception) -> str:
  """One line saying which --config argument failed, instead of a traceback."""
  if isinstance(error, (AttributeError, KeyError)):  # a path that the locked config lacks
    key = str(error.args[0] if error.args else error).strip("\"'")
    bad = [a for a in argv if a.startswith("--config.") and f".{key}" in a.split("=")[0]]
    return f"unknown config key {key!r} in {bad[0] if bad else 'a --config override'}"
  first_lines = str(error).strip().splitlines()
  return " ".join(line.strip() for line in first_lines[:4])


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; every config problem is one line on stderr and exit status 1."""
  try:
    rest = FLAGS(argv)
    FLAGS.config.keys()  # a failed load is deferred to first use: surface it now
  except flags.Error as e:
    lines = [line for line in str(e).splitlines() if line.strip()]
    # A failing get_config arrives as the flag's name followed by a traceback: keep both ends.
    sys.exit(f"error: {lines[0]} {lines[-1]}" if len(lines) > 1 else f"error: {e}")
  except Exception as e:  # config file missing, failing get_config, unknown override key
    sys.exit(f"error: {_config_error(argv, e)}")
  return rest


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # library INFO logs (orbax) drown the progress lines
  import jax  # imported after flag parsing so that --help and flag errors stay instant

  if FLAGS.jax_distributed:
    jax.distributed.initialize()
  config = FLAGS.config
  trainer = importlib.import_module(f"jaxvision.train.{config.trainer}")
  invocation = {
    "command": shlex.join(["python", "-m", "jaxvision.main", *sys.argv[1:]]),
    "config_file": config_flags.get_config_filename(FLAGS["config"]),
    "overrides": {k: repr(v) for k, v in config_flags.get_override_values(FLAGS["config"]).items()},
  }
  trainer.train_and_evaluate(
    config, FLAGS.workdir, halt_after_steps=FLAGS.halt_after_steps, invocation=invocation
  )


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
