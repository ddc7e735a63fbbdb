"""The benchmark's cases: each model as jaxvision trains it, and the same model in PyTorch and
(where the seeds define it) Keras 3.

jaxvision's side is built from the experiment config the trainers use (model, compiler options),
so the benchmark times what training runs. PyTorch's side is a plain eager implementation of the
same architecture, built from the same model config, with the same batch and optimizer. Keras's
is the same model as a `keras.Sequential` on the JAX backend (the seeds' framework), trained by
`train_on_batch` with XLA compilation, as a Keras user runs it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

LEARNING_RATE = 1e-3


def torch_version() -> str:
  try:
    import torch

    return torch.__version__
  except ImportError:
    return "not installed"


def keras_version() -> str:
  try:
    return _keras().__version__
  except ImportError:
    return "not installed"


def _keras():
  """Keras 3 on the JAX backend (the backend is chosen once per process, before the import)."""
  os.environ.setdefault("KERAS_BACKEND", "jax")
  import keras

  if keras.backend.backend() != "jax":
    raise ImportError(f"Keras runs on {keras.backend.backend()!r} here, not JAX (KERAS_BACKEND)")
  return keras


def resolved(model_config) -> ml_collections.ConfigDict:
  """Every attribute of the model a `config.model` block selects (class defaults, then the
  preset's values, then the experiment's changes), which the PyTorch twins are built from."""
  from jaxvision import models

  module, attrs = models.model_attrs(model_config)
  defaults = {
    f.name: f.default
    for f in dataclasses.fields(module)
    if f.name not in models.DATA_ATTRS and f.default is not dataclasses.MISSING
  }
  return ml_collections.ConfigDict({"name": model_config.name, **defaults, **attrs})


def _experiment(name: str, arg: str | None = None):
  """`experiments/<name>.py`'s config (the benchmark runs from the repository root)."""
  module = importlib.import_module(f"experiments.{name}")
  return module.get_config(arg) if arg else module.get_config()


class JaxRunner:
  """Calls a jitted, state-donating step; `sync` blocks on its latest output.

  `steps_per_call` > 1 when one call runs that many train steps (the trainers' on-device loop).
  """

  def __init__(self, step: Callable, state, args: tuple, steps_per_call: int = 1):
    self._step, self._args, self.steps_per_call = step, args, steps_per_call
    start = time.perf_counter()
    self._state, self._out = step(state, *args)
    jax.block_until_ready(self._out)
    self.first_step_seconds = time.perf_counter() - start

  def __call__(self):
    self._state, self._out = self._step(self._state, *self._args)

  def sync(self):
    jax.block_until_ready(self._out)

  def device_peak_mib(self):
    stats = jax.devices()[0].memory_stats()
    return stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None


class TorchRunner:
  """Calls an eager PyTorch step (forward, backward, optimizer) on fixed tensors."""

  steps_per_call = 1

  def __init__(self, step: Callable, device):
    self._step, self._device = step, device
    start = time.perf_counter()
    step()
    self.sync()
    self.first_step_seconds = time.perf_counter() - start

  def __call__(self):
    self._step()

  def sync(self):
    import torch

    if self._device.type == "cuda":
      torch.cuda.synchronize()

  def device_peak_mib(self):
    import torch

    if self._device.type == "cuda":
      return torch.cuda.max_memory_allocated() / 2**20
    return None


class KerasRunner:
  """Calls `model.train_on_batch` (forward, backward, Adam, one compiled step) on fixed arrays;
  it returns the loss on the host, so every call ends synchronised."""

  steps_per_call = 1

  def __init__(self, model, x, y):
    keras = _keras()
    model.compile(
      optimizer=keras.optimizers.Adam(LEARNING_RATE),
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      jit_compile=True,
    )
    self._step = lambda: model.train_on_batch(x, y)
    start = time.perf_counter()
    self._step()
    self.first_step_seconds = time.perf_counter() - start

  def __call__(self):
    self._step()

  def sync(self):
    pass

  def device_peak_mib(self):
    return None


