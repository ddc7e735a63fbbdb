"""MNIST-1D (Greydanus 2020), generated offline by the `mnist1d` package.

`make_dataset` with the package's default arguments: 4,000 train / 1,000 test sequences of
length 40, already centred and scaled. Its download path is never used.
"""

from __future__ import annotations

import numpy as np
from mnist1d.data import get_dataset_args, make_dataset

from jaxvision.data import base


def load(config) -> base.Dataset:
  """Returns inputs [N, 40, 1] float32 and labels [N] int32."""
  del config  # MNIST-1D is defined by the package defaults; nothing to choose.
  # make_dataset seeds numpy's global generator; keep the caller's global state untouched.
  saved = np.random.get_state()
  try:
    d = make_dataset(get_dataset_args())
  finally:
    np.random.set_state(saved)
  as_split = lambda x, y: base.Split(x.astype(np.float32)[..., None], y.astype(np.int32))
  return base.Dataset(
    name="mnist1d",
    train=as_split(d["x"], d["y"]),
    eval=as_split(d["x_test"], d["y_test"]),
    num_classes=10,
    description="mnist1d (generated, package defaults) 4000 / 1000",
  )
