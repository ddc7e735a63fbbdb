"""Recurrent sequence classifiers: stacked LSTM / GRU layers scanned over time.

Every layer is a `flax.linen.RNN`, i.e. an `nn.scan` of its cell over the time axis: the traced
and compiled program is the same size for any sequence length. Sequences may be padded; `lengths`
says how many steps of each are real, and padded steps change nothing (the carry is frozen past
each sequence's end, the backward direction reverses only the real part, and the mean head
ignores padding).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.models import layers
from jaxvision.models.preset import Preset

POOLINGS = ("last", "mean")


class LSTMCell(nn.RNNCellBase):
  """An LSTM cell with fused gates (as `nn.OptimizedLSTMCell`) and a forget-gate bias init.

  With the forget gate's bias at 0 (flax's and PyTorch's default) the gate starts near 0.5 and
  the cell state decays as 0.5^t, so a dependency across ~100 steps never gets a gradient;
  starting it at 1 (Keras's `unit_forget_bias`, Jozefowicz et al. 2015) keeps memory open.

  Attributes:
    features: hidden units.
    forget_bias: initial bias of the forget gate (the other gates' start at 0).
  """

  features: int
  forget_bias: float = 1.0

  @nn.compact
  def __call__(self, carry, inputs):
    c, h = carry
    n = self.features
    bias_init = layers.forget_bias_init(n, self.forget_bias)
    z = nn.Dense(4 * n, use_bias=False, name="input")(inputs) + nn.Dense(
      4 * n, bias_init=bias_init, kernel_init=nn.initializers.orthogonal(), name="hidden"
    )(h)  # [B, 4H]: input, forget, candidate, output
    c, h = layers.lstm_update(z, c)
    return (c, h), h

  def initialize_carry(self, rng, input_shape):
    del rng
    return layers.zero_carry(input_shape, self.features)

  @property
  def num_feature_axes(self) -> int:
    return 1


CELLS = {"lstm": LSTMCell, "gru": nn.GRUCell}


def _hidden(carry, cell: str) -> jnp.ndarray:
  """The hidden state [B, H] of a final carry ((c, h) for an LSTM, h for a GRU)."""
  return carry[1] if cell == "lstm" else carry


class RNNStack(nn.Module):
  """`num_layers` recurrent layers (optionally bidirectional) with dropout between them.

  Attributes:
    cell: "lstm" or "gru".
    hidden_size: units per direction.
    num_layers: stacked layers.
    bidirectional: run a reversed copy of each layer and concatenate the two.
    dropout_rate: dropout on the outputs of every layer but the last.
    unroll: time steps per iteration of the scan loop (a speed knob: the program grows with it,
      never with the sequence length).
    forget_bias: initial forget-gate bias of LSTM cells (see `LSTMCell`).
  """

  cell: str = "lstm"
  hidden_size: int = 64
  num_layers: int = 1
  bidirectional: bool = False
  dropout_rate: float = 0.0
  unroll: int = 1
  forget_bias: float = 1.0

  def _cell(self, name: str):
    if self.cell == "lstm":
      return LSTMCell(self.hidden_size, self.forget_bias, name=name)
    return CELLS[self.cell](self.hidden_size, name=name)

  @nn.compact
  def __call__(self, x, *, train: bool, lengths=None):
    """Runs the stack over x [B, T, F].

    Returns:
      (outputs [B, T, D], last [B, D]): every step's output of the top layer and its final hidden
      state (per direction, concatenated), where D = hidden_size * (2 if bidirectional else 1).
    """
    if self.cell not in CELLS:
      raise ValueError(f"unknown cell {self.cell!r}; expected one of {sorted(CELLS)}")
    if x.ndim != 3:
      raise ValueError(f"expected inputs [batch, time, features], got shape {x.shape}")
    make = functools.partial(nn.RNN, return_carry=True, unroll=self.unroll)
    last = None
    for i in range(self.num_layers):
      forward = make(self._cell(f"layer{i}_fwd"))
      if self.bidirectional:
        backward = make(self._cell(f"layer{i}_bwd"), reverse=True, keep_order=True)
        (carry_f, carry_b), x = nn.Bidirectional(forward, backward, return_carry=True)(
          x, seq_lengths=lengths
        )
        last = jnp.concatenate([_hidden(carry_f, self.cell), _hidden(carry_b, self.cell)], -1)
      else:
        carry, x = forward(x, seq_lengths=lengths)  # x: [B, T, H]
        last = _hidden(carry, self.cell)
      if i < self.num_layers - 1:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return x, last


STACK_FIELDS = (
  "cell",
  "hidden_size",
  "num_layers",
  "bidirectional",
  "dropout_rate",
  "unroll",
  "forget_bias",
)


def stack_of(module: nn.Module, name: str = "rnn") -> RNNStack:
  """The `RNNStack` that `module`'s attributes of the same names (`STACK_FIELDS`) describe."""
  return RNNStack(**{field: getattr(module, field) for field in STACK_FIELDS}, name=name)


class RNNClassifier(nn.Module):
  """An `RNNStack` and a dense head on its last state or its mean over (real) time steps.

  Attributes:
    num_classes: width of the output logits.
    pooling: "last" (final hidden state of each direction) or "mean" (over real steps).
    dense: hidden widths of the head (ReLU).
    Others: as `RNNStack`.
  """

  num_classes: int
  cell: str = "lstm"
  hidden_size: int = 64
  num_layers: int = 1
  bidirectional: bool = False
  dropout_rate: float = 0.0
  pooling: str = "last"
  dense: tuple[int, ...] = ()
  unroll: int = 1
  forget_bias: float = 1.0

  @nn.compact
  def __call__(self, x, *, train: bool, lengths=None):
    """Maps x [B, T, F] (and optional lengths [B]) to logits [B, num_classes]."""
    if self.pooling not in POOLINGS:
      raise ValueError(f"unknown pooling {self.pooling!r}; expected one of {POOLINGS}")
    outputs, last = stack_of(self)(x, train=train, lengths=lengths)
    if self.pooling == "last":
      h = last  # [B, D]
    else:
      steps = jnp.arange(x.shape[1])[None, :]  # [1, T]
      real = steps < (x.shape[1] if lengths is None else lengths[:, None])  # [B, T]
      h = (outputs * real[..., None]).sum(1) / real.sum(1, keepdims=True)  # [B, D]
    for width in self.dense:
      h = nn.relu(nn.Dense(width)(nn.Dropout(self.dropout_rate, deterministic=not train)(h)))
    return nn.Dense(self.num_classes)(h)


PRESETS = {
  "lstm": Preset(RNNClassifier, dict(cell="lstm"), (40, 1), 17_546),
  "gru": Preset(RNNClassifier, dict(cell="gru"), (40, 1), 13_386),
  # The seeds' RNN: three stacked LSTM(64) layers over a (100, 1) sequence, binary output.
  "seed_lstm": Preset(
    RNNClassifier,
    dict(cell="lstm", hidden_size=64, num_layers=3),
    (100, 1),
    83_074,
    {"num_classes": 2},
  ),
}