def _keras_classifier(model, input_shape, num_classes, batch_size) -> KerasRunner:
  rng = np.random.default_rng(0)
  x = rng.normal(size=(batch_size, *input_shape)).astype(np.float32)
  y = rng.integers(0, num_classes, batch_size).astype(np.int32)
  return KerasRunner(model, x, y)


def keras_convnet(cfg, input_shape, num_classes: int):
  """Keras twin of `jaxvision.models.cnn.ConvNet` (channels last, as jaxvision)."""
  keras = _keras()
  cfg = resolved(cfg)
  if cfg.batch_norm or cfg.dropout_rate:
    raise NotImplementedError("the benchmark's ConvNets have no batch norm or dropout")
  one_d = len(cfg.kernel_size) == 1
  L = keras.layers
  conv, pool = (L.Conv1D, L.MaxPooling1D) if one_d else (L.Conv2D, L.MaxPooling2D)
  layers = [keras.Input(input_shape)]
  for width, pooled in zip(cfg.features, cfg.pool, strict=True):
    layers.append(
      conv(width, tuple(cfg.kernel_size), padding=cfg.padding.lower(), activation="relu")
    )
    if pooled:
      layers.append(pool(cfg.pool_window))
  layers.append(L.Flatten())
  layers += [L.Dense(width, activation="relu") for width in cfg.dense]
  layers.append(L.Dense(num_classes))
  return keras.Sequential(layers)


def keras_stacked_lstm(cfg, input_shape, num_classes: int):
  """Keras twin of `jaxvision.models.rnn.RNNClassifier` (unidirectional, last state)."""
  keras = _keras()
  cfg = resolved(cfg)
  if cfg.cell != "lstm" or cfg.bidirectional or cfg.pooling != "last" or cfg.dense:
    raise NotImplementedError("the benchmark's RNN is a plain stacked LSTM")
  L = keras.layers
  lstms = [L.LSTM(cfg.hidden_size, return_sequences=i < cfg.num_layers - 1)
           for i in range(cfg.num_layers)]  # fmt: skip
  return keras.Sequential([keras.Input(input_shape), *lstms, L.Dense(num_classes)])


def _torch_device():
  import torch

  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------- classifiers (CNNs, RNNs)


def _jax_classifier(config, input_shape, num_classes, batch_size) -> JaxRunner:
  from jaxvision import models, optim, xla
  from jaxvision.tasks import classification as classifier
  from jaxvision.train import trainer

  model = models.create_model(config.model, num_classes=num_classes)
  tx, schedule = optim.create_optimizer(
    optim.optimizer_config(name="adam", learning_rate=LEARNING_RATE), optim.schedule_config(), 10
  )
  key = jax.random.key(0)
  state = classifier.create_train_state(model, tx, jnp.zeros((1, *input_shape)), key)
  kwargs = dict(learning_rate_fn=schedule)
  options = xla.compiler_options(config.xla)
  rng = np.random.default_rng(0)
  k = config.steps_per_call
  data = {  # k batches' worth of examples, on device as the trainer keeps them
    "inputs": jnp.asarray(rng.normal(size=(k * batch_size, *input_shape)).astype(np.float32)),
    "targets": jnp.asarray(rng.integers(0, num_classes, k * batch_size).astype(np.int32)),
  }
  if k > 1:
    step = jax.jit(
      functools.partial(trainer.train_steps, functools.partial(classifier.train_step, **kwargs)),
      donate_argnums=0,
      compiler_options=options,
    )
    indices = jnp.asarray(rng.permutation(k * batch_size).reshape(k, batch_size))
    return JaxRunner(step, state, (data, indices, key), steps_per_call=k)
  step = jax.jit(
    functools.partial(classifier.train_step, **kwargs), donate_argnums=0, compiler_options=options
  )
  return JaxRunner(step, state, (data, key))


def _torch_classifier(model, input_shape, num_classes, batch_size) -> TorchRunner:
  import torch

  device = _torch_device()
  model = model.to(device)
  x = torch.randn(batch_size, *input_shape, device=device)
  y = torch.randint(0, num_classes, (batch_size,), device=device)
  model(x)  # materialise lazy layers before the optimizer sees the parameters
  opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

  def step():
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()

  return TorchRunner(step, device)


