"""The in-memory data set every source returns, normalisation, and split-string parsing."""

from __future__ import annotations

import dataclasses
import re

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of a data set: `inputs` [N, ...] float32, `labels` [N] int32."""

  inputs: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    if len(self.inputs) != len(self.labels):
      raise ValueError(
        f"inputs and labels differ in length: {len(self.inputs)} vs {len(self.labels)}"
      )

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A train and an eval split, with what a result table needs to say about them."""

  name: str
  train: Split
  eval: Split
  num_classes: int
  description: str  # e.g. "mnist (idx) t10k[:8000] / t10k[8000:]"

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.train.inputs.shape[1:])


NORMALIZATIONS = ("standardize", "unit", "symmetric", "none")


class Normalizer:
  """Maps raw pixel values (0..255) to float32, with statistics fixed once from train images.

  Modes: "standardize" (zero mean, unit variance per channel, statistics from the raw train
  images, so that eval never leaks into them), "unit" ([0, 1]), "symmetric" ([-1, 1], a tanh
  generator's range), "none" (cast only).
  """

  def __init__(self, mode: str, train_raw: np.ndarray):
    if mode not in NORMALIZATIONS:
      raise ValueError(f"unknown data.normalize {mode!r}; expected one of {NORMALIZATIONS}")
    self.mode = mode
    if mode == "standardize":
      ref = train_raw.astype(np.float32)
      axes = tuple(range(ref.ndim - 1))
      self._mean, self._std = ref.mean(axis=axes), ref.std(axis=axes) + 1e-6

  def __call__(self, x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    if self.mode == "unit":
      return x / 255.0
    if self.mode == "symmetric":
      return x / 127.5 - 1.0
    if self.mode == "standardize":
      return (x - self._mean) / self._std
    return x


def normalized_dataset(
  name,
  train_raw,
  train_labels,
  eval_raw,
  eval_labels,
  *,
  mode: str,
  num_classes: int,
  description: str,
) -> Dataset:
  """A `Dataset` from raw images, both splits normalised with the train split's statistics."""
  norm = Normalizer(mode, train_raw)
  return Dataset(
    name=name,
    train=Split(norm(train_raw), train_labels),
    eval=Split(norm(eval_raw), eval_labels),
    num_classes=num_classes,
    description=description,
  )


_SPLIT_RE = re.compile(r"^(?P<name>[A-Za-z0-9_]+)(\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")


def parse_split(split: str) -> tuple[str, slice]:
  """Parses a TFDS-style split string: "train", "t10k[:8000]", "t10k[8000:]"."""
  m = _SPLIT_RE.match(split.strip())
  if m is None:
    raise ValueError(f"cannot parse split {split!r}; expected NAME or NAME[START:STOP]")
  start = int(m["start"]) if m["start"] else None
  stop = int(m["stop"]) if m["stop"] else None
  return m["name"], slice(start, stop)


def check_disjoint(train_split: str, eval_split: str, num_examples: dict[str, int]) -> None:
  """Raises if two slices of the same underlying split share examples."""
  (tn, ts), (en, es) = parse_split(train_split), parse_split(eval_split)
  if tn != en:
    return
  n = num_examples[tn]
  train_idx = set(range(n)[ts])
  if train_idx & set(range(n)[es]):
    raise ValueError(
      f"train split {train_split!r} and eval split {eval_split!r} overlap; evaluation on "
      "training examples would be meaningless"
    )
