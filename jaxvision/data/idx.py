"""MNIST-format IDX files from a local directory (MNIST, Fashion-MNIST, KMNIST).

A split named `PREFIX` reads `PREFIX-images-idx3-ubyte[.gz]` and `PREFIX-labels-idx1-ubyte[.gz]`
(the original file names: "train" and "t10k"). A slice such as `t10k[:8000]` carves a
deterministic train/eval split out of a directory that holds only one split, and `num_folds` > 0
makes K-fold cross-validation of one split: fold k evaluates on its k-th contiguous block and
trains on the rest (offline MNIST: 5 folds of 2,000 images; fold 4 is t10k[:8000] / t10k[8000:]).
"""

from __future__ import annotations

import gzip
import os
import pathlib

import numpy as np

from jaxvision.data import base

# Where the offline experiments find MNIST-format IDX files; relative paths are from the repo root.
MNIST_DIR_ENV = "JAXVISION_MNIST_DIR"
DEFAULT_MNIST_DIR = "../shared/data/mnist"  # relative to the repository root


def default_mnist_dir() -> str:
  """Where the offline MNIST IDX files are: `$JAXVISION_MNIST_DIR`, else `DEFAULT_MNIST_DIR`
  relative to the repository (not to the current directory), read when called."""
  if os.environ.get(MNIST_DIR_ENV):
    return os.environ[MNIST_DIR_ENV]
  repo = pathlib.Path(__file__).resolve().parents[2]
  return os.path.normpath(repo / DEFAULT_MNIST_DIR)


DEFAULTS = dict(
  name="mnist",  # a label for the result table
  data_dir="",  # the folder of IDX files
  train_split="train",  # TFDS-style split strings; slices like "t10k[:8000]" work
  eval_split="t10k",
  num_folds=0,  # > 0: cross-validate train_split (== eval_split) in this many contiguous blocks
  fold=0,  # with num_folds: the block held out for evaluation, 0 <= fold < num_folds
  normalize="standardize",  # standardize | unit | symmetric | none
)

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads one IDX file (optionally gzipped) into a numpy array of its stored shape."""
  path = pathlib.Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; a truncated .gz an EOFError
    raise ValueError(f"{path} is corrupt or truncated ({type(e).__name__}: {e})") from e
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


def fold_slices(n: int, num_folds: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
  """(train indices, eval indices) of fold `fold` of `num_folds` contiguous blocks of `n`."""
  if not 0 <= fold < num_folds:
    raise ValueError(f"data.fold {fold} not in [0, {num_folds}) (data.num_folds={num_folds})")
  bounds = np.linspace(0, n, num_folds + 1).round().astype(int)
  held = np.arange(bounds[fold], bounds[fold + 1])
  return np.setdiff1d(np.arange(n), held), held


def load(config) -> base.Dataset:
  """Loads `config.train_split` and `config.eval_split` (or one fold of them) from `data_dir`."""
  if not config.data_dir:
    raise ValueError(
      f"data.data_dir is empty; name the folder of IDX files (or set ${MNIST_DIR_ENV})"
    )
  raw = {}
  for split in (config.train_split, config.eval_split):
    prefix, _ = base.parse_split(split)
    if prefix not in raw:
      raw[prefix] = read_split(config.data_dir, prefix)

  def take(split):
    prefix, sl = base.parse_split(split)
    images, labels = raw[prefix]
    return images[sl], labels[sl]

  if config.num_folds:
    if config.train_split != config.eval_split:
      raise ValueError(
        f"data.num_folds={config.num_folds} cross-validates one split, but train_split "
        f"{config.train_split!r} != eval_split {config.eval_split!r}"
      )
    images, labels = take(config.train_split)
    train_idx, eval_idx = fold_slices(len(labels), config.num_folds, config.fold)
    train_x, train_y, eval_x, eval_y = (
      images[train_idx],
      labels[train_idx],
      images[eval_idx],
      labels[eval_idx],
    )
    held = f"[{eval_idx[0]}:{eval_idx[-1] + 1}]"
    description = (
      f"{config.name} (idx) {config.train_split} fold {config.fold}/{config.num_folds}: "
      f"eval {held}, train the rest"
    )
  else:
    base.check_disjoint(
      config.train_split, config.eval_split, {k: len(v[1]) for k, v in raw.items()}
    )
    (train_x, train_y), (eval_x, eval_y) = take(config.train_split), take(config.eval_split)
    description = f"{config.name} (idx) {config.train_split} / {config.eval_split}"
  return base.normalized_dataset(
    config.name,
    train_x,
    train_y,
    eval_x,
    eval_y,
    mode=config.normalize,
    num_classes=int(max(train_y.max(), eval_y.max())) + 1,
    description=description,
  )
