"""A trained jaxvision classifier, loaded from its workdir, as the feature space of GAN metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision import data as data_lib
from jaxvision import models
from jaxvision.data import base
from jaxvision.workdir import load_config, restore_latest


class ClassifierFeatures:
  """Maps images in [-1, 1] to (penultimate features [N, D], class probabilities [N, K]).

  Images are first put through the normalisation the classifier was trained with (for
  "standardize", statistics of its own train split, recomputed from the data).
  """

  def __init__(self, workdir: str, batch_size: int = 500):
    config = load_config(workdir)
    state, meta = restore_latest(workdir)
    self.step = meta["step"]
    # Keys a newer jaxvision added take their defaults and keys it dropped are ignored, so
    # older workdirs still load.
    known = data_lib.data_config(config.data.source)
    saved = {k: v for k, v in config.data.to_dict().items() if k in known}
    raw = data_lib.data_config(**{**saved, "normalize": "none", "shuffle_labels": False})
    dataset = data_lib.load_dataset(raw)
    self.num_classes = dataset.num_classes
    self._normalize = base.Normalizer(config.data.normalize, dataset.train.inputs)
    model = models.create_model(config.model, num_classes=dataset.num_classes)
    variables = {"params": state["params"]}
    if state.get("batch_stats"):
      variables["batch_stats"] = state["batch_stats"]
    self._apply = jax.jit(lambda x: model.apply(variables, x, train=False, return_features=True))
    self._batch_size = batch_size
    self.description = f"{config.model.name} classifier from {workdir} (step {self.step})"

  def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pixels = (np.asarray(images, np.float32) + 1.0) * 127.5  # [-1, 1] -> 0..255
    x = self._normalize(pixels)
    features, probs = [], []
    for start in range(0, len(x), self._batch_size):
      logits, feats = self._apply(jnp.asarray(x[start : start + self._batch_size]))
      features.append(np.asarray(feats))
      probs.append(np.asarray(jax.nn.softmax(logits)))
    return np.concatenate(features), np.concatenate(probs)
