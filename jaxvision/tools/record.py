"""Results records of tools run on a trained run (inpainting, compression, explanations), in the
shape of a run's `results.json`, so that the report and a campaign's `Analysis` tabulate them
like runs: the run's config (with the tool's settings under one key) and seed, the tool's metrics
declared as evaluators declare theirs, the command, this machine and commit."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time

from jaxvision import workdir as workdir_lib


def make(
  workdir: str,
  tool: str,
  settings: dict,
  final: dict,
  metrics,
  command: str,
  wall_time_s: float,
  dataset: str = "",
  **extra,
) -> dict:
  """The record of `tool` run with `settings` on the run in `workdir`.

  Args:
    workdir: the analysed run's workdir (its results.json, else its config.json).
    tool: the key its settings go under in the record's config, e.g. "inpaint".
    settings: the tool's settings.
    final: its numbers.
    metrics: declarations {"name", "label", "format", "better"}; those in `final` are kept.
    command: the command line that ran it.
    wall_time_s: how long it took.
    dataset: what it ran on (default: the run's data set).
    extra: more fields.
  """
  import jax

  path = workdir_lib.results_path(workdir)
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      run = json.load(f)
  else:  # an unfinished run: its config
    run = {"config": workdir_lib.load_config(workdir).to_dict()}
  return {
    "command": command,
    "analysed_workdir": workdir,
    "config": {**run["config"], tool: settings},
    "seed": run["config"].get("seed"),
    "num_train_steps": run.get("num_train_steps", run["config"].get("num_train_steps")),
    "num_params": run.get("num_params"),
    "dataset": dataset or run.get("dataset", "?"),
    "final": final,
    "metrics": [m for m in metrics if m["name"] in final],
    "wall_time_s": round(wall_time_s, 2),
    "jax_version": jax.__version__,
    "backend": jax.default_backend(),
    "devices": jax.device_count(),
    "processes": jax.process_count(),
    "machine": {"cpu": workdir_lib.cpu_model(), "cores": os.cpu_count()},
    "git_commit": workdir_lib.git_commit(),
    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    **extra,
  }


def command_line(tool: str) -> str:
  """The command line that runs `jaxvision.tools.<tool>` as this process was run."""
  return shlex.join(["python", "-m", f"jaxvision.tools.{tool}", *sys.argv[1:]])


def write(directory: str, made: dict) -> str:
  """Writes the record `made` as `directory`/results.json (atomically); returns its path."""
  os.makedirs(directory, exist_ok=True)
  path = workdir_lib.results_path(directory)
  workdir_lib.write_json(path, made)
  return path
