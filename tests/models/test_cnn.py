"""ConvNet variants: parameter counts, output shapes, batch norm, and the pooling rewrite."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxvision import models
from jaxvision.models.layers import max_pool


def _model(name, num_classes=10, **changes):
  """A registered preset with `changes`, as a trainer builds it from `config.model`."""
  return models.create_model(models.model_config(name, **changes), num_classes=num_classes)


def _init(model, shape):
  return model.init(jax.random.key(0), jnp.zeros(shape), train=False)


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


@pytest.mark.parametrize(
  "name, shape, params",
  [
    ("cnn_a", (2, 28, 28, 1), 93_322),  # the Keras tutorial's count for this network
    ("cnn_b", (2, 28, 28, 1), 225_034),
    ("cnn_1d", (2, 40, 1), None),
  ],
)
def test_output_shape_and_param_count(name, shape, params):
  model = _model(name)
  variables = _init(model, shape)
  logits = model.apply(variables, jnp.ones(shape), train=False)
  assert logits.shape == (2, 10)
  if params is not None:
    assert _count(variables["params"]) == params


def test_cnn_1d_param_count_by_hand():
  # conv k=5: 5*Cin*64 + 64 per block; length 40 -> 20 -> 10 -> 5 after three pools.
  expected = (5 * 1 * 64 + 64) + 3 * (5 * 64 * 64 + 64) + (5 * 64 * 128 + 128) + (128 * 10 + 10)
  assert _count(_init(_model("cnn_1d"), (1, 40, 1))["params"]) == expected


def test_batch_norm_stats_update_in_train_mode_only():
  model = _model("cnn_a", batch_norm=True)
  variables = _init(model, (4, 28, 28, 1))
  assert "batch_stats" in variables
  x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1)) * 3 + 1
  _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  before, after = jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(updates)
  assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))
  # eval mode is deterministic and uses the running averages
  y1 = model.apply(variables, x, train=False)
  y2 = model.apply(variables, x, train=False)
  np.testing.assert_array_equal(y1, y2)


def test_dropout_needs_rng_and_varies_in_train_mode():
  model = _model("cnn_b", dropout_rate=0.5)
  variables = _init(model, (4, 28, 28, 1))
  x = jnp.ones((4, 28, 28, 1))
  a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
  b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(a, b)


def test_wrong_input_rank_is_a_clear_error():
  with pytest.raises(ValueError, match="does not fit a 2-D ConvNet"):
    _init(_model("cnn_a"), (2, 40, 1))


@pytest.mark.parametrize("shape", [(3, 28, 28, 5), (3, 13, 11, 4), (2, 40, 3), (2, 9, 2)])
def test_reshape_max_pool_matches_nn_max_pool(shape):
  """Same values and gradients as flax's reduce_window pooling (no ties in random data)."""
  x = jax.random.normal(jax.random.key(0), shape)
  window = (2,) * (len(shape) - 2)
  reference = lambda x: nn.max_pool(x, window, strides=window, padding="VALID")
  ours = lambda x: max_pool(x, 2)
  np.testing.assert_allclose(ours(x), reference(x), rtol=0, atol=0)
  weights = jax.random.normal(jax.random.key(1), reference(x).shape)
  grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) * weights))(x)
  np.testing.assert_allclose(grad(ours), grad(reference), rtol=1e-6, atol=1e-6)


def test_create_model_from_config():
  config = ml_collections.ConfigDict(dict(name="cnn_a", dropout_rate=0.1, features=[16, 32, 32]))
  model = models.create_model(config, num_classes=7)
  assert model.features == (16, 32, 32) and model.num_classes == 7
  with pytest.raises(ValueError, match="unknown model 'resnet'"):
    models.create_model(ml_collections.ConfigDict(dict(name="resnet")), num_classes=10)
  with pytest.raises(ValueError, match=r"model 'cnn_a' has no attributes \['depth'\]"):
    models.create_model(ml_collections.ConfigDict(dict(name="cnn_a", depth=3)), num_classes=10)
  with pytest.raises(ValueError, match="bad attribute for model 'cnn_a'"):
    models.create_model(models.model_config("cnn_a"))  # num_classes comes from the data
