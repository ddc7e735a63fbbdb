"""K models in one command against K commands: end-to-end wall time of `config.members`.

  python -m benchmarks.members --out=benchmarks/RESULTS.md        # quiet machine: ~30 min on CPU
  python -m benchmarks.members --experiments=mnist1d_baselines.py:logistic --steps=500

For each experiment it runs, as a user would, the K separate commands
`python -m jaxvision.main --config=E --workdir=W/seed=k --config.seed=k` one after the other,
then the one command `--config.members=seed=0:K` (each `members_impl` asked for), and reports
both wall times (process start, data, compile, training, evaluation and checkpoints included),
their ratio, and the largest difference in final eval accuracy between member k and the
separate run with seed k (0 when the two are the same computation). Generated data is made
before the timing (both sides read it from the data cache); each side starts with an empty
compilation cache of its own, which the K separate commands share as a user's would. The load
average before and after each measurement is printed beside it, and a section measured while it
exceeded the core count says so: only numbers from an otherwise idle machine mean anything
(`../shared/tools/quiet -- python -m benchmarks.members ...`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from benchmarks.bench import device_description, is_loaded, write_section

FLAGS = flags.FLAGS
EXPERIMENTS = (
  "mnist1d_baselines.py:logistic",
  "mnist1d_baselines.py:mlp",
  "mnist1d_rnn.py:gru",
  "mnist1d_cnn.py",
)
HEADER = "Members: K models in one command"


def _define_flags() -> None:
  flags.DEFINE_list("experiments", list(EXPERIMENTS), "experiments/<file>[:ARG] to compare.")
  flags.DEFINE_integer("k", 5, "Members (and separate commands).")
  flags.DEFINE_list("impls", ["unroll", "vmap"], "members_impl values to time.")
  flags.DEFINE_integer("steps", 0, "Override num_train_steps (0: the experiment's own).")
  flags.DEFINE_string("out", None, "Markdown file whose section to (re)write.")


def _run(config: str, workdir: str, extra: list[str]) -> float:
  """Seconds one `jaxvision.main` command takes, start to exit (raises if it fails)."""
  command = [sys.executable, "-m", "jaxvision.main", f"--config=experiments/{config}"]
  command += [f"--workdir={workdir}", *extra]
  start = time.perf_counter()
  done = subprocess.run(command, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  if done.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
  return seconds


def _accuracy(workdir: str) -> float:
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    return json.load(f)["final"]["eval_accuracy"]


def _load() -> float:
  return os.getloadavg()[0]


def make_data(config: str) -> None:
  """Generates (and caches) the experiment's data, so that no timed command makes it."""
  import importlib

  from jaxvision.data import load_dataset

  name, _, arg = config.partition(":")
  module = importlib.import_module(f"experiments.{name.removesuffix('.py')}")
  load_dataset((module.get_config(arg) if arg else module.get_config()).data)


def measure(config: str, k: int, impls, steps: int, root: str) -> list[dict]:
  """Rows for one experiment: the K separate commands, then one members command per impl."""
  extra = [f"--config.num_train_steps={steps}"] if steps else []
  make_data(config)
  before = _load()
  separate_dirs = [os.path.join(root, "separate", f"seed={s}") for s in range(k)]
  cache = f"--compilation_cache_dir={os.path.join(root, 'xla_separate')}"
  separate = sum(
    _run(config, d, [*extra, f"--config.seed={s}", cache]) for s, d in enumerate(separate_dirs)
  )
  rows = [
    {"experiment": config, "how": f"{k} commands", "seconds": separate, "load": (before, _load())}
  ]
  accuracies = [_accuracy(d) for d in separate_dirs]
  for impl in impls:
    before = _load()
    workdir = os.path.join(root, impl)
    members = [f"--config.members=seed=0:{k}", f"--config.members_impl={impl}"]
    members.append(f"--compilation_cache_dir={os.path.join(root, f'xla_{impl}')}")
    seconds = _run(config, workdir, [*extra, *members])
    diff = max(
      abs(_accuracy(os.path.join(workdir, f"member=seed={s}")) - accuracies[s]) for s in range(k)
    )
    rows.append(
      {
        "experiment": config,
        "how": f"1 command, {k} members ({impl})",
        "seconds": seconds,
        "speedup": separate / seconds,
        "accuracy_diff": diff,
        "load": (before, _load()),
      }
    )
  for row in rows:
    print(json.dumps(row), flush=True)
  return rows


def render(rows: list[dict], k: int, steps: int) -> str:
  loaded = is_loaded([x for r in rows for x in r["load"]])
  lines = [
    f"## {HEADER}",
    "",
    f"`python -m benchmarks.members{f' --steps={steps}' if steps else ''}` on "
    f"{time.strftime('%Y-%m-%d')}, {device_description()}; every command a fresh process, "
    f"one at a time. K = {k}."
    + (" **Loaded machine (load above the core count): not a result.**" if loaded else ""),
    "",
    "| experiment | how | wall s | speedup | max eval-accuracy difference | load before / after |",
    "| --- | --- | --- | --- | --- | --- |",
  ]
  for r in rows:
    speedup = f"**{r['speedup']:.2f}x**" if "speedup" in r else ""
    diff = f"{r['accuracy_diff']:.2g}" if "accuracy_diff" in r else ""
    load = f"{r['load'][0]:.2f} / {r['load'][1]:.2f}"
    lines.append(
      f"| {r['experiment']} | {r['how']} | {r['seconds']:.1f} | {speedup} | {diff} | {load} |"
    )
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  rows = []
  with tempfile.TemporaryDirectory() as root:
    for i, config in enumerate(FLAGS.experiments):
      rows += measure(config, FLAGS.k, FLAGS.impls, FLAGS.steps, os.path.join(root, str(i)))
  text = render(rows, FLAGS.k, FLAGS.steps)
  print(text)
  if FLAGS.out:
    write_section(FLAGS.out, HEADER, text)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
