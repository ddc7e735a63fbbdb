"""Attribution maps of a trained image classifier, and their faithfulness against a random order.

  python -m jaxvision.tools.explain --workdir=runs/mnist_cnn_idx/data.fold=4 --method=ig \
      --num=16 --out=explain.png --faithfulness=500

For the first `--num` eval images it writes a PNG of three rows, input | map | overlay (the map in
red over the input), each column headed "predicted/true". Maps (`jaxvision.attribution`) explain
the predicted class; the baseline (what "removed" means for integrated gradients, occlusion and
the faithfulness curves) is black: the darkest value of the normalised eval images. With
`--faithfulness=N` it prints the deletion and insertion areas (RISE) of the method over the
first N eval images, beside those of a random pixel order (mean +- std over the images).
"""

from __future__ import annotations

import sys

import jax
import numpy as np
from absl import app, flags, logging

from jaxvision import attribution, runs
from jaxvision import images as images_lib

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "A trained classifier run on images.")
  flags.DEFINE_enum("method", "ig", attribution.METHODS, "The attribution method.")
  flags.DEFINE_integer("num", 16, "Eval images in the PNG.")
  flags.DEFINE_string("out", None, "The PNG (input | map | overlay rows); none: no picture.")
  flags.DEFINE_integer("faithfulness", 500, "Eval images for the deletion/insertion areas; 0: off.")
  flags.DEFINE_integer("steps", 28, "Points of the deletion and insertion curves.")
  flags.DEFINE_integer("batch_size", 100, "Images per compiled call.")
  flags.DEFINE_integer("seed", 0, "Seed of SmoothGrad's noise and of the random order.")
  flags.DEFINE_integer("scale", 4, "Pixel upscaling of the PNG.")


class Explainer:
  """A classifier run's maps and probabilities, compiled once per batch shape."""

  def __init__(self, workdir: str, method: str, seed: int = 0):
    run = runs.load_run(workdir)
    if run.config.trainer != "classifier":
      raise ValueError(f"{workdir} is a {run.config.trainer!r} run, not a classifier run")
    dataset = run.dataset()
    if len(dataset.input_shape) != 3:
      raise ValueError(
        f"{workdir} classifies inputs of shape {dataset.input_shape}; explain takes images"
      )
    self.run, self.dataset, self.method = run, dataset, method
    eval_ = dataset.eval.get(np.arange(len(dataset.eval)))
    self.images, self.labels = eval_["inputs"], eval_["targets"]
    self.baseline = self.images.min(axis=(0, 1, 2))  # [C]: black, normalised
    predict = run.apply("predict")
    logits_fn = lambda x: predict({"inputs": x})
    key = jax.random.key(seed)
    self._logits = jax.jit(logits_fn)
    self._maps = jax.jit(
      lambda x, target: attribution.attribute(
        method, logits_fn, x, target, baseline=self.baseline, key=key
      )
    )

  def predict(self, x: np.ndarray) -> np.ndarray:
    return np.asarray(self._logits(x)).argmax(-1)

  def probs(self, x: np.ndarray) -> np.ndarray:
    return np.asarray(jax.nn.softmax(self._logits(x)))

  def maps(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(attributions [N, H, W, C] of the predicted classes, the predictions [N])."""
    predicted = self.predict(x)
    return np.asarray(self._maps(x, predicted)), predicted


def faithfulness(explainer: Explainer, num: int, steps: int, batch_size: int, seed: int) -> dict:
  """Deletion and insertion areas of the method and of a random order on `num` eval images."""
  rng = np.random.default_rng(seed)
  areas = {
    k: [] for k in ("method_deletion", "method_insertion", "random_deletion", "random_insertion")
  }
  for start in range(0, min(num, len(explainer.images)), batch_size):
    x = explainer.images[start : min(start + batch_size, num)]
    maps, predicted = explainer.maps(x)
    orders = {"method": attribution.pixel_map(maps), "random": rng.uniform(size=maps.shape[:3])}
    for name, importance in orders.items():
      curves = attribution.deletion_insertion(
        explainer.probs, x, importance, predicted, explainer.baseline, steps=steps
      )
      areas[f"{name}_deletion"].append(curves["deletion_auc"])
      areas[f"{name}_insertion"].append(curves["insertion_auc"])
  return {k: np.concatenate(v) for k, v in areas.items()}


def picture(explainer: Explainer, num: int, path: str, scale: int) -> list[str]:
  """Writes the input | map | overlay PNG; returns each column's "predicted/true"."""
  from PIL import Image, ImageDraw

  x, labels = explainer.images[:num], explainer.labels[:num]
  maps, predicted = explainer.maps(x)
  heat = attribution.pixel_map(maps)  # [N, H, W]
  heat = heat / np.maximum(heat.max(axis=(1, 2), keepdims=True), 1e-12)  # [0, 1] per image
  gray = x.mean(-1)
  gray = (gray - gray.min(axis=(1, 2), keepdims=True)) / np.maximum(
    np.ptp(gray, axis=(1, 2), keepdims=True), 1e-12
  )
  rgb = lambda a: np.repeat(a[..., None], 3, -1)
  overlay = np.stack([np.maximum(0.6 * gray, heat), 0.6 * gray, 0.6 * gray], -1)
  rows = np.concatenate([rgb(gray), rgb(heat), overlay]) * 2.0 - 1.0  # [3N, H, W, 3] in [-1, 1]
  grid = images_lib.grid(rows, cols=num)
  image = Image.fromarray(grid).resize(
    (grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST
  )
  header = 14
  canvas = Image.new("RGB", (image.width, image.height + header), "white")
  canvas.paste(image, (0, header))
  draw = ImageDraw.Draw(canvas)
  captions = [f"{p}/{t}" for p, t in zip(predicted, labels, strict=True)]
  width = image.width / num
  for i, caption in enumerate(captions):
    draw.text((i * width + 4, 1), caption, fill="black")
  canvas.save(path)
  return captions


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    explainer = Explainer(FLAGS.workdir, FLAGS.method, FLAGS.seed)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"explain: error: {e}")
  print(f"{FLAGS.method} maps of {FLAGS.workdir} (step {explainer.run.step}); baseline: black "
        f"(the normalised value {np.round(explainer.baseline, 4).tolist()})")  # fmt: skip
  if FLAGS.out:
    captions = picture(explainer, FLAGS.num, FLAGS.out, FLAGS.scale)
    print(f"wrote {FLAGS.out}: input | map | overlay, columns predicted/true {' '.join(captions)}")
  if FLAGS.faithfulness:
    areas = faithfulness(explainer, FLAGS.faithfulness, FLAGS.steps, FLAGS.batch_size, FLAGS.seed)
    n = len(areas["method_deletion"])
    show = lambda v: f"{v.mean():.4f} +- {v.std(ddof=1):.4f}"
    for curve in ("deletion", "insertion"):
      method, random = areas[f"method_{curve}"], areas[f"random_{curve}"]
      print(
        f"{curve} AUC over {n} eval images ({FLAGS.steps} steps): {FLAGS.method} {show(method)}, "
        f"random order {show(random)}, ratio {method.mean() / random.mean():.3f}"
      )


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
