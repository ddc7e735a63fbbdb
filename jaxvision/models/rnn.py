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

CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}
POOLINGS = ("last", "mean")


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
  """

  cell: str = "lstm"
  hidden_size: int = 64
  num_layers: int = 1
  bidirectional: bool = False
  dropout_rate: float = 0.0
  unroll: int = 1

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
      forward = make(CELLS[self.cell](self.hidden_size, name=f"layer{i}_fwd"))
      if self.bidirectional:
        backward = make(
          CELLS[self.cell](self.hidden_size, name=f"layer{i}_bwd"), reverse=True, keep_order=True
        )
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

  @nn.compact
  def __call__(self, x, *, train: bool, lengths=None):
    """Maps x [B, T, F] (and optional lengths [B]) to logits [B, num_classes]."""
    if self.pooling not in POOLINGS:
      raise ValueError(f"unknown pooling {self.pooling!r}; expected one of {POOLINGS}")
    outputs, last = RNNStack(
      self.cell,
      self.hidden_size,
      self.num_layers,
      self.bidirectional,
      self.dropout_rate,
      self.unroll,
      name="rnn",
    )(x, train=train, lengths=lengths)
    if self.pooling == "last":
      h = last  # [B, D]
    else:
      steps = jnp.arange(x.shape[1])[None, :]  # [1, T]
      real = steps < (x.shape[1] if lengths is None else lengths[:, None])  # [B, T]
      h = (outputs * real[..., None]).sum(1) / real.sum(1, keepdims=True)  # [B, D]
    for width in self.dense:
      h = nn.relu(nn.Dense(width)(nn.Dropout(self.dropout_rate, deterministic=not train)(h)))
    return nn.Dense(self.num_classes)(h)


LSTM = functools.partial(RNNClassifier, cell="lstm")
GRU = functools.partial(RNNClassifier, cell="gru")
# The seeds' RNN: three stacked LSTM(64) layers over a (100, 1) sequence, binary output.
SEED_LSTM = functools.partial(RNNClassifier, cell="lstm", hidden_size=64, num_layers=3)
