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
  app.run(main)
