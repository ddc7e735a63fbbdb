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
from collections.abc import Callable
from typing import NamedTuple

import ml_collections

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"

# Config keys that may differ on resume: they change when and what is logged, evaluated or saved,
# or the device layout (checkpoints restore onto any topology), not what is computed.
RESUMABLE_CHANGES = (
  "log_every_steps",
  "eval_every_steps",
  "checkpoint.",
  "evaluators.",
  "parallel.",
  "xla.",
  "data.eval_batch_size",
  "data.data_dir",
  "steps_per_call",
)


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_changes(old: dict, new: dict) -> list[str]:
  """`key: old -> new` for each key that differs and changes the computation."""
  a, b = _flatten(json.loads(json.dumps(old))), _flatten(json.loads(json.dumps(new)))
  changed = []
  for key in sorted(set(a) | set(b)):
    if a.get(key) != b.get(key) and not any(key.startswith(p) for p in RESUMABLE_CHANGES):
      changed.append(f"{key}: {a.get(key, '(absent)')!r} -> {b.get(key, '(absent)')!r}")
  return changed


def read_results(workdir: str) -> dict | None:
  """A finished run's results.json, or None when it has not finished."""
  path = os.path.join(workdir, RESULTS_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


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
  from jaxvision import checkpoint

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


class TrainedGenerator(NamedTuple):
  """A GAN run's generator: `generate(z)` (`generate(z, labels)` when `num_classes` > 0) maps
  latents [N, z_dim] to images [N, H, W, C] in [-1, 1]."""

  generate: Callable
  z_dim: int
  step: int
  config: ml_collections.ConfigDict
  num_classes: int


def load_generator(workdir: str, use_ema: bool = True) -> TrainedGenerator:
  """A GAN workdir's generator, jitted, with the EMA weights when the run kept an EMA.

  Raises:
    ValueError: `workdir` is not a GAN run.
  """
  import jax

  from jaxvision import models  # the registry imports every model family: only when needed

  config = load_config(workdir)
  if config.get("trainer") != "gan":
    raise ValueError(f"{workdir} is a {config.get('trainer')!r} run, not a GAN run")
  state, meta = restore_latest(workdir)
  num_classes = int(meta.get("num_classes", 0))
  generator = models.create_model(
    config.generator, output_shape=tuple(meta["image_shape"]), num_classes=num_classes
  )
  params = state["ema_params"] if use_ema and config.ema_decay > 0 else state["g_params"]
  variables = {"params": params}
  if state.get("g_batch_stats"):
    variables["batch_stats"] = state["g_batch_stats"]
  generate = jax.jit(lambda z, *labels: generator.apply(variables, z, *labels, train=False))
  return TrainedGenerator(generate, config.z_dim, meta["step"], config, num_classes)
