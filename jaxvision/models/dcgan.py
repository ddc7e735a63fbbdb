"""DCGAN (Radford et al. 2015): a generator of transposed convs and a strided-conv discriminator.

The generator projects z with a dense layer to a small feature map, doubles its size with each
stride-2 transposed conv (batch norm + ReLU between), and ends in tanh; outputs are in [-1, 1], so
the data are normalised "symmetric". The discriminator halves the size with each stride-2 conv
(LeakyReLU 0.2, batch norm on all but the first), no pooling, and a dense logit. 28x28x1 (the
MNIST family) uses two upsamplings from 7x7, 32x32x3 (CIFAR-10) three from 4x4.

Options for small-data and conditional recipes, all off by default (the defaults build exactly
the networks above, same parameters and outputs): class conditioning (`num_classes`; one-hot
labels into the generator, a projection discriminator), spectral normalisation and dropout in the
discriminator, and `axis_name` for batch statistics averaged across `pmap` devices.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.models.layers import conv_transpose_subpixel, resolve_impl
from jaxvision.models.preset import Preset

CONV_TRANSPOSE_IMPLS = ("auto", "xla", "subpixel")
# Where nn.SpectralNorm keeps its power-iteration state (u, sigma): the batch-norm collection, so
# a trainer threads both with one `mutable=["batch_stats"]`.
SPECTRAL_NORM_COLLECTION = "batch_stats"


def resolve_conv_transpose_impl(impl: str) -> str:
  """'auto' is the sub-pixel form on XLA:CPU (5-7x faster there) and XLA's own elsewhere."""
  return resolve_impl(impl, CONV_TRANSPOSE_IMPLS, "subpixel", "conv_transpose_impl")


