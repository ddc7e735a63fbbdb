"""Re-runs a run's evaluators on its saved checkpoint (big_vision's `tools/eval_only.py`).

  python -m jaxvision.tools.evaluate --workdir=runs/mnist_cnn_idx
  python -m jaxvision.tools.evaluate --workdir=runs/mnist_dcgan_idx \\
      --config.evaluators.eval.num_samples=1000
  python -m jaxvision.tools.evaluate --workdir=runs/x --config.data.data_dir=/data/mnist

Any run of any family, finished or interrupted, is rebuilt by `jaxvision.runs.load_run` from its
newest readable checkpoint; its evaluators (as its config declares them, with the eval key the
training run used) run on it, print their metrics and write them, with the evaluator settings
and the command, to `<workdir>/evaluations/step_<N>.json`. `--config.KEY=VALUE` overrides what
changes how a run is evaluated, never what it computed: `evaluators.*`, `data.eval_batch_size`,
`data.data_dir`, `parallel.*`, `xla.*`.

Exit status: 0 evaluated, 1 an error (one line), 2 a usage error (one line).
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import sys
import time

EXIT_ERROR, EXIT_USAGE = 1, 2
OVERRIDABLE = ("evaluators.", "data.eval_batch_size", "data.data_dir", "parallel.", "xla.")


class UsageError(Exception):
  """A bad command line: one line, exit status 2."""


def parse_args(argv: list[str]) -> tuple[str, dict]:
  """(workdir, {dotted key: value}) from `--workdir=W --config.k=v ...`."""
  workdir, overrides = None, {}
  for arg in argv[1:]:
    flag, sep, value = arg.partition("=")
    if flag == "--workdir" and sep:
      workdir = value
    elif flag.startswith("--config.") and sep:
      key = flag.removeprefix("--config.")
      if not key.startswith(OVERRIDABLE):
        raise UsageError(
          f"{arg}: only how a run is evaluated may change ({', '.join(OVERRIDABLE)}); "
          "train a new run for anything else"
        )
      overrides[key] = value
    else:
      raise UsageError(f"unexpected argument {arg!r}; usage: --workdir=W [--config.KEY=VALUE ...]")
  if not workdir:
    raise UsageError("--workdir=W is required")
  return workdir, overrides


def apply_overrides(config, overrides: dict) -> None:
  """Sets each dotted key of the (unlocked) config, parsing values as Python literals where the
  current value is not a string; an unknown key is an error."""
  for key, text in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      if part not in node:
        raise UsageError(f"--config.{key}: the run's config has no {part!r}")
      node = node[part]
    if leaf not in node:
      raise UsageError(f"--config.{key}: unknown key {leaf!r}")
    old = node[leaf]
    if isinstance(old, str):
      node[leaf] = text
      continue
    try:
      node[leaf] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      raise UsageError(f"--config.{key}={text}: not a Python literal") from None


def evaluate(workdir: str, overrides: dict | None = None, command: str = "") -> dict:
  """Runs the evaluators of the run in `workdir` on its newest checkpoint and writes their
  metrics to `<workdir>/evaluations/step_<N>.json`; returns that record."""
  import jax

  from jaxvision import parallel, runs
  from jaxvision import workdir as workdir_lib
  from jaxvision.evaluators import common as evaluators_lib
  from jaxvision.train import trainer

  parallel.ensure_cpu_threads()
  config = workdir_lib.load_config(workdir)
  apply_overrides(config, overrides or {})
  strategy = parallel.create_strategy(config.parallel)
  run = runs.load_run(workdir, strategy)
  run.config = config
  dataset = run.dataset()
  _, _, eval_key = trainer.seed_keys(config.seed)
  evaluators = trainer.create_evaluators(config, run.task, dataset, strategy, workdir, eval_key)
  metrics = evaluators_lib.run_all(evaluators, run.state, run.step)
  record = {
    "step": run.step,
    "final": metrics,
    "metrics": evaluators_lib.declared(evaluators),
    "evaluators": config.evaluators.to_dict(),
    "dataset": dataset.description,
    "command": command,
    "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "devices": jax.device_count(),
  }
  if jax.process_index() == 0:
    os.makedirs(workdir_lib.evaluations_dir(workdir), exist_ok=True)
    path = os.path.join(workdir_lib.evaluations_dir(workdir), f"step_{run.step}.json")
    workdir_lib.write_json(path, record)
  return record


def main(argv: list[str]) -> int:
  if any(a in ("--help", "-h") for a in argv[1:]):
    print(__doc__)
    return 0
  try:
    workdir, overrides = parse_args(argv)
    command = shlex.join(["python", "-m", "jaxvision.tools.evaluate", *argv[1:]])
    record = evaluate(workdir, overrides, command)
  except UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_USAGE
  except (ValueError, OSError, KeyError, FloatingPointError) as e:
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f"error: {message}", file=sys.stderr)
    return EXIT_ERROR
  print(f"{workdir} step {record['step']}: {json.dumps(record['final'])}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
