"""Segmentation: intersection over union per class, from a confusion matrix over the eval split.

Every eval pixel (padded batches masked, clips frame by frame) adds to a K x K confusion matrix
(true class x predicted class), summed on device and across devices; then per class
IoU = TP / (TP + FP + FN). `<name>_miou` averages it over all K classes (background included, as
segmentation benchmarks do), `<name>_miou_objects` over the classes after the background, and
`<name>_iou_<k>` reports class k (for scenes: 0 background, 1 + d digit d); a class absent from
both truth and prediction is left out of the means. Every evaluation writes
`<workdir>/samples/step_N.png`: image | truth | prediction, one row per fixed eval scene.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision import images, parallel
from jaxvision import workdir as workdir_lib
from jaxvision.evaluators.common import MetricSpec, predict_rows, summed_over_split

# Class colours: black background, then ten distinct hues.
PALETTE = np.array(
  [
    [0, 0, 0],
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [250, 190, 212],
  ],
  np.uint8,
)


def confusion(targets: jax.Array, predicted: jax.Array, weights: jax.Array, k: int) -> jax.Array:
  """The K x K confusion matrix (rows: true class, columns: predicted) of class maps of any
  shape, each pixel counted with its `weights` (broadcast to the maps' shape)."""
  weights = jnp.broadcast_to(weights, targets.shape).reshape(-1)
  index = (targets * k + predicted).reshape(-1)
  return jnp.bincount(index, weights=weights, length=k * k).reshape(k, k)


def iou(matrix: np.ndarray) -> np.ndarray:
  """Per-class IoU [K] of a confusion matrix; NaN for a class neither true nor predicted."""
  matrix = np.asarray(matrix, np.float64)
  hits = np.diag(matrix)
  union = matrix.sum(0) + matrix.sum(1) - hits
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(union > 0, hits / union, np.nan)


def eval_step(state, batch, *, predict_fn, num_classes: int, axis_name=None) -> dict:
  """The confusion matrix of a batch's real (mask == 1) scenes, summed over devices."""
  predicted = jnp.argmax(predict_fn(state, batch), -1)  # [B, (T,) H, W]
  targets = batch["targets"]
  mask = batch["mask"].reshape(-1, *(1,) * (targets.ndim - 1))
  matrix = confusion(targets, predicted, mask, num_classes)
  return parallel.psum({"confusion": matrix}, axis_name)


def colour(classes: np.ndarray) -> np.ndarray:
  """Class maps [..., H, W] as RGB [..., H, W, 3] uint8 (`PALETTE`)."""
  return PALETTE[np.asarray(classes) % len(PALETTE)]


class Evaluator:
  """`<name>_miou`, `<name>_miou_objects`, `<name>_pixel_accuracy`, `<name>_iou_<k>`, and a PNG.

  Settings (`config.evaluators.<name>`):
    pred: the trainer's prediction function (default "predict": per-pixel logits).
    batch_size: scenes per eval batch (0: `config.data.eval_batch_size`).
    png_scenes: eval scenes (the first ones, so the same every time) in each PNG; 0: no PNG.
    png_scale: pixel upscaling of the PNG.
  """

  def __init__(
    self,
    name: str,
    context,
    *,
    pred: str = "predict",
    batch_size: int = 0,
    png_scenes: int = 6,
    png_scale: int = 2,
  ):
    strategy = context.strategy
    self._name, self._strategy, self._workdir = name, strategy, context.workdir
    self._source = context.dataset.eval
    self._batch_size = batch_size or context.batch_size
    strategy.check_batch_size(self._batch_size, f"evaluators.{name}.batch_size")
    if not 0 <= png_scenes <= len(self._source):
      raise ValueError(f"evaluators.{name}.png_scenes={png_scenes} not in [0, {len(self._source)}]")
    if png_scale < 1:
      raise ValueError(f"evaluators.{name}.png_scale={png_scale} must be >= 1")
    if "num_pixel_classes" not in context.info:
      raise ValueError(f"evaluators.{name}: type 'segmentation' needs the segmentation trainer")
    self._k = int(context.info["num_pixel_classes"])
    predict_fn = context.predict_fns[pred]
    self._step = strategy.compile(
      lambda state, batch: eval_step(
        state, batch, predict_fn=predict_fn, num_classes=self._k, axis_name=strategy.axis_name
      ),
      compiler_options=context.compiler_options,
    )
    self._predict = strategy.compile(
      lambda state, batch: jnp.argmax(predict_fn(state, batch), -1),
      compiler_options=context.compiler_options,
    )
    self._png_scenes, self._png_scale = png_scenes, png_scale
    self.metrics = (
      MetricSpec(f"{name}_miou", "mIoU", "percent", "higher"),
      MetricSpec(f"{name}_miou_objects", "mIoU w/o bg", "percent", "higher"),
      MetricSpec(f"{name}_pixel_accuracy", "pixel acc.", "percent", "higher"),
    )

  def run(self, state, step: int) -> dict:
    totals = summed_over_split(self._step, state, self._source, self._batch_size, self._strategy)
    matrix = np.asarray(totals["confusion"], np.float64)
    per_class = iou(matrix)
    name = self._name
    out = {
      f"{name}_miou": float(np.nanmean(per_class)),
      f"{name}_miou_objects": float(np.nanmean(per_class[1:])),
      f"{name}_pixel_accuracy": float(np.trace(matrix) / matrix.sum()),
    }
    out.update({f"{name}_iou_{k}": float(v) for k, v in enumerate(per_class) if np.isfinite(v)})
    if self._png_scenes:
      self.write_png(
        state, os.path.join(workdir_lib.samples_dir(self._workdir), f"step_{step}.png")
      )
    return out

  def provenance(self) -> dict:
    return {}

  def predict(self, state, batch: dict) -> np.ndarray:
    """Predicted class maps [N, (T,) H, W] of a batch of eval scenes (any N: padded to a
    multiple of the devices)."""
    return predict_rows(self._predict, state, batch, self._strategy)

  def write_png(self, state, path: str) -> None:
    """Writes image | truth | prediction for the first `png_scenes` eval scenes (first frames of
    clips) to `path` (on process 0; every process joins the compiled prediction)."""
    batch = self._source.get(np.arange(self._png_scenes))
    predicted = self.predict(state, batch)
    if jax.process_index() != 0:
      return
    pixels, truth = batch["inputs"], batch["targets"]
    if pixels.ndim == 5:  # clips: their first frames
      pixels, truth, predicted = pixels[:, 0], truth[:, 0], predicted[:, 0]
    grey = np.repeat(np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8), 3, axis=-1)
    panels = np.stack([grey, colour(truth), colour(predicted)], 1)  # [N, 3, H, W, 3] uint8
    panels = panels.reshape(-1, *panels.shape[2:]).astype(np.float32) / 127.5 - 1.0
    images.save_grid(panels, path, cols=3, scale=self._png_scale)  # takes [-1, 1]