class ConvTranspose(nn.Module):
  """`nn.ConvTranspose` (2-D, same parameters and values) with a choice of formulation."""

  features: int
  kernel_size: tuple[int, int] = (4, 4)
  strides: tuple[int, int] = (2, 2)
  padding: str = "SAME"
  use_bias: bool = True
  impl: str = "auto"

  @nn.compact
  def __call__(self, x):
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (*self.kernel_size, x.shape[-1], self.features)
    )
    if resolve_conv_transpose_impl(self.impl) == "subpixel":
      y = conv_transpose_subpixel(x, kernel, self.strides, self.padding)
    else:
      y = jax.lax.conv_transpose(
        x, kernel, self.strides, self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


def _check_labels(labels, num_classes: int, batch: int, who: str):
  """Fails fast on labels that do not match the module's conditioning."""
  if num_classes > 0 and labels is None:
    raise ValueError(f"{who} has num_classes={num_classes}: pass labels [B] (int class ids)")
  if num_classes == 0 and labels is not None:
    raise ValueError(f"{who} is unconditional (num_classes=0) but was given labels")
  if labels is not None and labels.shape != (batch,):
    raise ValueError(f"{who} labels must have shape ({batch},), got {labels.shape}")


class Generator(nn.Module):
  """Maps latents z [B, z_dim] (and class ids [B] when conditional) to images [B, H, W, C].

  Outputs are in [-1, 1]. A conditional generator (num_classes > 0) sees one-hot labels
  concatenated to z: through the first dense layer that is a learned per-class embedding added
  to the projected map, the simplest conditioning that works at MNIST/CIFAR scale.

  Attributes:
    output_shape: (H, W, C); H and W must be divisible by 2 ** len(features).
    features: channels of the projected map and after each upsampling but the last.
    kernel_size: of the transposed convs.
    batch_norm: after the projection and every upsampling but the last.
    conv_transpose_impl: "auto", "xla" or "subpixel" (same values; a speed choice).
    num_classes: 0 for an unconditional generator, else the number of classes of `labels`.
    axis_name: the `pmap` axis over which batch norm averages its batch statistics (None under
      `jit`, where the batch is already global).
  """

  output_shape: Sequence[int] = (28, 28, 1)
  features: Sequence[int] = (256, 128)
  kernel_size: int = 4
  batch_norm: bool = True
  conv_transpose_impl: str = "auto"
  num_classes: int = 0
  axis_name: str | None = None

  @nn.compact
  def __call__(self, z, labels=None, *, train: bool):
    h, w, c = self.output_shape
    scale = 2 ** len(self.features)
    if h % scale or w % scale:
      raise ValueError(f"output {h}x{w} is not divisible by 2**{len(self.features)}")
    _check_labels(labels, self.num_classes, z.shape[0], "Generator")
    if self.num_classes > 0:
      z = jnp.concatenate([z, jax.nn.one_hot(labels, self.num_classes, dtype=z.dtype)], -1)
      # z: [B, z_dim + num_classes]
    norm = functools.partial(
      nn.BatchNorm, use_running_average=not train, momentum=0.9, axis_name=self.axis_name
    )
    act = lambda x: nn.relu(norm()(x)) if self.batch_norm else nn.relu(x)
    x = nn.Dense(h // scale * w // scale * self.features[0], use_bias=not self.batch_norm)(z)
    x = act(x.reshape(z.shape[0], h // scale, w // scale, self.features[0]))  # [B, h0, w0, F0]
    k = (self.kernel_size, self.kernel_size)
    for width in self.features[1:]:
      x = ConvTranspose(width, k, use_bias=not self.batch_norm, impl=self.conv_transpose_impl)(x)
      x = act(x)  # [B, 2h, 2w, width]
    x = ConvTranspose(c, k, impl=self.conv_transpose_impl)(x)  # [B, H, W, C]
    return jnp.tanh(x)


class Discriminator(nn.Module):
  """Maps images [B, H, W, C] (and class ids [B] when conditional) to real-vs-fake logits [B].

  With `spectral_norm`, every conv, the dense logit and the class embedding divide their weights
  by a power-iteration estimate of their largest singular value (Miyato et al. 2018; a conv
  kernel [kh, kw, in, out] as the matrix [kh * kw * in, out]). Its vector `u` and estimate
  `sigma` live in the collection `SPECTRAL_NORM_COLLECTION` ("batch_stats", next to batch norm's
  statistics), so one code path serves both: a training pass is
  `apply({"params": p, "batch_stats": s}, x, train=True, mutable=["batch_stats"])` (one power
  iteration per call, kept in the returned stats), an eval pass `train=False` without mutable.
  SN-GAN discriminators usually turn batch norm off (`batch_norm=False`).

  A conditional discriminator is a projection discriminator (Miyato & Koyama 2018): with
  phi(x) the flattened last feature map, logit = psi(phi(x)) + <embed(y), phi(x)>. With
  `class_head` it also classifies (AC-GAN, Odena et al. 2017): a dense layer on phi(x) gives class
  logits [B, num_classes], returned after the real-vs-fake logits as `(logits, class_logits)`.

  With `dropout_rate` > 0 a training pass needs `rngs={"dropout": key}`.

  Attributes:
    features: channels of each stride-2 conv.
    kernel_size: of the convs.
    batch_norm: after every conv but the first.
    spectral_norm: spectrally normalise the convs, the dense layer and the class embedding.
    num_classes: 0 for an unconditional discriminator, else the number of classes of `labels`.
    dropout_rate: dropout after each LeakyReLU in training (none at evaluation).
    class_head: also return class logits (needs num_classes > 0).
    axis_name: the `pmap` axis over which batch norm averages its batch statistics.
  """

  features: Sequence[int] = (64, 128)
  kernel_size: int = 4
  batch_norm: bool = True
  spectral_norm: bool = False
  num_classes: int = 0
  dropout_rate: float = 0.0
  class_head: bool = False
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, labels=None, *, train: bool):
    _check_labels(labels, self.num_classes, x.shape[0], "Discriminator")

    def layer(module, inputs):
      if not self.spectral_norm:
        return module(inputs)
      sn = nn.SpectralNorm(module, collection_name=SPECTRAL_NORM_COLLECTION)
      return sn(inputs, update_stats=train)

    for i, width in enumerate(self.features):
      use_norm = self.batch_norm and i > 0
      conv = nn.Conv(
        width, (self.kernel_size,) * 2, strides=2, padding="SAME", use_bias=not use_norm
      )
      x = layer(conv, x)  # [B, H / 2**(i+1), W / 2**(i+1), width]
      if use_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=self.axis_name)(x)
      x = nn.leaky_relu(x, 0.2)
      if self.dropout_rate > 0:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    phi = x.reshape(x.shape[0], -1)  # [B, D]
    logits = layer(nn.Dense(1), phi)[:, 0]  # [B]
    if self.num_classes > 0:
      # Rows scaled like a dense kernel's columns (std 1/sqrt(D)), so that the projection term
      # starts at the size of psi(phi) rather than sqrt(D) times larger.
      embed = nn.Embed(
        self.num_classes,
        phi.shape[-1],
        embedding_init=nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=-1),
      )
      logits = logits + jnp.sum(layer(embed, labels) * phi, -1)  # [B]
    if self.class_head:
      if self.num_classes <= 0:
        raise ValueError("Discriminator(class_head=True) needs num_classes > 0")
      return logits, layer(nn.Dense(self.num_classes, name="class_head"), phi)  # [B], [B, K]
    return logits


# 32x32x3 (CIFAR-10): 4x4 -> 8x8 -> 16x16 -> 32x32.
CIFAR_GENERATOR = functools.partial(Generator, output_shape=(32, 32, 3), features=(512, 256, 128))
CIFAR_DISCRIMINATOR = functools.partial(Discriminator, features=(128, 256, 512))

# Registered by name (jaxvision.models). `output_shape`, `num_classes` and `axis_name` are data
# and strategy attributes: the trainer passes them (num_classes only for a conditional GAN).
# Generators are documented on latents [100], discriminators unconditional.
PRESETS = {
  "dcgan_generator": Preset(Generator, {}, (100,), 1_781_505, {"output_shape": (28, 28, 1)}),
  "dcgan_discriminator": Preset(Discriminator, {}, (28, 28, 1), 138_689, {}),
  "dcgan_generator_cifar": Preset(
    Generator, dict(features=(512, 256, 128)), (100,), 3_448_579, {"output_shape": (32, 32, 3)}
  ),
  "dcgan_discriminator_cifar": Preset(
    Discriminator, dict(features=(128, 256, 512)), (32, 32, 3), 2_637_441, {}
  ),
}
