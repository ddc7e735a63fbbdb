"""DCGAN (Radford et al. 2015): a generator of transposed convs and a strided-conv discriminator.

The generator projects z with a dense layer to a small feature map, doubles its size with each
stride-2 transposed conv (batch norm + ReLU between), and ends in tanh; outputs are in [-1, 1], so
the data are normalised "symmetric". The discriminator halves the size with each stride-2 conv
(LeakyReLU 0.2, batch norm on all but the first), no pooling, and a dense logit. 28x28x1 (the
MNIST family) uses two upsamplings from 7x7, 32x32x3 (CIFAR-10) three from 4x4.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.models.layers import conv_transpose_subpixel

CONV_TRANSPOSE_IMPLS = ("auto", "xla", "subpixel")


def resolve_conv_transpose_impl(impl: str) -> str:
  """'auto' is the sub-pixel form on XLA:CPU (5-7x faster there) and XLA's own elsewhere."""
  if impl not in CONV_TRANSPOSE_IMPLS:
    raise ValueError(f"unknown conv_transpose_impl {impl!r}; expected {CONV_TRANSPOSE_IMPLS}")
  if impl == "auto":
    return "subpixel" if jax.default_backend() == "cpu" else "xla"
  return impl


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


class Generator(nn.Module):
  """Maps latents z [B, z_dim] to images [B, H, W, C] in [-1, 1].

  Attributes:
    output_shape: (H, W, C); H and W must be divisible by 2 ** len(features).
    features: channels of the projected map and after each upsampling but the last.
    kernel_size: of the transposed convs.
    batch_norm: after the projection and every upsampling but the last.
    conv_transpose_impl: "auto", "xla" or "subpixel" (same values; a speed choice).
  """

  output_shape: Sequence[int] = (28, 28, 1)
  features: Sequence[int] = (256, 128)
  kernel_size: int = 4
  batch_norm: bool = True
  conv_transpose_impl: str = "auto"

  @nn.compact
  def __call__(self, z, *, train: bool):
    h, w, c = self.output_shape
    scale = 2 ** len(self.features)
    if h % scale or w % scale:
      raise ValueError(f"output {h}x{w} is not divisible by 2**{len(self.features)}")
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
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
  """Maps images [B, H, W, C] to real-vs-fake logits [B].

  Attributes:
    features: channels of each stride-2 conv.
    kernel_size: of the convs.
    batch_norm: after every conv but the first.
  """

  features: Sequence[int] = (64, 128)
  kernel_size: int = 4
  batch_norm: bool = True

  @nn.compact
  def __call__(self, x, *, train: bool):
    for i, width in enumerate(self.features):
      use_norm = self.batch_norm and i > 0
      x = nn.Conv(width, (self.kernel_size,) * 2, strides=2, padding="SAME", use_bias=not use_norm)(
        x
      )  # [B, H / 2**(i+1), W / 2**(i+1), width]
      if use_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
      x = nn.leaky_relu(x, 0.2)
    return nn.Dense(1)(x.reshape(x.shape[0], -1))[:, 0]


# 32x32x3 (CIFAR-10): 4x4 -> 8x8 -> 16x16 -> 32x32.
CIFAR_GENERATOR = functools.partial(Generator, output_shape=(32, 32, 3), features=(512, 256, 128))
CIFAR_DISCRIMINATOR = functools.partial(Discriminator, features=(128, 256, 512))
