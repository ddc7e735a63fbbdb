"""Any TFDS image-classification set (mnist, fashion_mnist, cifar10, ...) via `tfds.data_source`.

Each split is read by index through array_record random access (no TensorFlow, nothing held
whole): a batch decodes just its examples, and "standardize" statistics are streamed from the
train split once (`base.channel_stats`, the same numbers as from the split in memory). Nothing is
downloaded at run time: a set must already be prepared in `config.data_dir` (see the README;
preparing one needs the `prepare` extra).
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from jaxvision.data import base

DEFAULTS = dict(
  name="mnist",  # the TFDS name
  data_dir="",  # "" = TFDS's default data dir; the set must be prepared there
  train_split="train",
  eval_split="test",
  normalize="standardize",  # standardize | unit | symmetric | none
)


class TfdsSource:
  """One prepared TFDS split read by index: `get` decodes only the examples asked for."""

  def __init__(self, data_source, normalize: base.Normalizer | None = None):
    self._source = data_source
    self._normalize = normalize or base.Normalizer("none")
    self._targets = None

  def __len__(self) -> int:
    return len(self._source)

  def _raw(self, indices) -> tuple[np.ndarray, np.ndarray]:
    examples = [self._source[int(i)] for i in np.asarray(indices).reshape(-1)]
    images = np.stack([ex["image"] for ex in examples])  # [n, H, W, C] uint8
    return images, np.asarray([ex["label"] for ex in examples], np.int32)

  def get(self, indices: np.ndarray) -> base.Batch:
    images, labels = self._raw(indices)
    return {"inputs": self._normalize(images), "targets": labels}

  def raw_images(self, size: int = 5000):
    """The split's raw images in order, `size` at a time (for statistics)."""
    for start in range(0, len(self), size):
      yield self._raw(np.arange(start, min(start + size, len(self))))[0]

  @property
  def targets(self) -> np.ndarray:
    """Every label of the split [N] (read once, when first asked for)."""
    if self._targets is None:
      self._targets = np.concatenate(list(base.chunks(self, "targets")))
    return self._targets


def read_all(name: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
  """A whole split's raw images [N, H, W, C] and labels [N] (for a pool held in memory)."""
  source = TfdsSource(_open(name, split, data_dir))
  return source._raw(np.arange(len(source)))


def _open(name: str, split: str, data_dir: str | None):
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
  except Exception as e:  # tfds raises several types for "not prepared"/"unknown name"
    raise FileNotFoundError(
      f"TFDS data set {name!r} split {split!r} is not prepared in data_dir "
      f"{data_dir or tfds.core.constants.DATA_DIR!r} ({type(e).__name__}: {e}). Prepare it once "
      "on a machine with internet: pip install -e '.[prepare]' && "
      f"tfds build {name} --file_format=array_record --data_dir=DIR"
    ) from e


def load(config) -> base.Dataset:
  """Split `config.train_split` / `config.eval_split` of TFDS set `config.name`, read by index."""
  train = _open(config.name, config.train_split, config.data_dir)
  eval_ = _open(config.name, config.eval_split, config.data_dir)
  standardize = config.normalize == "standardize"
  stats = base.channel_stats(TfdsSource(train).raw_images()) if standardize else None
  normalize = base.Normalizer(config.normalize, stats=stats)
  num_classes = (
    tfds.builder(config.name, data_dir=config.data_dir or None).info.features["label"].num_classes
  )
  return base.Dataset(
    name=config.name,
    train=TfdsSource(train, normalize),
    eval=TfdsSource(eval_, normalize),
    description=f"{config.name} (tfds) {config.train_split} / {config.eval_split}",
    info={"num_classes": num_classes},
  )
