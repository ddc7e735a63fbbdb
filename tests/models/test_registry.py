"""The model registry: names pick presets, configs hold only changes, counts are as documented."""

import jax
import jax.numpy as jnp
import pytest

from jaxvision import models
from jaxvision.train.common import num_params


@pytest.mark.parametrize("name", sorted(models.presets()))
def test_every_preset_has_its_documented_parameter_count(name):
  preset = models.get_preset(name)
  model = models.create_model(models.model_config(name), **preset.example_data)
  x = jnp.zeros((1, *preset.example_shape))  # images, sequences, or a generator's latents
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  assert num_params(variables["params"]) == preset.num_params


def test_switching_the_name_switches_the_whole_preset():
  config = models.model_config("cnn_a")
  config.name = "cnn_b"  # what --config.model.name=cnn_b does
  model = models.create_model(config, num_classes=10)
  assert (model.features, model.dense) == ((32, 64), (128,))
  config = models.model_config("lstm", hidden_size=32)
  config.name = "gru"
  model = models.create_model(config, num_classes=10)
  assert (model.cell, model.hidden_size) == ("gru", 32)  # the change survives the switch


def test_config_holds_only_changes_and_overrides_stay_typed():
  config = models.model_config("cnn_a", dropout_rate=0.25)
  set_values = {k: v for k, v in config.items() if v is not None}
  assert set_values == {"name": "cnn_a", "dropout_rate": 0.25}
  config.batch_norm = True  # a placeholder takes a value of its type ...
  with pytest.raises(TypeError):
    config.padding = 3  # ... and refuses another
  assert models.describe(config)["batch_norm"] is True


def test_unknown_names_and_attributes_are_clear_errors():
  with pytest.raises(ValueError, match="unknown model 'cnn_z'"):
    models.model_config("cnn_z")
  with pytest.raises(ValueError, match="no attributes"):
    models.model_config("cnn_a", hidden_size=3)
