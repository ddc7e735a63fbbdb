"""Any TFDS image-classification set (mnist, fashion_mnist, cifar10, ...) via `tfds.data_source`.

Reading goes through array_record random access and needs no TensorFlow. Nothing is downloaded
at run time: a set must already be prepared in `config.data_dir` (see the README; preparing one
needs the `prepare` extra).
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


def _read(name: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
  except Exception as e:  # tfds raises several types for "not prepared"/"unknown name"
    raise FileNotFoundError(
      f"TFDS data set {name!r} split {split!r} is not prepared in data_dir "
      f"{data_dir or tfds.core.constants.DATA_DIR!r} ({type(e).__name__}: {e}). Prepare it once "
      "on a machine with internet: pip install -e '.[prepare]' && "
      f"tfds build {name} --file_format=array_record --data_dir=DIR"
    ) from e
  examples = [source[i] for i in range(len(source))]
  images = np.stack([ex["image"] for ex in examples])
  labels = np.asarray([ex["label"] for ex in examples], np.int32)
  return images, labels


def load(config) -> base.Dataset:
  """Loads `config.train_split` / `config.eval_split` of TFDS set `config.name`."""
  train_x, train_y = _read(config.name, config.train_split, config.data_dir)
  eval_x, eval_y = _read(config.name, config.eval_split, config.data_dir)
  num_classes = (
    tfds.builder(config.name, data_dir=config.data_dir or None).info.features["label"].num_classes
  )
  return base.normalized_dataset(
    config.name,
    train_x,
    train_y,
    eval_x,
    eval_y,
    mode=config.normalize,
    num_classes=num_classes,
    description=f"{config.name} (tfds) {config.train_split} / {config.eval_split}",
  )
