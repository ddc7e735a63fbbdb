"""scikit-learn's real 8x8 handwritten digits (1,797 images), with a fixed 80/20 split."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from jaxvision.data import base

_SPLIT_SEED = 0  # fixed forever: changing it would change every digits result
DEFAULTS = dict(normalize="standardize")  # standardize | unit | symmetric | none


def load(config) -> base.Dataset:
  """Returns inputs [N, 8, 8, 1] float32 and labels [N] int32; 1,437 train / 360 eval."""
  digits = load_digits()
  # Pixel values are 0..16; rescale to the 0..255 range the shared normalisation expects.
  images = (digits.images * (255.0 / 16.0)).astype(np.float32)[..., None]
  labels = digits.target.astype(np.int32)
  order = np.random.default_rng(_SPLIT_SEED).permutation(len(labels))
  n_train = int(0.8 * len(labels))
  tr, ev = order[:n_train], order[n_train:]
  return base.normalized_dataset(
    "digits",
    images[tr],
    labels[tr],
    images[ev],
    labels[ev],
    mode=config.normalize,
    num_classes=10,
    description="digits (sklearn) fixed 80/20 split, 1437 / 360",
  )
