"""The data contract every source meets: sources of examples, data sets, normalisation, splits.

A *source* is anything with `__len__` and `get(indices) -> batch`, where a batch is a dict of
numpy arrays with a leading example axis: `inputs` and `targets` of any shape (class ids [N] are
one kind of target; next frames [N, T, H, W, C] another). `get` is a pure function of the indices
(and the source's seed), so a batch is a pure function of (seed, step) and generated sources need
never hold their examples in memory.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

Batch = dict[str, np.ndarray]


class Source(Protocol):
  """Random access to examples: `get(indices)` returns a batch [len(indices), ...] per key."""

  def __len__(self) -> int: ...

  def get(self, indices: np.ndarray) -> Batch: ...


class ArraySource:
  """Examples held in memory as arrays with a common leading axis."""

  def __init__(self, **arrays: np.ndarray):
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f"arrays of a source differ in length: {lengths}")
    self.arrays = arrays

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def get(self, indices: np.ndarray) -> Batch:
    return {k: v[indices] for k, v in self.arrays.items()}

  def replace(self, **arrays: np.ndarray) -> ArraySource:
    return ArraySource(**{**self.arrays, **arrays})

  @property
  def inputs(self) -> np.ndarray:
    return self.arrays["inputs"]

  @property
  def targets(self) -> np.ndarray:
    return self.arrays["targets"]


class GeneratedSource:
  """Examples made on the fly: `make_example(seed, index) -> {key: array}` for each index.

  Nothing is held in memory, so a source can be larger than RAM (video clips); the same
  (seed, index) always gives the same example.
  """

  def __init__(self, make_example: Callable[[int, int], dict], num_examples: int, seed: int):
    if num_examples <= 0:
      raise ValueError(f"a generated source needs a positive size, got {num_examples}")
    self._make, self._num, self.seed = make_example, num_examples, seed

  def __len__(self) -> int:
    return self._num

  def get(self, indices: np.ndarray) -> Batch:
    examples = [self._make(self.seed, int(i)) for i in np.asarray(indices).reshape(-1)]
    return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A train and an eval source, with what a result table needs to say about them.

  `info` holds what a model, trainer or evaluator needs to know about the task, e.g.
  `num_classes` for classification (absent for tasks without classes) and `time_axes` (how many
  leading axes of an input are time, as a clip's frames: augmentation does not shift them).
  """

  name: str
  train: Any  # Source
  eval: Any  # Source
  description: str  # e.g. "mnist (idx) t10k[:8000] / t10k[8000:]"
  info: dict = dataclasses.field(default_factory=dict)

  @property
  def num_classes(self) -> int:
    if "num_classes" not in self.info:
      raise ValueError(f"data set {self.name!r} has no classes (info: {sorted(self.info)})")
    return int(self.info["num_classes"])

  @property
  def example(self) -> Batch:
    """The first training example as a batch of one (for shapes and model init)."""
    return self.train.get(np.arange(1))

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.example["inputs"].shape[1:])


NORMALIZATIONS = ("standardize", "unit", "symmetric", "none")


class MappedSource:
  """Another source's examples through `fn(batch, indices) -> batch` (a layout change, a
  relabelling), read by index like the source under it."""

  def __init__(self, source, fn: Callable[[Batch, np.ndarray], Batch]):
    self._source, self._fn = source, fn

  def __len__(self) -> int:
    return len(self._source)

  def get(self, indices: np.ndarray) -> Batch:
    return self._fn(self._source.get(indices), np.asarray(indices))


def chunks(source, key: str = "inputs", size: int = 5000):
  """`source`'s values of `key` in order, `size` examples at a time (nothing held whole)."""
  for start in range(0, len(source), size):
    yield source.get(np.arange(start, min(start + size, len(source))))[key]


def channel_stats(batches) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel (mean, standard deviation + 1e-6) as float32 over every example of `batches`
  (arrays [n, ..., C]), summed in float64: exact for 8-bit pixels, so the same numbers however
  the data are split (a whole split in memory, or streamed from a source read by index)."""
  count, total, squares = 0, 0.0, 0.0
  for x in batches:
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    count += x.size // x.shape[-1]
    total = total + x.sum(axes)
    squares = squares + np.square(x).sum(axes)
  mean = total / count
  std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
  return mean.astype(np.float32), (std + 1e-6).astype(np.float32)


def source_mean(source, key: str = "inputs") -> np.ndarray:
  """The mean example of `source` (e.g. the mean train image [H, W, C]), streamed, float32."""
  total, count = 0.0, 0
  for x in chunks(source, key):
    total, count = total + np.asarray(x, np.float64).sum(0), count + len(x)
  return (total / count).astype(np.float32)


class Normalizer:
  """Maps raw pixel values (0..255) to float32, with statistics fixed once from train images.

  Modes: "standardize" (zero mean, unit variance per channel, statistics from the raw train
  images, so that eval never leaks into them; `channel_stats`), "unit" ([0, 1]), "symmetric"
  ([-1, 1], a tanh generator's range), "none" (cast only). The statistics come from the raw
  train images [N, ..., C] in memory, or, for a source read by index, `stats` streamed from it.
  """

  def __init__(self, mode: str, train_raw: np.ndarray | None = None, *, stats=None):
    if mode not in NORMALIZATIONS:
      raise ValueError(f"unknown data.normalize {mode!r}; expected one of {NORMALIZATIONS}")
    self.mode = mode
    if mode == "standardize":
      self._mean, self._std = stats if stats is not None else channel_stats([train_raw])

  def __call__(self, x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    if self.mode == "unit":
      return x / 255.0
    if self.mode == "symmetric":
      return x / 127.5 - 1.0
    if self.mode == "standardize":
      return (x - self._mean) / self._std
    return x


def classification_dataset(
  name, train_x, train_y, eval_x, eval_y, *, num_classes: int, description: str
) -> Dataset:
  """A `Dataset` of in-memory (inputs, class ids) pairs."""
  return Dataset(
    name=name,
    train=ArraySource(inputs=train_x, targets=np.asarray(train_y, np.int32)),
    eval=ArraySource(inputs=eval_x, targets=np.asarray(eval_y, np.int32)),
    description=description,
    info={"num_classes": num_classes},
  )


def normalized_dataset(
  name, train_raw, train_labels, eval_raw, eval_labels, *, mode: str, num_classes: int, description
) -> Dataset:
  """A classification `Dataset` from raw images, both splits normalised with train statistics."""
  norm = Normalizer(mode, train_raw)
  return classification_dataset(
    name,
    norm(train_raw),
    train_labels,
    norm(eval_raw),
    eval_labels,
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
