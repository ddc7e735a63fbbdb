"""Model families. `create_model(config.model, num_classes=...)` builds one by name."""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import ml_collections

from jaxvision.models import cnn, rnn

MODELS = {
  "cnn_a": cnn.CNN_A,
  "cnn_b": cnn.CNN_B,
  "cnn_1d": cnn.CNN_1D,
  "convnet": cnn.ConvNet,
  "lstm": rnn.LSTM,
  "gru": rnn.GRU,
  "seed_lstm": rnn.SEED_LSTM,
}
_FROM_DATA = ("num_classes",)  # attributes set from the data set, not the config


def _defaults(name: str) -> dict:
  """Every configurable attribute of model `name` with its default value."""
  variant = MODELS[name]
  cls, keywords = (
    (variant.func, variant.keywords) if isinstance(variant, functools.partial) else (variant, {})
  )
  fields = {
    f.name: f.default
    for f in dataclasses.fields(cls)
    if f.init
    and f.name not in ("parent", "name", *_FROM_DATA)
    and f.default is not dataclasses.MISSING
  }
  return {**fields, **keywords}


def model_config(name: str, **overrides) -> ml_collections.ConfigDict:
  """`config.model` for `name`: every attribute present (so each can be overridden)."""
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
  defaults = _defaults(name)
  unknown = set(overrides) - set(defaults)
  if unknown:
    raise ValueError(
      f"model {name!r} has no attributes {sorted(unknown)}; it has {sorted(defaults)}"
    )
  return ml_collections.ConfigDict({"name": name, **defaults, **overrides})


def create_model(config, **kwargs) -> nn.Module:
  """Builds `MODELS[config.name]` with every other key of `config` as a module attribute.

  Args:
    config: the experiment's `config.model`: `name` plus attribute values.
    **kwargs: attributes that come from the data rather than the config (e.g. num_classes).
  """
  if config.name not in MODELS:
    raise ValueError(f"unknown model {config.name!r}; known: {sorted(MODELS)}")
  attrs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k != "name"}
  try:
    return MODELS[config.name](**attrs, **kwargs)
  except TypeError as e:
    raise ValueError(f"bad attribute for model {config.name!r}: {e}") from e
