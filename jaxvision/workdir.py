"""The workdir format: the one place that names a run's files, and reads and compares them.

  <workdir>/config.json      the resolved config (written by rename when a run starts)
  <workdir>/checkpoints/     Orbax checkpoints: the train state and a JSON meta (step, data info,
                             log window, elapsed time)
  <workdir>/metrics.jsonl    one JSON object per log or eval step
  <workdir>/tb/              TensorBoard events
  <workdir>/samples/         images an evaluator writes (GAN grids, video GIFs)
  <workdir>/results.json     final metrics, the metrics declared, config, provenance
  <workdir>/evaluations/     step_N.json of `python -m jaxvision.tools.evaluate`
  <workdir>/log.txt          a sweep point's output

Trainers write these (`jaxvision.train.run`), tools read them (`jaxvision.runs.load_run`, the
report, the sweep); none of them spells a file name itself.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess

import ml_collections

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "log.txt"


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG_FILE)


def results_path(workdir: str) -> str:
  return os.path.join(workdir, RESULTS_FILE)


def metrics_path(workdir: str) -> str:
  return os.path.join(workdir, METRICS_FILE)


def checkpoints_dir(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")


def tensorboard_dir(workdir: str) -> str:
  return os.path.join(workdir, "tb")


def samples_dir(workdir: str) -> str:
  return os.path.join(workdir, "samples")


def evaluations_dir(workdir: str) -> str:
  return os.path.join(workdir, "evaluations")


def log_path(workdir: str) -> str:
  return os.path.join(workdir, LOG_FILE)


def is_finished(workdir: str) -> bool:
  return os.path.isfile(results_path(workdir))


def write_json(path: str, record: dict) -> None:
  """Writes `record` to `path` atomically (a temporary file renamed over it): a reader never
  sees a half-written file, and a full disk leaves the old one in place."""
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(record, f, indent=2)
      f.write("\n")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


# Config keys that change when things are logged, evaluated or saved, or where data is read
# from, never a run's numbers: runs differing only in them are one point of a result table.
BOOKKEEPING_KEYS = (
  "log_every_steps",
  "eval_every_steps",
  "checkpoint.",
  "xla.",
  "data.eval_batch_size",
  "data.data_dir",
  "data.prefetch",
  "steps_per_call",
  "members_impl",
)
# Config keys that may differ on resume: those, what is evaluated, and the device layout
# (checkpoints restore onto any topology).
RESUMABLE_CHANGES = (*BOOKKEEPING_KEYS, "evaluators.", "parallel.")


def is_bookkeeping(key: str) -> bool:
  return any(key.startswith(prefix) for prefix in BOOKKEEPING_KEYS)


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_changes(old: dict, new: dict) -> list[str]:
  """`key: old -> new` for each key that differs and changes the computation.

  A key the old config lacks whose new value is off (0, 0.0, False, "", None, empty) is no change:
  options are added to the configs with a default that leaves the computation as it was."""
  a, b = _flatten(json.loads(json.dumps(old))), _flatten(json.loads(json.dumps(new)))
  changed = []
  for key in sorted(set(a) | set(b)):
    if key not in a and not b[key]:
      continue
    if a.get(key) != b.get(key) and not any(key.startswith(p) for p in RESUMABLE_CHANGES):
      changed.append(f"{key}: {a.get(key, '(absent)')!r} -> {b.get(key, '(absent)')!r}")
  return changed


def read_results(workdir: str) -> dict | None:
  """A finished run's results.json, or None when it has not finished."""
  path = results_path(workdir)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` used: its config.json, else its results.json's copy."""
  for name, key in ((CONFIG_FILE, None), (RESULTS_FILE, "config")):
    path = os.path.join(workdir, name)
    if os.path.isfile(path):
      with open(path, encoding="utf-8") as f:
        record = json.load(f)
      return ml_collections.ConfigDict(record[key] if key else record)
  raise FileNotFoundError(f"no config.json or results.json in {workdir!r}: not a jaxvision workdir")


def restore_latest(workdir: str) -> tuple[dict, dict]:
  """The latest checkpoint in `workdir`: (train state as nested dicts of arrays, its meta)."""
  from jaxvision import checkpoint

  return checkpoint.restore_latest(checkpoints_dir(workdir))


def git_commit() -> str | None:
  """The commit of the jaxvision checkout this runs from ("-dirty" if the code a run executes,
  jaxvision/, experiments/ or pyproject.toml, is modified), if any."""
  here = os.path.dirname(__file__)
  try:
    run = lambda *args: subprocess.run(
      ["git", *args], cwd=here, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()
    commit = run("rev-parse", "HEAD")
    # Only what a run executes: not tests, documents or figures (a campaign rewrites RESULTS.md).
    dirty = run(
      "status", "--porcelain", "--untracked-files=no", "--", ":(top)jaxvision",
      ":(top)experiments", ":(top)pyproject.toml", ":(top,exclude)*.md",
    )  # fmt: skip
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ("-dirty" if dirty else "")


def process_age_s() -> float | None:
  """Seconds since this process started (from /proc: the interpreter's start-up included), or
  None where /proc is not available."""
  try:
    with open("/proc/self/stat", encoding="ascii") as f:
      started = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start time, clock ticks
    with open("/proc/uptime", encoding="ascii") as f:
      uptime = float(f.read().split()[0])
  except (OSError, ValueError, IndexError):
    return None
  return uptime - started / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
  """This machine's CPU model name, e.g. "AMD EPYC 7B13"."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    if names:
      return names[0]
  except OSError:
    pass
  return platform.processor() or platform.machine()