def torch_convnet(cfg, in_channels: int, num_classes: int):
  """PyTorch twin of `jaxvision.models.cnn.ConvNet` for a model config (no BN / dropout)."""
  from torch import nn

  cfg = resolved(cfg)
  if cfg.batch_norm or cfg.dropout_rate:
    raise NotImplementedError("the benchmark's ConvNets have no batch norm or dropout")
  one_d = len(cfg.kernel_size) == 1
  conv, pool = (nn.Conv1d, nn.MaxPool1d) if one_d else (nn.Conv2d, nn.MaxPool2d)
  padding = "same" if cfg.padding == "SAME" else 0
  layers, channels = [], in_channels
  for width, pooled in zip(cfg.features, cfg.pool, strict=True):
    layers += [conv(channels, width, tuple(cfg.kernel_size), padding=padding), nn.ReLU()]
    if pooled:
      layers.append(pool(cfg.pool_window))
    channels = width
  layers.append(nn.Flatten())
  for width in cfg.dense:
    layers += [nn.LazyLinear(width), nn.ReLU()]
  layers.append(nn.LazyLinear(num_classes))
  return nn.Sequential(*layers)


def torch_stacked_lstm(cfg, in_features: int, num_classes: int):
  """PyTorch twin of `jaxvision.models.rnn.RNNClassifier` (unidirectional, last state)."""
  from torch import nn

  cfg = resolved(cfg)
  if cfg.cell != "lstm" or cfg.bidirectional or cfg.pooling != "last" or cfg.dense:
    raise NotImplementedError("the benchmark's RNN is a plain stacked LSTM")

  class StackedLSTM(nn.Module):
    def __init__(self):
      super().__init__()
      self.lstm = nn.LSTM(in_features, cfg.hidden_size, cfg.num_layers, batch_first=True)
      self.head = nn.Linear(cfg.hidden_size, num_classes)

    def forward(self, x):
      _, (h, _) = self.lstm(x)
      return self.head(h[-1])

  return StackedLSTM()


# ---------------------------------------------------------------- DCGAN


def _jax_dcgan(config, batch_size) -> JaxRunner:
  from jaxvision import optim, xla
  from jaxvision.tasks import gan

  shape = (28, 28, 1)
  generator, discriminator = gan.create_models(config, shape)
  g_tx, _ = optim.create_optimizer(config.g_optimizer, config.schedule, 10)
  d_tx, _ = optim.create_optimizer(config.d_optimizer, config.schedule, 10)
  key = jax.random.key(0)
  state = gan.create_gan_state(generator, discriminator, g_tx, d_tx, config.z_dim, shape, key)
  step = jax.jit(
    functools.partial(
      gan.train_step, z_dim=config.z_dim, loss=config.loss, ema_decay=config.ema_decay
    ),
    donate_argnums=0,
    compiler_options=xla.compiler_options(config.xla),
  )
  real = np.random.default_rng(0).uniform(-1, 1, (batch_size, *shape)).astype(np.float32)
  return JaxRunner(step, state, ({"inputs": jnp.asarray(real)}, key))


def torch_dcgan(config):
  """PyTorch twin of the 28x28 DCGAN: k=4, stride 2, padding 1 (transposed) convs resize
  7 -> 14 -> 28 exactly as jaxvision's SAME ones; BN and activations in the same places."""
  from torch import nn

  g, d = resolved(config.generator), resolved(config.discriminator)
  g0, g1 = g.features
  d0, d1 = d.features
  if g.kernel_size != 4 or d.kernel_size != 4:
    raise NotImplementedError("the PyTorch twin assumes 4x4 kernels")
  if not (g.batch_norm and d.batch_norm) or d.spectral_norm or d.dropout_rate:
    raise NotImplementedError("the PyTorch twin is the plain DCGAN (batch norm, no SN/dropout)")
  generator = nn.Sequential(
    nn.Linear(config.z_dim, 7 * 7 * g0, bias=False),
    nn.Unflatten(1, (g0, 7, 7)),
    nn.BatchNorm2d(g0),
    nn.ReLU(),
    nn.ConvTranspose2d(g0, g1, 4, 2, 1, bias=False),
    nn.BatchNorm2d(g1),
    nn.ReLU(),
    nn.ConvTranspose2d(g1, 1, 4, 2, 1),
    nn.Tanh(),
  )
  discriminator = nn.Sequential(
    nn.Conv2d(1, d0, 4, 2, 1),
    nn.LeakyReLU(0.2),
    nn.Conv2d(d0, d1, 4, 2, 1, bias=False),
    nn.BatchNorm2d(d1),
    nn.LeakyReLU(0.2),
    nn.Flatten(),
    nn.Linear(7 * 7 * d1, 1),
  )
  return generator, discriminator


