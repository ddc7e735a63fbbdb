"""The Task registry: `config.trainer` names the family's Task (`jaxvision.tasks.base.Task`)."""

from __future__ import annotations

import importlib

from jaxvision.config_dict import ConfigError

TASKS = {
  "classifier": "jaxvision.tasks.classification",
  "ctc": "jaxvision.tasks.ctc",
  "detection": "jaxvision.tasks.detection",
  "gan": "jaxvision.tasks.gan",
  "segmentation": "jaxvision.tasks.segmentation",
  "video": "jaxvision.tasks.video",
}


def get(name: str) -> type:
  """The Task class of family `name` (`config.trainer`); ConfigError naming the known ones."""
  if name not in TASKS:
    raise ConfigError(f"config.trainer={name!r} unknown; expected one of {sorted(TASKS)}")
  return importlib.import_module(TASKS[name]).Task
