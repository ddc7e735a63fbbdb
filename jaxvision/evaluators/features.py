"""A trained jaxvision classifier, loaded from its workdir, as the feature space of GAN metrics."""

from __future__ import annotations

import jax
import numpy as np

from jaxvision.data import base


class ClassifierFeatures:
  """Maps images in [-1, 1] to (penultimate features [N, D], class probabilities [N, K]).

  Images are first put through the normalisation the classifier was trained with (for
  "standardize", statistics of its own train split, recomputed from the data).
  """

  def __init__(self, workdir: str, batch_size: int = 500):
    from jaxvision import runs  # here: the runs module imports every Task

    run = runs.load_run(workdir)
    if run.config.trainer != "classifier":
      raise ValueError(f"{workdir} is a {run.config.trainer!r} run, not a classifier run")
    self.step = run.step
    dataset = run.dataset(normalize="none", shuffle_labels=False)
    self.num_classes = dataset.num_classes
    mode = run.config.data.normalize
    stats = base.channel_stats(base.chunks(dataset.train)) if mode == "standardize" else None
    self._normalize = base.Normalizer(mode, stats=stats)
    self._features = run.predict("features")
    self._batch_size = batch_size
    self.description = f"{run.config.model.name} classifier from {workdir} (step {self.step})"

  def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pixels = (np.asarray(images, np.float32) + 1.0) * 127.5  # [-1, 1] -> 0..255
    x = self._normalize(pixels)
    features, probs = [], []
    for start in range(0, len(x), self._batch_size):
      logits, feats = self._features({"inputs": x[start : start + self._batch_size]})
      features.append(np.asarray(feats))
      probs.append(np.asarray(jax.nn.softmax(logits)))
    return np.concatenate(features), np.concatenate(probs)
