"""Video models: a convolutional LSTM cell, a next-frame predictor and a clip classifier.

`ConvLSTMCell` (Shi et al. 2015) is an LSTM whose gates are convolutions, so its state keeps a
spatial layout [B, h, w, F]. Both models run it over time inside `nn.scan` (directly or through
`nn.RNN`): the compiled program has the same size for any clip length.

`FramePredictor` encodes each frame to 1/2^len(encoder) resolution with strided convolutions,
runs stacked ConvLSTMs there, and decodes the top state with sub-pixel convolutions (a conv to
4x the channels, then depth-to-space, U-Net skips from the encoder) to logits of the next frame.
One scanned step serves both modes: its input frame is the true frame (teacher forcing, and the
context in free running) or the sigmoid of its own previous output (free running).

With `output="cdna"` the predictor moves pixels instead of drawing them (Finn et al. 2016,
"Unsupervised learning for physical interaction through video prediction": convolutional
dynamic neural advection): a dense head on the top ConvLSTM state predicts `cdna_kernels`
normalised `cdna_size` x `cdna_size` kernels per clip, each applied to the step's input frame
(every displacement up to `cdna_size // 2` pixels), and the decoder predicts a generated frame and
softmax masks that composite it with the transformed frames. A digit carried by a kernel that
settles on one displacement stays as sharp as it was observed, where drawn frames blur over a
free-running rollout. The composite probability p is returned as the logits log(p' / (1 - p'))
of p' = eps + (1 - 2 eps) p, so the trainers and evaluators read both outputs alike.

Every convolution is `layers.Conv`, whose gradients stay channels-last on CPU (XLA:CPU runs
other layouts inside a scan's backward pass on a slow path: a predictor step was 13x slower).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.models import layers
from jaxvision.models.layers import Conv
from jaxvision.models.preset import Preset


class ConvLSTMCell(nn.RNNCellBase):
  """A convolutional LSTM cell with one fused gate convolution and a forget-gate bias init.

  Attributes:
    features: channels of the hidden and cell states.
    kernel_size: side of the square gate convolution (over the input and the hidden state).
    forget_bias: initial bias of the forget gate (1 keeps memory open early in training, as
      `rnn.LSTMCell`; the other gates' biases start at 0).
    conv_impl: see `Conv`.
    layer_norm: normalise each gate's pre-activations, and the cell state before its tanh, over
      the whole map (positions and channels, per example, as PredRNN's cells do; Ba et al. 2016's
      layer-normalised LSTM): the gates cannot saturate, however large the inputs grow in
      training. (Per position, the empty background's constant pre-activations would have zero
      variance, and the normalisation's 1/sqrt(eps) slope explodes gradients through time.)
  """

  features: int
  kernel_size: int = 3
  forget_bias: float = 1.0
  conv_impl: str = "auto"
  layer_norm: bool = False

  @nn.compact
  def __call__(self, carry, inputs):
    """One step: carry (c, h) [B, h, w, F] each, inputs [B, h, w, C] -> (new carry, h)."""
    c, h = carry
    n = self.features
    bias_init = layers.forget_bias_init(n, self.forget_bias)
    # One conv over [x, h] equals the sum of the input and hidden convolutions, in one matmul.
    gates = Conv(
      4 * n,
      self.kernel_size,
      impl=self.conv_impl,
      bias_init=nn.initializers.zeros_init() if self.layer_norm else bias_init,
      name="gates",
    )
    z = gates(jnp.concatenate([inputs, h], axis=-1))  # [B, h, w, 4F]: i, f, g, o gates
    if not self.layer_norm:
      c, h = layers.lstm_update(z, c)
      return (c, h), h
    # Per gate: normalised over the map, then its own scale and bias per channel (the forget
    # gate's bias starts at forget_bias, as the unnormalised cell's does).
    z = z.reshape(*z.shape[:-1], 4, n)
    gate_bias = lambda key, shape, dtype=jnp.float32: bias_init(key, (4 * n,), dtype).reshape(shape)
    space = tuple(range(1, z.ndim - 2))  # [B, h, w, 4, F]: over h, w and F, per gate
    z = nn.LayerNorm(
      reduction_axes=(*space, -1), feature_axes=(-2, -1), bias_init=gate_bias, name="gate_norm"
    )(z)
    cell_norm = nn.LayerNorm(reduction_axes=(*space, -1), name="cell_norm")
    c, h = layers.lstm_update(z.reshape(*z.shape[:-2], 4 * n), c, cell_norm)
    return (c, h), h

  def initialize_carry(self, rng, input_shape):
    """Zero (c, h) [*input_shape[:-1], features] for inputs of `input_shape` [B, h, w, C]."""
    del rng
    return layers.zero_carry(input_shape, self.features)

  @property
  def num_feature_axes(self) -> int:
    return 3  # (h, w, C): `nn.RNN` then scans axis 1 of [B, T, h, w, C]


def depth_to_space(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """[B, h, w, f*f*C] -> [B, f*h, f*w, C] (pixel shuffle)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, factor, factor, c // (factor * factor))
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * factor, w * factor, -1)


class FrameEncoder(nn.Module):
  """Strided 3x3 convolutions (ReLU), each halving the resolution.

  Attributes:
    features: channels of each stage.
    conv_impl: see `Conv`.
  """

  features: Sequence[int] = (16, 32)
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x):
    """Maps frames x [B, H, W, C] to (top [B, H/s, W/s, F], every stage's output), s = 2^stages."""
    stages = []
    for width in self.features:
      x = nn.relu(Conv(width, 3, 2, self.conv_impl)(x))  # [B, H/2^i, W/2^i, width]
      stages.append(x)
    return x, stages


