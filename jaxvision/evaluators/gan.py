"""GAN samples: a grid PNG per evaluation, and FID/KID/IS/class shares on a classifier's features.

The feature space is a trained jaxvision classifier (`classifier_workdir`), not Inception-v3 (see
`gan_metrics.CAVEAT`). Every metric uses the same N = `num_samples` generated images; FID and KID
compare them with the n (at most N) real eval images, and the real-vs-real floor compares those n
eval images with n training images drawn at random (seeded) rather than the first n in file
order, which are not a representative block.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from jaxvision import images
from jaxvision import workdir as workdir_lib
from jaxvision.evaluators import gan_metrics
from jaxvision.evaluators.common import MetricSpec


class Evaluator:
  """Sample grids and sample-quality metrics of the trainer's `pred` ("generate") function."""

  def __init__(
    self,
    name: str,
    context,
    *,
    pred: str = "generate",
    classifier_workdir: str = "",
    num_samples: int = 10_000,
    batch_size: int = 0,
    grid_size: int = 64,
  ):
    strategy = context.strategy
    batch_size = batch_size or context.batch_size
    strategy.check_batch_size(batch_size, f"evaluators.{name}.batch_size")
    strategy.check_batch_size(grid_size, f"evaluators.{name}.grid_size")
    if num_samples <= 0:
      raise ValueError(f"evaluators.{name}.num_samples={num_samples} must be positive")
    self._name, self._strategy, self._workdir = name, strategy, context.workdir
    self._num_classes = context.info.get("num_classes", 0)  # > 0: a conditional generator
    z_dim = context.info["z_dim"]
    self._num, self._batch_size, self._z_dim = num_samples, batch_size, z_dim
    self._generate = strategy.compile(
      context.predict_fns[pred], compiler_options=context.compiler_options
    )
    grid_key, self._key, floor_key = jax.random.split(context.key, 3)
    self._grid_z = np.asarray(jax.random.normal(grid_key, (grid_size, z_dim)))
    self.features, self.floor = None, {}
    self.metrics = ()
    if not classifier_workdir:
      return
    from jaxvision.evaluators.features import ClassifierFeatures

    self.features = ClassifierFeatures(classifier_workdir)
    train, eval_ = context.dataset.train, context.dataset.eval
    n = min(num_samples, len(eval_), len(train))
    real = np.random.default_rng(np.asarray(jax.random.key_data(floor_key))).permutation(len(train))
    eval_features, eval_probs = self.features(eval_.get(np.arange(n))["inputs"])
    train_features, _ = self.features(train.get(np.sort(real[:n]))["inputs"])
    self._real_features = eval_features
    self.floor = {
      f"{name}_real_fid": gan_metrics.fid(train_features, eval_features),
      f"{name}_real_kid": gan_metrics.kid(train_features, eval_features),
      f"{name}_real_inception_score": gan_metrics.inception_score(eval_probs),
    }
    self.metrics = (
      MetricSpec(f"{name}_inception_score", "Inception score", "float", "higher"),
      MetricSpec(f"{name}_fid", "FID", "float", "lower"),
      MetricSpec(f"{name}_kid", "KID", "float", "lower"),
      MetricSpec(f"{name}_min_class_share", "smallest class share", "percent", "higher"),
      MetricSpec(f"{name}_max_class_share", "largest class share", "percent", None),
      MetricSpec(f"{name}_real_inception_score", "real Inception score", "float", None),
      MetricSpec(f"{name}_real_fid", "real-vs-real FID", "float", None),
    )
    if self._num_classes:
      self.metrics += (
        MetricSpec(f"{name}_conditional_accuracy", "asked digit recognised", "percent", "higher"),
        MetricSpec(f"{name}_min_conditional_accuracy", "worst digit", "percent", "higher"),
      )
    print(
      f"GAN metrics: {gan_metrics.CAVEAT}. Features: {self.features.description}. "
      f"N = {num_samples} generated images for every metric, n = {n} real; real-vs-real floor "
      f"(random train vs eval, {n} each): {self.floor}",
      flush=True,
    )

  def sample(self, state, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Generated images [N, H, W, C] in [-1, 1] for latents z [N, z_dim] (and, for a
    conditional generator, the asked classes [N]; default: the generator's own choice)."""
    out = []
    for start in range(0, len(z), self._batch_size):
      chunk = {"z": z[start : start + self._batch_size]}
      if labels is not None:
        chunk["labels"] = labels[start : start + self._batch_size]
      batch = self._strategy.place_batch(chunk)
      out.append(self._strategy.fetch_rows(self._generate(state, batch)))
    return np.concatenate(out)

  def provenance(self) -> dict:
    """The feature classifier the metrics were computed with, for results.json."""
    return {"classifier": self.features.description if self.features else None}

  def run(self, state, step: int) -> dict:
    classes = self._num_classes
    grid_labels = np.arange(len(self._grid_z)) % classes if classes else None  # digits in turn
    grid = self.sample(state, self._grid_z, grid_labels)
    images.save_grid(grid, os.path.join(workdir_lib.samples_dir(self._workdir), f"step_{step}.png"))
    if self.features is None:
      return {}
    z = np.asarray(jax.random.normal(self._key, (self._num, self._z_dim)))
    asked = np.arange(self._num) % classes if classes else None  # balanced
    fake = self.sample(state, z, asked)
    fake_features, fake_probs = self.features(fake)
    shares = gan_metrics.class_shares(fake_probs)
    name = self._name
    conditional = {}
    if asked is not None:  # the classifier's accuracy with the asked class as the truth
      hit = np.argmax(fake_probs, -1) == asked
      per_class = [float(hit[asked == k].mean()) for k in range(classes)]
      conditional = {
        f"{name}_conditional_accuracy": float(hit.mean()),
        f"{name}_min_conditional_accuracy": min(per_class),
        **{f"{name}_conditional_accuracy_{k}": a for k, a in enumerate(per_class)},
      }
    return {
      f"{name}_inception_score": gan_metrics.inception_score(fake_probs),
      f"{name}_fid": gan_metrics.fid(fake_features, self._real_features),
      f"{name}_kid": gan_metrics.kid(fake_features, self._real_features),
      f"{name}_min_class_share": float(shares.min()),
      f"{name}_max_class_share": float(shares.max()),
      **conditional,
      **self.floor,
    }
