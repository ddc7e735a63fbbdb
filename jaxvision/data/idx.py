"""MNIST-format IDX files from a local directory (MNIST, Fashion-MNIST, KMNIST).

A split named `PREFIX` reads `PREFIX-images-idx3-ubyte[.gz]` and `PREFIX-labels-idx1-ubyte[.gz]`
(the original file names: "train" and "t10k"). A slice such as `t10k[:8000]` carves a
deterministic train/eval split out of a directory that holds only one split.
"""

from __future__ import annotations

import gzip
import os
import pathlib

import numpy as np

from jaxvision.data import base

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads one IDX file (optionally gzipped) into a numpy array of its stored shape."""
  path = pathlib.Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
    raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
  dtype, ndim = np.dtype(_DTYPES[data[2]]), data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
  offset = 4 + 4 * ndim
  expected = offset + int(np.prod(shape)) * dtype.itemsize
  if len(data) != expected:
    raise ValueError(f"{path}: {len(data)} bytes, but its header {shape} implies {expected}")
  return np.frombuffer(data, dtype, offset=offset).reshape(shape)


def _find(directory: pathlib.Path, prefix: str, kind: str) -> pathlib.Path:
  names = [f"{prefix}-{kind}", f"{prefix}-{kind}.gz"]
  for name in names:
    if (directory / name).is_file():
      return directory / name
  raise FileNotFoundError(f"no IDX file {' or '.join(names)} in {directory}")


def read_split(directory: str | os.PathLike, prefix: str) -> tuple[np.ndarray, np.ndarray]:
  """Returns raw (images [N, H, W, 1] uint8, labels [N] int32) of one IDX split."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise FileNotFoundError(
      f"IDX data directory {str(directory)!r} does not exist (config.data.data_dir; "
      "experiments read it from $JAXVISION_MNIST_DIR)"
    )
  images = read_idx(_find(directory, prefix, "images-idx3-ubyte"))
  labels = read_idx(_find(directory, prefix, "labels-idx1-ubyte"))
  if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
    raise ValueError(
      f"{directory}/{prefix}: images {images.shape} and labels {labels.shape} do not match"
    )
  return images[..., None], labels.astype(np.int32)


def load(config) -> base.Dataset:
  """Loads `config.train_split` and `config.eval_split` from `config.data_dir`."""
  raw = {}
  for split in (config.train_split, config.eval_split):
    prefix, _ = base.parse_split(split)
    if prefix not in raw:
      raw[prefix] = read_split(config.data_dir, prefix)
  base.check_disjoint(config.train_split, config.eval_split, {k: len(v[1]) for k, v in raw.items()})

  def take(split):
    prefix, sl = base.parse_split(split)
    images, labels = raw[prefix]
    return images[sl], labels[sl]

  train_x, train_y = take(config.train_split)
  eval_x, eval_y = take(config.eval_split)
  return base.normalized_dataset(
    config.name,
    train_x,
    train_y,
    eval_x,
    eval_y,
    mode=config.normalize,
    num_classes=int(max(train_y.max(), eval_y.max())) + 1,
    description=f"{config.name} (idx) {config.train_split} / {config.eval_split}",
  )