class FrameDecoder(nn.Module):
  """Sub-pixel upsampling back to frame resolution, with skips from the encoder's stages.

  Attributes:
    encoder: the encoder's `features` (the decoder mirrors them).
    channels: channels of the output frame.
    skip: concatenate each encoder stage's output before upsampling it (U-Net).
    conv_impl: see `Conv`.
  """

  encoder: Sequence[int]
  channels: int
  skip: bool = True
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, stages):
    """Maps x [B, H/s, W/s, F] (and the encoder's stages) to logits [B, H, W, channels]."""
    widths = [*self.encoder[:-1]][::-1] + [self.channels]
    for i, width in enumerate(widths):
      if self.skip:
        x = jnp.concatenate([x, stages[len(widths) - 1 - i]], axis=-1)
      x = depth_to_space(Conv(4 * width, 3, 1, self.conv_impl)(x), 2)  # [B, 2h, 2w, width]
      if i < len(widths) - 1:
        x = nn.relu(x)
    return x


OUTPUTS = ("pixels", "cdna")
CDNA_EPS = 1e-4  # the composite probability p is squeezed into [eps, 1 - eps] for its logits


def shifted(frames: jnp.ndarray, size: int) -> jnp.ndarray:
  """Every displacement of frames [B, H, W, C] within a size x size window, zeros shifted in.

  Returns:
    [B, H, W, C, size * size]: entry (dy, dx) (row-major, from (-r, -r), r = size // 2) holds
    frames[b, y + dy, x + dx, c] (zero outside the frame).
  """
  r = size // 2
  padded = jnp.pad(frames, ((0, 0), (r, r), (r, r), (0, 0)))
  h, w = frames.shape[1:3]
  windows = [padded[:, i : i + h, j : j + w] for i in range(size) for j in range(size)]
  return jnp.stack(windows, axis=-1)


def advect(frames: jnp.ndarray, kernels: jnp.ndarray) -> jnp.ndarray:
  """Per-clip kernels applied to frames: [B, H, W, C] x [B, K, size * size] -> [B, K, H, W, C].

  Written as a weighted sum of shifted frames (static slices and one contraction) rather than a
  grouped convolution, whose gradient inside a scan takes XLA:CPU's slow path (see `Conv`).
  """
  size = round(kernels.shape[-1] ** 0.5)
  return jnp.einsum("bhwcn,bkn->bkhwc", shifted(frames, size), kernels)


