"""Convolutional classifiers: the seeds' CNN A and CNN B, and a 1-D CNN for MNIST-1D.

One module, `ConvNet`, covers all of them: its spatial rank (1-D sequences or 2-D images) is the
length of `kernel_size`; the named variants are presets (`PRESETS`, registered by name in
`jaxvision.models`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.models.layers import max_pool
from jaxvision.models.preset import Preset


class ConvNet(nn.Module):
  """Conv (+BN) + ReLU (+ max pool) blocks, then a dense head.

  Attributes:
    num_classes: width of the output logits.
    features: output channels of each conv block.
    pool: whether each conv block ends in a `pool_window` max pool; one entry per block.
    dense: widths of the hidden dense layers of the head.
    kernel_size: conv kernel; its length sets the spatial rank (1 for sequences, 2 for images).
    padding: "VALID" (the seeds' Keras default) or "SAME".
    pool_window: window and stride of the max pools.
    batch_norm: batch norm after every conv and hidden dense layer.
    dropout_rate: dropout before every dense layer (0 disables it).
    axis_name: the device axis batch norm averages its statistics over under `pmap` (set by the
      trainer from the parallel strategy; None under jit, where a step sees the global batch).
  """

  num_classes: int
  features: Sequence[int] = (32, 64, 64)
  pool: Sequence[bool] = (True, True, False)
  dense: Sequence[int] = (64,)
  kernel_size: Sequence[int] = (3, 3)
  padding: str = "VALID"
  pool_window: int = 2
  batch_norm: bool = False
  dropout_rate: float = 0.0
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool, return_features: bool = False):
    """Maps inputs [B, *spatial, C] to logits [B, num_classes].

    With `return_features`, returns (logits, features [B, D]): the input of the output layer,
    which GAN metrics (FID, KID) use as their feature space.
    """
    if len(self.pool) != len(self.features):
      raise ValueError(f"pool {self.pool} needs one entry per conv block {self.features}")
    if x.ndim != len(self.kernel_size) + 2:
      raise ValueError(
        f"input of shape {x.shape} does not fit a {len(self.kernel_size)}-D ConvNet; "
        f"expected [batch, {len(self.kernel_size)} spatial axes, channels]"
      )
    norm = functools.partial(
      nn.BatchNorm, use_running_average=not train, momentum=0.9, axis_name=self.axis_name
    )
    for width, pool in zip(self.features, self.pool, strict=True):
      x = nn.Conv(
        width, tuple(self.kernel_size), padding=self.padding, use_bias=not self.batch_norm
      )(x)
      if self.batch_norm:
        x = norm()(x)
      x = nn.relu(x)
      if pool:
        x = max_pool(x, self.pool_window)  # [B, *spatial // window, C]
    x = x.reshape(x.shape[0], -1)  # [B, features]
    for width in self.dense:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.Dense(width, use_bias=not self.batch_norm)(x)
      if self.batch_norm:
        x = norm()(x)
      x = nn.relu(x)
    features = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes)(x)  # [B, num_classes]
    return (logits, features) if return_features else logits


MNIST = (28, 28, 1)
PRESETS = {
  # Seed CNN A: Conv32-pool-Conv64-pool-Conv64-Dense64-Dense10, 3x3 VALID convs.
  "cnn_a": Preset(
    ConvNet, dict(features=(32, 64, 64), pool=(True, True, False), dense=(64,)), MNIST, 93_322
  ),
  # Seed CNN B: Conv32-pool-Conv64-pool-Dense128-Dense10.
  "cnn_b": Preset(
    ConvNet, dict(features=(32, 64), pool=(True, True), dense=(128,)), MNIST, 225_034
  ),
  # CNN A with batch norm after every conv and hidden dense layer.
  "cnn_a_bn": Preset(
    ConvNet,
    dict(features=(32, 64, 64), pool=(True, True, False), dense=(64,), batch_norm=True),
    MNIST,
    93_546,
  ),
  # 1-D CNN for MNIST-1D (length 40): four SAME conv blocks, three 2x pools, one dense layer.
  "cnn_1d": Preset(
    ConvNet,
    dict(
      features=(64, 64, 64, 64),
      pool=(True, True, True, False),
      dense=(128,),
      kernel_size=(5,),
      padding="SAME",
    ),
    (40, 1),
    104_394,
  ),
  # The class defaults (CNN A's layers); experiments set what they change.
  "convnet": Preset(ConvNet, {}, MNIST, 93_322),
}
