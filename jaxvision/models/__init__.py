"""Model families. `create_model(config.model, num_classes=...)` builds one by name."""

from __future__ import annotations

import flax.linen as nn

from jaxvision.models import cnn

MODELS = {
  "cnn_a": cnn.CNN_A,
  "cnn_b": cnn.CNN_B,
  "cnn_1d": cnn.CNN_1D,
  "convnet": cnn.ConvNet,
}


def create_model(config, **kwargs) -> nn.Module:
  """Builds `MODELS[config.name]` with every other key of `config` as a module attribute.

  Args:
    config: the experiment's `config.model`: `name` plus attribute overrides.
    **kwargs: attributes that come from the data rather than the config (e.g. num_classes).
  """
  if config.name not in MODELS:
    raise ValueError(f"unknown model {config.name!r}; known: {sorted(MODELS)}")
  attrs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k != "name"}
  try:
    return MODELS[config.name](**attrs, **kwargs)
  except TypeError as e:
    raise ValueError(f"bad attribute for model {config.name!r}: {e}") from e
