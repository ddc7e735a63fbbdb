"""An anchor-free CenterNet-style detector (Zhou et al. 2019, "Objects as Points").

`CenterNet` maps images [B, H, W, C] to three maps at stride 4 (`STRIDE`), each cell a candidate
object centre: class heatmap logits [B, H/4, W/4, num_classes], box sizes [.., 2] (width, height
in output cells) and sub-cell centre offsets [.., 2] (x, y). Its backbone is a compact U-Net: a
stride-2 stem, one stage per entry of `features` (each halving the resolution with a strided
convolution, then `depth` - 1 more convolutions), and a decoder that upsamples (nearest
neighbour) from the deepest stage back to stride 4, concatenating the encoder's stage of the same
resolution at each step. Each head is a 3x3 convolution of `head_features` channels and a 1x1
output; the heatmap's bias starts at -2.19 (a prior of 0.1 per cell), as in CenterNet, so the
focal loss starts small. Decoding (peaks, boxes) and losses are the Task's
(`jaxvision.tasks.detection`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.models.layers import upsample
from jaxvision.models.preset import Preset

STRIDE = 4  # input pixels per output cell of every head
NORMS = ("batch", "group", "none")
HEATMAP_BIAS = -2.19  # log(0.1 / 0.9): CenterNet's prior of an object centre per cell


class CenterNet(nn.Module):
  """Encoder-decoder backbone and CenterNet heads (see the module docstring).

  Attributes:
    num_classes: heatmap channels (from the data set).
    features: channels of the stages at strides 2, 4, 8, ...; at least two (the output stride
      4 is the second stage's resolution), a deeper list sees more context.
    depth: 3x3 convolutions per stage (the first of them strided).
    head_features: channels of each head's hidden 3x3 convolution.
    norm: "batch" (statistics averaged over `axis_name` under pmap), "group" (8 groups, or
      fewer when a width is smaller) or "none", after every backbone convolution.
    axis_name: the device axis batch norm averages its statistics over under `pmap` (set by the
      trainer from the parallel strategy; None under jit).
  """

  num_classes: int
  features: Sequence[int] = (16, 32, 64, 96)
  depth: int = 2
  head_features: int = 32
  norm: str = "batch"
  axis_name: str | None = None

  def _norm(self, x, train: bool):
    if self.norm == "batch":
      return nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=self.axis_name)(x)
    if self.norm == "group":
      return nn.GroupNorm(num_groups=min(8, x.shape[-1]))(x)
    return x

  def _conv(self, x, width: int, train: bool, strides: int = 1):
    x = nn.Conv(width, (3, 3), (strides, strides), padding="SAME", use_bias=self.norm == "none")(x)
    return nn.relu(self._norm(x, train))

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> dict:
    """Maps images [B, H, W, C] (H, W multiples of 2^len(features)) to {"heatmap": logits
    [B, H/4, W/4, num_classes], "size": [B, H/4, W/4, 2] (w, h in output cells), "offset":
    [B, H/4, W/4, 2] (x, y in cells)}."""
    if self.norm not in NORMS:
      raise ValueError(f"unknown norm {self.norm!r}; expected one of {NORMS}")
    if len(self.features) < 2 or self.depth < 1:
      raise ValueError(f"features {self.features} needs >= 2 stages and depth {self.depth} >= 1")
    factor = 2 ** len(self.features)
    if x.ndim != 4 or x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(f"CenterNet needs images [B, H, W, C] with H, W multiples of {factor}")
    skips = []
    for width in self.features:  # stage i at stride 2^(i+1)
      x = self._conv(x, width, train, strides=2)
      for _ in range(self.depth - 1):
        x = self._conv(x, width, train)
      skips.append(x)
    for skip in reversed(skips[1:-1]):  # back up to stride 4
      x = jnp.concatenate([upsample(x), skip], axis=-1)  # [B, h, w, C + C_skip]
      x = self._conv(x, skip.shape[-1], train)
    head = functools.partial(self._head, x)
    return {
      "heatmap": head(self.num_classes, "heatmap", HEATMAP_BIAS),
      "size": head(2, "size"),
      "offset": head(2, "offset"),
    }

  def _head(self, x, width: int, name: str, bias: float = 0.0):
    y = nn.relu(nn.Conv(self.head_features, (3, 3), padding="SAME", name=f"{name}_hidden")(x))
    bias_init = nn.initializers.constant(bias)
    return nn.Conv(width, (1, 1), bias_init=bias_init, name=name)(y)  # [B, h, w, width]


SCENE = (96, 96, 1)
PRESETS = {
  # The experiment's detector: stages at strides 2-16 of 16/32/64/96 channels, batch norm.
  "centernet": Preset(CenterNet, {}, SCENE, 358_846),
  # Half as wide again (24/48/96/128, heads 48): 2.2x the compute.
  "centernet_wide": Preset(
    CenterNet, dict(features=(24, 48, 96, 128), head_features=48), SCENE, 739_222
  ),
  # A tiny one for tests: two stages (strides 2 and 4) of 8/16 channels, group norm.
  "centernet_tiny": Preset(
    CenterNet, dict(features=(8, 16), depth=1, head_features=8, norm="group"), SCENE, 4_878
  ),
}
