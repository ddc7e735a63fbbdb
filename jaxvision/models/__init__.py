"""The model registry: `config.model.name` picks a family module's preset; the config overrides.

Each family module (cnn.py, rnn.py, ...) lists its named models in `PRESETS` (see `Preset`);
adding a family is a new module and one line in `FAMILIES`. `model_config(name, **changes)` holds
the preset's name and only what the experiment changes: every other attribute is an empty typed
placeholder, so `--config.model.ATTR=value` still overrides it, and switching
`--config.model.name` switches the whole preset (big_vision's `model_name` + `model=dict(...)`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib

import flax.linen as nn
import ml_collections
from ml_collections.config_dict import placeholder

from jaxvision.models.preset import Preset

FAMILIES = (
  "jaxvision.models.cnn",
  "jaxvision.models.rnn",
  "jaxvision.models.mlp",
  "jaxvision.models.dcgan",
  "jaxvision.models.video",
  "jaxvision.models.unet",
  "jaxvision.models.centernet",
  "jaxvision.models.speech",
)
# Attributes that come from the data or the device strategy, never from the config.
DATA_ATTRS = ("num_classes", "output_shape", "axis_name", "parent", "name")


@functools.cache
def presets() -> dict[str, Preset]:
  """Every registered preset by name (the family modules are imported on first use)."""
  found = {}
  for family in FAMILIES:
    for name, preset in getattr(importlib.import_module(family), "PRESETS", {}).items():
      if name in found:
        raise ValueError(f"model name {name!r} is registered twice (in {family})")
      found[name] = preset
  return found


def get_preset(name: str) -> Preset:
  if name not in presets():
    raise ValueError(f"unknown model {name!r}; known: {sorted(presets())}")
  return presets()[name]


def _fields(module: type) -> dict:
  """Configurable attributes of a module class with their class defaults."""
  return {
    f.name: f.default
    for f in dataclasses.fields(module)
    if f.init and f.name not in DATA_ATTRS and f.default is not dataclasses.MISSING
  }


def model_config(name: str, **changes) -> ml_collections.ConfigDict:
  """`config.model`: the preset `name` and the attribute values the experiment changes."""
  preset = get_preset(name)
  defaults = {**_fields(preset.module), **preset.attrs}
  unknown = set(changes) - set(defaults)
  if unknown:
    raise ValueError(
      f"model {name!r} has no attributes {sorted(unknown)}; it has {sorted(defaults)}"
    )
  slots = {}
  for attr, value in defaults.items():
    kind = tuple if isinstance(value, (list, tuple)) else type(value)
    slots[attr] = changes[attr] if attr in changes else placeholder(kind)
  return ml_collections.ConfigDict({"name": name, **slots})


def model_attrs(config, **data_attrs) -> tuple[type, dict]:
  """(module class, every attribute) that `config` (the experiment's `config.model`) selects."""
  preset = get_preset(config.name)
  fields = {f.name for f in dataclasses.fields(preset.module)}
  changes = {k: v for k, v in config.items() if k != "name" and v is not None}
  unknown = set(changes) - fields
  if unknown:
    raise ValueError(f"model {config.name!r} has no attributes {sorted(unknown)}")
  attrs = {**_fields(preset.module), **preset.attrs, **changes}
  attrs = {k: tuple(v) if isinstance(v, list) else v for k, v in attrs.items()}
  # Data attributes a module does not have (e.g. axis_name of a model without batch norm) are
  # dropped, so a trainer passes the same ones to every model.
  attrs.update({k: v for k, v in data_attrs.items() if k in fields})
  return preset.module, attrs


def create_model(config, **data_attrs) -> nn.Module:
  """Builds the model `config` selects.

  Args:
    config: the experiment's `config.model`: `name` plus the attributes it changes.
    **data_attrs: attributes from the data or the device strategy (num_classes, axis_name, ...).
  """
  module, attrs = model_attrs(config, **data_attrs)
  try:
    return module(**attrs)
  except TypeError as e:
    raise ValueError(f"bad attribute for model {config.name!r}: {e}") from e


def describe(config) -> dict:
  """The resolved attributes of `config.model` (for results.json), data attributes excluded."""
  _, attrs = model_attrs(config)
  return {
    "name": config.name,
    **{k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items()},
  }
