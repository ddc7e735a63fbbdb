"""The benchmark's PyTorch and Keras twins have exactly the parameters of jaxvision's models.

Needs the `bench` extra (torch, keras); skipped where they are not installed.
"""

import jax
import jax.numpy as jnp
import pytest

from benchmarks import bench_models
from jaxvision import models
from jaxvision.tasks import gan

torch = pytest.importorskip("torch")


def _count_jax(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def _count_torch(module, example):
  module(example)  # materialise lazy layers
  return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
  "make, arg, jax_shape, torch_shape, classes",
  [
    (bench_models._cnn_a, None, (1, 28, 28, 1), (2, 1, 28, 28), 10),
    (bench_models._cnn_1d, None, (1, 40, 1), (2, 1, 40), 10),
    (bench_models._seed_lstm, None, (1, 100, 1), (2, 100, 1), 2),
  ],
)
def test_classifier_twins_match(make, arg, jax_shape, torch_shape, classes):
  config = make()
  model = models.create_model(config.model, num_classes=classes)
  params = model.init(jax.random.key(0), jnp.zeros(jax_shape), train=False)["params"]
  if config.model.name == "seed_lstm":
    twin = bench_models.torch_stacked_lstm(config.model, 1, classes)
    # PyTorch keeps two bias vectors per gate (input and hidden); flax keeps one.
    attrs = bench_models.resolved(config.model)  # the preset's values, then the experiment's
    extra = attrs.num_layers * 4 * attrs.hidden_size
  else:
    twin = bench_models.torch_convnet(config.model, 1, classes)
    extra = 0
  example = torch.zeros(torch_shape)
  assert _count_torch(twin, example) == _count_jax(params) + extra
  assert twin(example).shape == (2, classes)


def test_dcgan_twin_matches():
  config = bench_models._dcgan()
  generator, discriminator = gan.create_models(config, (28, 28, 1))
  g = generator.init(jax.random.key(0), jnp.zeros((1, config.z_dim)), train=False)
  d = discriminator.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
  torch_g, torch_d = bench_models.torch_dcgan(config)
  assert _count_torch(torch_g, torch.zeros(2, config.z_dim)) == _count_jax(g["params"])
  assert _count_torch(torch_d, torch.zeros(2, 1, 28, 28)) == _count_jax(d["params"])
  assert torch_g(torch.zeros(2, config.z_dim)).shape == (2, 1, 28, 28)
  assert bench_models._torch_dcgan(config, 4).first_step_seconds > 0  # a full D + G step runs


@pytest.mark.parametrize(
  "make, twin, shape, classes",
  [
    (bench_models._cnn_a, bench_models.keras_convnet, (28, 28, 1), 10),
    (bench_models._seed_lstm, bench_models.keras_stacked_lstm, (100, 1), 2),
  ],
)
def test_keras_twins_match(make, twin, shape, classes):
  try:
    bench_models._keras()  # selects the JAX backend before the first import of keras
  except ImportError as e:
    pytest.skip(f"Keras 3 on JAX not available: {e}")
  config = make()
  model = models.create_model(config.model, num_classes=classes)
  params = model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False)["params"]
  keras_model = twin(config.model, shape, classes)
  # Keras's LSTM, like flax's, keeps one bias per gate.
  assert keras_model.count_params() == _count_jax(params)
  assert bench_models._keras_classifier(keras_model, shape, classes, 4).first_step_seconds > 0
