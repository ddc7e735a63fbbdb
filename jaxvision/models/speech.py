"""Speech recognition: a convolutional front end and a bidirectional RNN, per-frame CTC logits.

`SpeechRecognizer` reads log-mel frames [B, T, F] with their real lengths [B]. Each front-end
layer is a 2-D convolution over (time, frequency) with stride 2 in both (so time is downsampled
by 2^len(conv_features)) and a ReLU; the bands and channels of each remaining frame are then
read by the scanned `RNNStack` (`jaxvision.models.rnn`), and a dense layer gives every frame's
logits over the classes (a CTC blank at 0 and the words). The front end is narrow at full
resolution (8, 16, 32 channels by default): XLA:CPU runs 2-D convolution gradients slowly, and
32 channels in every layer made it cost as much as two BiLSTM layers of 128.

Padding changes nothing: the convolutions pad each side by half their kernel explicitly (an odd
kernel), so output frame j always reads input frames 2j - k//2 .. 2j + k//2 whatever the array's
length (`padding="SAME"` would shift with its parity), and the input's and each layer's frames
past the real ones are zeroed, as an unpadded utterance's zero padding would be; the RNN reads
only the real frames (`lengths`). A padded and an unpadded utterance so give the same logits on
the real frames.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.models.preset import Preset
from jaxvision.models.rnn import stack_of


def output_lengths(lengths, num_layers: int):
  """Real frames after `num_layers` stride-2 layers: ceil(length / 2) per layer."""
  for _ in range(num_layers):
    lengths = (lengths + 1) // 2
  return lengths


class SpeechRecognizer(nn.Module):
  """Conv front end + stacked (bi)directional RNN + a dense layer over the classes.

  Attributes:
    num_classes: output classes per frame (for CTC: the blank and the words).
    conv_features: channels of each stride-2 convolution (time and frequency).
    kernel_size: odd side of the convolutions' square kernels.
    cell, hidden_size, num_layers, bidirectional, dropout_rate, unroll, forget_bias: the
      `RNNStack`'s.
  """

  num_classes: int
  conv_features: tuple[int, ...] = (8, 16, 32)
  kernel_size: int = 3
  cell: str = "lstm"
  hidden_size: int = 128
  num_layers: int = 2
  bidirectional: bool = True
  dropout_rate: float = 0.0
  unroll: int = 1
  forget_bias: float = 1.0

  @nn.compact
  def __call__(self, x, *, train: bool, lengths=None):
    """Maps frames x [B, T, F] (real lengths [B], default T) to (logits [B, T', num_classes],
    paddings [B, T']: 1.0 on the frames past each utterance's real ones), T' = T / 2^layers
    rounded up."""
    if x.ndim != 3:
      raise ValueError(f"expected features [batch, time, bands], got shape {x.shape}")
    if self.kernel_size % 2 != 1:
      raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
    if lengths is None:
      lengths = jnp.full((x.shape[0],), x.shape[1], jnp.int32)
    half = self.kernel_size // 2
    real = jnp.arange(x.shape[1])[None, :] < lengths[:, None]  # [B, T]
    h = (x * real[..., None])[..., None]  # [B, T, F, 1], whatever the padding held
    for features in self.conv_features:
      h = nn.Conv(
        features,
        (self.kernel_size, self.kernel_size),
        strides=(2, 2),
        padding=((half, half), (half, half)),
      )(h)
      h = nn.relu(h)  # [B, T / 2, F / 2, C]
      lengths = output_lengths(lengths, 1)
      real = jnp.arange(h.shape[1])[None, :] < lengths[:, None]  # [B, T']
      h = h * real[:, :, None, None]
    h = h.reshape(*h.shape[:2], -1)  # [B, T', F' * C]
    outputs, _ = stack_of(self)(h, train=train, lengths=lengths)  # [B, T', D]
    logits = nn.Dense(self.num_classes, name="head")(outputs)  # [B, T', K]
    paddings = (jnp.arange(h.shape[1])[None, :] >= lengths[:, None]).astype(jnp.float32)
    return logits, paddings


PRESETS = {
  # 40 log-mel bands -> 3x3 stride-2 convs of 8, 16, 32 channels (time / 8) -> 2 BiLSTM(128)
  # -> the CTC blank + 10 digit words.
  "speech_bilstm": Preset(SpeechRecognizer, {}, (200, 40), 698_891, {"num_classes": 11}),
  "speech_bigru": Preset(
    SpeechRecognizer, dict(cell="gru"), (200, 40), 526_859, {"num_classes": 11}
  ),
}