def _torch_dcgan(config, batch_size) -> TorchRunner:
  """One D then one G step of the twin, non-saturating loss, Adam(2e-4, 0.5) as jaxvision's."""
  import torch

  device = _torch_device()
  generator, discriminator = (m.to(device) for m in torch_dcgan(config))
  adam = lambda m: torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999))
  g_opt, d_opt = adam(generator), adam(discriminator)
  real = torch.rand(batch_size, 1, 28, 28, device=device) * 2 - 1
  softplus = torch.nn.functional.softplus

  def step():
    fake = generator(torch.randn(batch_size, config.z_dim, device=device))
    d_opt.zero_grad(set_to_none=True)
    d_loss = softplus(-discriminator(real)).mean() + softplus(discriminator(fake.detach())).mean()
    d_loss.backward()
    d_opt.step()
    g_opt.zero_grad(set_to_none=True)
    softplus(-discriminator(fake)).mean().backward()
    g_opt.step()

  return TorchRunner(step, device)


@dataclasses.dataclass(frozen=True)
class Case:
  title: str
  batch: int
  jax: Callable[[], JaxRunner]
  torch: Callable[[], TorchRunner]
  keras: Callable[[], KerasRunner] | None = None  # the seeds' models only

  def runner(self, framework: str):
    return {"jaxvision": self.jax, "pytorch": self.torch, "keras": self.keras}[framework]()


def _cnn_a():
  return _experiment("mnist_cnn", "idx")


def _seed_lstm():
  return _experiment("seed_lstm")


def _dcgan():
  return _experiment("mnist_dcgan", "idx")


def _cnn_1d():
  return _experiment("mnist1d_cnn", "fast")


B = 128
CASES = {
  "cnn_a": Case(
    "CNN A, 28x28x1",
    B,
    lambda: _jax_classifier(_cnn_a(), (28, 28, 1), 10, B),
    # PyTorch is channels-first: [B, 1, 28, 28]
    lambda: _torch_classifier(torch_convnet(_cnn_a().model, 1, 10), (1, 28, 28), 10, B),
    lambda: _keras_classifier(keras_convnet(_cnn_a().model, (28, 28, 1), 10), (28, 28, 1), 10, B),
  ),
  "seed_lstm": Case(
    "3 x LSTM(64), (100, 1)",
    B,
    lambda: _jax_classifier(_seed_lstm(), (100, 1), 2, B),
    lambda: _torch_classifier(torch_stacked_lstm(_seed_lstm().model, 1, 2), (100, 1), 2, B),
    lambda: _keras_classifier(keras_stacked_lstm(_seed_lstm().model, (100, 1), 2), (100, 1), 2, B),
  ),
  "dcgan": Case(
    "DCGAN step (D then G, with BN), 28x28x1",
    B,
    lambda: _jax_dcgan(_dcgan(), B),
    lambda: _torch_dcgan(_dcgan(), B),
  ),
  "cnn_1d": Case(
    "MNIST-1D CNN (fast recipe), 40x1",
    B,
    lambda: _jax_classifier(_cnn_1d(), (40, 1), 10, B),
    lambda: _torch_classifier(torch_convnet(_cnn_1d().model, 1, 10), (1, 40), 10, B),
  ),
}
