"""The seeds' (100, 1) binary sequence task, generated with a real long-range dependency.

Each sequence has `seq_length` steps of one channel. Every step holds a value v ~ U(0, 1); two
steps are *marked*, which the channel encodes by sign: a marked step holds -v instead of v. Both
marks lie in the first tenth of the sequence, and the label is 1 when the two marked values sum
to more than 1 (balanced: P = 1/2), as in Hochreiter & Schmidhuber's adding problem. The network
must combine the two values and carry the result across the remaining ~90% of the sequence,
whose values are pure distractors; neither marked value alone gives more than 75% accuracy.

Train and eval sets are generated from disjoint seeds; with `data.shuffle_labels` the train labels
are permuted (a control that must stay at chance).
"""

from __future__ import annotations

import numpy as np

from jaxvision.data import base

SEQ_LENGTH = 100
DEFAULTS = dict(num_train=10_000, num_eval=2_000, seq_length=SEQ_LENGTH)


def generate(num: int, seq_length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Returns inputs [num, seq_length, 1] float32 and labels [num] int32."""
  if seq_length < 20:
    raise ValueError(f"seq_length must be at least 20, got {seq_length}")
  x = rng.uniform(0.0, 1.0, (num, seq_length)).astype(np.float32)
  window = seq_length // 10
  first = rng.integers(0, window, num)
  second = (first + rng.integers(1, window, num)) % window  # a different step of the window
  rows = np.arange(num)
  labels = (x[rows, first] + x[rows, second] > 1.0).astype(np.int32)
  x[rows, first] *= -1.0
  x[rows, second] *= -1.0
  return x[..., None], labels


def load(config) -> base.Dataset:
  """`config.num_train` / `config.num_eval` sequences of `config.seq_length` (0: 100)."""
  if config.num_train <= 0 or config.num_eval <= 0:
    raise ValueError("marked_sum needs data.num_train and data.num_eval > 0")
  length = config.seq_length or SEQ_LENGTH
  train = generate(config.num_train, length, np.random.default_rng([0, 1]))
  eval_ = generate(config.num_eval, length, np.random.default_rng([0, 2]))
  return base.classification_dataset(
    "marked_sum",
    *train,
    *eval_,
    num_classes=2,
    description=f"marked_sum (generated) length {length}, {config.num_train} / {config.num_eval}",
  )
