"""A run's workdir as others read it: its config, latest checkpoint and provenance.

`<workdir>/config.json` (the resolved config), `<workdir>/checkpoints/` (Orbax) and
`<workdir>/results.json` (final metrics); used by the sampler, the GAN feature extractor, the
inpainting tool and the report, none of which should import a trainer.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess

import ml_collections

from jaxvision import checkpoint


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` used: its config.json, else its results.json's copy."""
  for name, key in (("config.json", None), ("results.json", "config")):
    path = os.path.join(workdir, name)
    if os.path.isfile(path):
      with open(path, encoding="utf-8") as f:
        record = json.load(f)
      return ml_collections.ConfigDict(record[key] if key else record)
  raise FileNotFoundError(f"no config.json or results.json in {workdir!r}: not a jaxvision workdir")


def restore_latest(workdir: str) -> tuple[dict, dict]:
  """The latest checkpoint in `workdir`: (train state as nested dicts of arrays, its meta)."""
  return checkpoint.restore_latest(os.path.join(workdir, "checkpoints"))


def git_commit() -> str | None:
  """The commit of the jaxvision checkout this runs from ("-dirty" if modified), if any."""
  here = os.path.dirname(__file__)
  try:
    run = lambda *args: subprocess.run(
      ["git", *args], cwd=here, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()
    commit = run("rev-parse", "HEAD")
    dirty = run("status", "--porcelain", "--untracked-files=no")
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ("-dirty" if dirty else "")


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
