"""U-Net (Ronneberger et al. 2015) for semantic segmentation: per-pixel class logits.

The encoder has one level per entry of `features`: `convs` 3x3 SAME convolutions (+ batch norm)
+ ReLU, then a 2x max pool before the next level; the last level is the bottleneck. The decoder
climbs back level by level: a 2x nearest-neighbour upsampling and a 3x3 convolution (cheaper on
XLA:CPU than a transposed convolution, and free of its checkerboard), concatenated with the
encoder's output of that level (the skip connection), then `convs` convolutions. A 1x1 convolution
gives the logits, at the input's resolution. Any depth: the input side must be divisible by
2 ** (len(features) - 1).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.models.layers import max_pool, upsample
from jaxvision.models.preset import Preset


class UNet(nn.Module):
  """Maps images [B, H, W, C] to per-pixel logits [B, H, W, num_classes].

  Attributes:
    num_classes: classes per pixel (background included).
    features: channels of each level, top (full resolution) to bottleneck; its length is the depth.
    convs: 3x3 convolutions per level, in the encoder and in the decoder.
    batch_norm: batch norm after every 3x3 convolution.
    dropout_rate: dropout at the bottleneck (0 disables it).
    axis_name: the device axis batch norm averages over under `pmap` (None under jit).
  """

  num_classes: int
  features: Sequence[int] = (8, 16, 32, 64, 128)
  convs: int = 2
  batch_norm: bool = True
  dropout_rate: float = 0.0
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    if x.ndim != 4:
      raise ValueError(f"UNet takes images [batch, height, width, channels], got {x.shape}")
    scale = 2 ** (len(self.features) - 1)
    if x.shape[1] % scale or x.shape[2] % scale:
      raise ValueError(
        f"UNet with {len(self.features)} levels needs sides divisible by {scale}, got {x.shape}"
      )
    norm = functools.partial(
      nn.BatchNorm, use_running_average=not train, momentum=0.9, axis_name=self.axis_name
    )

    def block(h, width):
      for _ in range(self.convs):
        h = nn.Conv(width, (3, 3), padding="SAME", use_bias=not self.batch_norm)(h)
        h = nn.relu(norm()(h) if self.batch_norm else h)
      return h

    skips = []
    for width in self.features[:-1]:
      x = block(x, width)
      skips.append(x)  # [B, H / 2^i, W / 2^i, width]
      x = max_pool(x, 2)
    x = block(x, self.features[-1])  # the bottleneck [B, H / scale, W / scale, C]
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    for width, skip in zip(reversed(self.features[:-1]), reversed(skips), strict=True):
      x = upsample(x)  # [B, 2 H', 2 W', C]
      x = nn.relu(nn.Conv(width, (3, 3), padding="SAME")(x))
      x = block(jnp.concatenate([x, skip], axis=-1), width)  # [B, H', W', width]
    return nn.Conv(self.num_classes, (1, 1))(x)  # [B, H, W, num_classes]


SCENE = (96, 96, 1)
PRESETS = {
  # Five levels (96 -> 6 at the bottleneck), 8-128 channels, batch norm: few channels where the
  # maps are large (a 2-core CPU's budget), a bottleneck that sees a whole 48-pixel digit.
  "unet": Preset(UNet, {}, SCENE, 540_899, {"num_classes": 11}),
  # Three levels, 8-32 channels: for tests.
  "unet_tiny": Preset(UNet, dict(features=(8, 16, 32)), SCENE, 32_771, {"num_classes": 11}),
}