class CDNAHead(nn.Module):
  """Normalised advection kernels [B, K, size * size] from a recurrent state [B, h, w, F].

  Attributes:
    num_kernels: K.
    size: side of each kernel (odd): displacements up to size // 2 pixels.
    features: channels of the 1x1 reduction before the dense layer.
    conv_impl: see `Conv`.
  """

  num_kernels: int
  size: int
  features: int = 8
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, h):
    b = h.shape[0]
    x = Conv(self.features, 1, 1, self.conv_impl, name="reduce")(h).reshape(b, -1)
    n = self.size * self.size
    # Kernels start near the identity (the centre tap's logit 4 above the rest: 0.4 of the mass
    # at zero displacement for a 9x9 kernel), i.e. near the copy-last-frame prediction.
    centre = jnp.zeros(n).at[n // 2].set(4.0)
    bias_init = lambda key, shape, dtype=jnp.float32: jnp.tile(centre, shape[0] // n).astype(dtype)
    logits = nn.Dense(self.num_kernels * n, bias_init=bias_init)(x)
    return nn.softmax(logits.reshape(b, self.num_kernels, n), axis=-1)


class _PredictorStep(nn.Module):
  """One step of `FramePredictor`: an input frame (true or fed back) to next-frame logits."""

  encoder: Sequence[int]
  hidden: Sequence[int]
  kernel_size: int
  forget_bias: float
  skip: bool
  conv_impl: str
  output: str = "pixels"
  cdna_kernels: int = 2
  cdna_size: int = 9
  layer_norm: bool = False

  @nn.compact
  def __call__(self, carry, xs):
    cells, previous = carry  # previous: logits [B, H, W, C] of the last step
    frame, use_true = xs  # [B, H, W, C], a scalar bool
    x = jnp.where(use_true, frame, nn.sigmoid(previous))
    h, stages = FrameEncoder(self.encoder, self.conv_impl, name="encoder")(x)  # [B, h, w, F]
    new_cells = []
    for i, width in enumerate(self.hidden):
      cell = ConvLSTMCell(
        width,
        self.kernel_size,
        self.forget_bias,
        self.conv_impl,
        self.layer_norm,
        name=f"convlstm{i}",
      )
      state, h = cell(cells[i], h)  # h: [B, h, w, width]
      new_cells.append(state)
    channels = frame.shape[-1]
    extra = self.cdna_kernels + 1 if self.output == "cdna" else 0  # mask logits
    decoder = FrameDecoder(
      self.encoder, channels + extra, self.skip, self.conv_impl, name="decoder"
    )
    out = decoder(h, stages)  # [B, H, W, C (+ K + 1)]
    if self.output == "cdna":
      kernels = CDNAHead(self.cdna_kernels, self.cdna_size, conv_impl=self.conv_impl, name="cdna")(
        h
      )
      moved = advect(x, kernels)  # [B, K, H, W, C]
      masks = nn.softmax(out[..., channels:], axis=-1)  # [B, H, W, K + 1]
      p = masks[..., :1] * nn.sigmoid(out[..., :channels])
      p = p + jnp.einsum("bkhwc,bhwk->bhwc", moved, masks[..., 1:])
      p = CDNA_EPS + (1.0 - 2.0 * CDNA_EPS) * p
      out = jnp.log(p) - jnp.log1p(-p)  # logits of p
    return (tuple(new_cells), out), out


class FramePredictor(nn.Module):
  """Encoder -> stacked ConvLSTM -> decoder, predicting every frame from the ones before it.

  Attributes:
    encoder: channels of the strided encoder stages (resolution / 2 each).
    hidden: channels of the stacked ConvLSTM layers (at the encoder's resolution).
    kernel_size: side of the ConvLSTM gate convolutions.
    forget_bias: initial forget-gate bias of the ConvLSTM cells.
    skip: U-Net skips from the encoder stages to the decoder.
    conv_impl: "auto", "xla" or "nhwc": how convolution gradients are computed (see `Conv`).
    unroll: time steps per iteration of the scan loop (a speed knob; the program grows with it,
      never with the clip length).
    output: "pixels" (the decoder draws the next frame) or "cdna" (it composites the input frame
      moved by predicted kernels with a drawn frame; see the module).
    cdna_kernels: kernels per step of the "cdna" output.
    cdna_size: their side (odd): the largest displacement per frame is cdna_size // 2 pixels.
    layer_norm: layer-normalised ConvLSTM cells (see `ConvLSTMCell`).
  """

  encoder: Sequence[int] = (16, 32)
  hidden: Sequence[int] = (32, 32)
  kernel_size: int = 3
  forget_bias: float = 1.0
  skip: bool = True
  conv_impl: str = "auto"
  unroll: int = 1
  output: str = "pixels"
  cdna_kernels: int = 2
  cdna_size: int = 9
  layer_norm: bool = False

  @nn.compact
  def __call__(
    self, frames, *, train: bool, num_predict: int | None = None, teacher_forcing: bool = True
  ):
    """Predicts the last `num_predict` frames of clips `frames` [B, T, H, W, C].

    The context is `frames[:, :T - num_predict]`. With teacher forcing the true previous frame is
    the input of every step (one pass predicts every frame); free running feeds the sigmoid of
    its own previous prediction back after the context and never reads the frames it predicts.
    Both modes run the same T - 1 scanned steps (step t reads frame t and predicts frame t + 1).

    Args:
      frames: clips [B, T, H, W, C] in [0, 1]; H and W divisible by 2^len(encoder).
      train: unused (no dropout or batch norm); present for the trainers' common interface.
      num_predict: P, 1 <= P < T; None predicts every frame after the first (P = T - 1).
      teacher_forcing: feed true frames (training) or the model's own predictions (rollout).

    Returns:
      Logits [B, P, H, W, C] of frames T - P .. T - 1.
    """
    del train
    b, t, h, w, c = frames.shape
    num_predict = t - 1 if num_predict is None else num_predict
    if not 1 <= num_predict < t:
      raise ValueError(f"need 1 <= num_predict < T = {t}, got {num_predict}")
    scale = 2 ** len(self.encoder)
    if h % scale or w % scale:
      raise ValueError(f"frames {h}x{w} are not divisible by the encoder's stride {scale}")
    if self.output not in OUTPUTS:
      raise ValueError(f"unknown predictor output {self.output!r}; expected one of {OUTPUTS}")
    if self.output == "cdna" and (self.cdna_kernels < 1 or self.cdna_size % 2 == 0):
      raise ValueError(
        f"cdna needs cdna_kernels >= 1 and an odd cdna_size, got {self.cdna_kernels}, "
        f"{self.cdna_size}"
      )
    zeros = lambda width: jnp.zeros((b, h // scale, w // scale, width), frames.dtype)
    cells = tuple((zeros(width), zeros(width)) for width in self.hidden)  # (c, h) per layer
    previous = jnp.zeros((b, h, w, c), frames.dtype)
    inputs = jnp.moveaxis(frames[:, :-1], 1, 0)  # [T-1, B, H, W, C]: time-major for the scan
    context = t - num_predict
    use_true = jnp.arange(t - 1) < (t - 1 if teacher_forcing else context)  # [T-1]
    scan = nn.scan(
      _PredictorStep,
      variable_broadcast="params",
      split_rngs={"params": False},
      unroll=self.unroll,
    )
    step = scan(  # the step's attributes are the predictor's of the same names
      **{
        f.name: getattr(self, f.name)
        for f in dataclasses.fields(_PredictorStep)
        if f.name not in ("parent", "name")
      },
      name="step",
    )
    _, logits = step((cells, previous), (inputs, use_true))  # [T-1, B, H, W, C]
    return jnp.moveaxis(logits, 0, 1)[:, t - 1 - num_predict :]  # [B, P, H, W, C]


class VideoClassifier(nn.Module):
  """Per-frame encoder -> stacked ConvLSTM over time -> spatial mean of the last state -> logits.

  Attributes:
    num_classes: width of the output logits (from the data set).
    encoder: channels of the strided encoder stages (resolution / 2 each).
    hidden: channels of the stacked ConvLSTM layers.
    kernel_size: side of the ConvLSTM gate convolutions.
    forget_bias: initial forget-gate bias of the ConvLSTM cells.
    dense: hidden widths of the head (ReLU).
    conv_impl: "auto", "xla" or "nhwc": how convolution gradients are computed (see `Conv`).
    unroll: time steps per iteration of the scan loop.
  """

  num_classes: int
  encoder: Sequence[int] = (16, 32)
  hidden: Sequence[int] = (32,)
  kernel_size: int = 3
  forget_bias: float = 1.0
  dense: Sequence[int] = ()
  conv_impl: str = "auto"
  unroll: int = 1

  @nn.compact
  def __call__(self, frames, *, train: bool):
    """Maps clips [B, T, H, W, C] (T = 1 allowed: a single frame) to logits [B, num_classes]."""
    del train
    if not self.hidden:
      raise ValueError("VideoClassifier needs at least one ConvLSTM layer (hidden)")
    b, t = frames.shape[:2]
    # The encoder has no recurrence: run it on every frame at once.
    encoder = FrameEncoder(self.encoder, self.conv_impl, name="encoder")
    x, _ = encoder(frames.reshape(b * t, *frames.shape[2:]))  # [B*T, h, w, F]
    x = x.reshape(b, t, *x.shape[1:])  # [B, T, h, w, F]
    for i, width in enumerate(self.hidden):
      cell = ConvLSTMCell(
        width, self.kernel_size, self.forget_bias, self.conv_impl, name=f"convlstm{i}"
      )
      (_, last), x = nn.RNN(cell, return_carry=True, unroll=self.unroll)(x)  # x: [B, T, h, w, F]
    y = last.mean(axis=(1, 2))  # [B, F]
    for width in self.dense:
      y = nn.relu(nn.Dense(width)(y))
    return nn.Dense(self.num_classes)(y)  # [B, num_classes]


CLIP = (20, 64, 64, 1)  # Moving MNIST: [T, H, W, C]
PRESETS = {
  # Encoder 64 -> 16 (16, 32 channels), two ConvLSTM(32) layers, sub-pixel decoder with skips.
  "convlstm_predictor": Preset(FramePredictor, {}, CLIP, 190_596, {}),
  # Layer-normalised ConvLSTMs, moving the input frame by 2 predicted 9x9 kernels (CDNA),
  # composited with a drawn frame.
  "convlstm_cdna": Preset(
    FramePredictor, {"output": "cdna", "layer_norm": True}, CLIP, 526_906, {}
  ),
  # The same encoder, one ConvLSTM(32), mean-pooled last state; 4 orientation classes.
  "video_classifier": Preset(VideoClassifier, {}, CLIP, 78_788, {"num_classes": 4}),
}
