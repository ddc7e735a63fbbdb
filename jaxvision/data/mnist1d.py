"""MNIST-1D (Greydanus 2020), generated offline by the `mnist1d` package.

`make_dataset` with the package's default arguments: 4,000 train / 1,000 test sequences of
length 40, already centred and scaled. Its download path is never used. The generated arrays are
cached (`jaxvision.data.cache`, keyed by the package's version), so later runs neither import
the package (matplotlib, scipy) nor generate again.
"""

from __future__ import annotations

import importlib.metadata

import numpy as np

from jaxvision.data import base, cache

DEFAULTS = {}  # MNIST-1D is defined by the package defaults; nothing to choose


def load(config) -> base.Dataset:
  """Returns inputs [N, 40, 1] float32 and class-id targets [N] int32."""
  del config  # MNIST-1D is defined by the package defaults; nothing to choose.
  version = importlib.metadata.version("mnist1d")
  d = cache.load_or_make(f"mnist1d-{version}-defaults", _generate)
  as_inputs = lambda x: x.astype(np.float32)[..., None]
  return base.classification_dataset(
    "mnist1d",
    as_inputs(d["x"]),
    d["y"],
    as_inputs(d["x_test"]),
    d["y_test"],
    num_classes=10,
    description="mnist1d (generated, package defaults) 4000 / 1000",
  )


def _generate() -> dict[str, np.ndarray]:
  from mnist1d.data import get_dataset_args, make_dataset  # slow to import: only when needed

  # make_dataset seeds numpy's global generator; keep the caller's global state untouched.
  saved = np.random.get_state()
  try:
    d = make_dataset(get_dataset_args())
  finally:
    np.random.set_state(saved)
  return {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}
