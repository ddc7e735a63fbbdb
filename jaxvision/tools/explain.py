"""Attribution maps of a trained image classifier, and their faithfulness against a random order.

  python -m jaxvision.tools.explain --workdir=runs/mnist_cnn_idx/data.fold=4 --method=ig \
      --num=16 --out=explain.png --faithfulness=500

For the first `--num` eval images it writes a PNG of three rows, input | map | overlay (the map in
red over the input), each column headed "predicted/true". Maps (`jaxvision.attribution`) explain
the predicted class; the baseline (what "removed" means for integrated gradients, occlusion and
the faithfulness curves) is black: the darkest value of the normalised eval images. With
`--faithfulness=N` it prints the deletion and insertion areas (RISE) of the method over the
first N eval images, beside those of a random pixel order (mean +- std over the images). With
`--sanity=N` it runs the model-parameter randomization test (Adebayo et al. 2018) on the first N
eval images: the model's layers are re-initialised from the output layer down, cumulatively, and
at each stage the maps (of the class the trained model predicts) are compared with the trained
model's by Spearman rank correlation, of their absolute values and signed; `--sanity_out` writes
a PNG with a row per stage (trained first). A map that passes decorrelates as layers go.
"""

from __future__ import annotations

import functools
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
  flags.DEFINE_integer("sanity", 0, "Eval images for the parameter-randomization test; 0: off.")
  flags.DEFINE_string("sanity_out", None, "PNG of the randomization test's maps, a row per stage.")


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
    predict = run.task.predict_fns()["predict"]
    logits_fn = lambda params, x: predict(run.state.replace(params=params), {"inputs": x})
    key = jax.random.key(seed)
    self._logits = jax.jit(lambda x: logits_fn(run.state.params, x))
    self._maps_with = jax.jit(
      lambda params, x, target: attribution.attribute(
        method, functools.partial(logits_fn, params), x, target, baseline=self.baseline, key=key
      )
    )

  def predict(self, x: np.ndarray) -> np.ndarray:
    return np.asarray(self._logits(x)).argmax(-1)

  def probs(self, x: np.ndarray) -> np.ndarray:
    return np.asarray(jax.nn.softmax(self._logits(x)))

  def maps(self, x: np.ndarray, params=None) -> tuple[np.ndarray, np.ndarray]:
    """(attributions [N, H, W, C] of the predicted classes, the predictions [N]); with
    `params`, the maps of a model with those parameters for the trained model's predictions."""
    predicted = self.predict(x)
    params = self.run.state.params if params is None else params
    return np.asarray(self._maps_with(params, x, predicted)), predicted


def sanity(explainer: Explainer, num: int, batch_size: int, seed: int):
  """The cascading parameter-randomization test on the first `num` eval images.

  Returns:
    ([(stage name, {"abs": Spearman [num], "signed": Spearman [num]})], maps [stages + 1, S, H,
    W] of the first S <= 8 images, the trained model's first), the stages from the output
    layer down.
  """
  trained = explainer.run.state.params
  fresh = explainer.run.task.init_state(jax.random.key(seed + 1)).params
  stages = attribution.randomized_params(trained, fresh)
  x = explainer.images[:num]
  batches = range(0, len(x), batch_size)
  maps = lambda params: np.concatenate(
    [explainer.maps(x[i : i + batch_size], params)[0] for i in batches]
  )
  reference = maps(trained)
  rows, shown = [], [attribution.pixel_map(reference[:8])]
  for name, params in stages:
    randomized = maps(params)
    rows.append(
      (
        name,
        {
          "abs": attribution.spearman(np.abs(reference), np.abs(randomized)),
          "signed": attribution.spearman(reference, randomized),
        },
      )
    )
    shown.append(attribution.pixel_map(randomized[:8]))
  return rows, np.stack(shown)


def sanity_picture(maps: np.ndarray, path: str, scale: int) -> None:
  """A PNG of the randomization stages' maps: a row per stage, each map scaled to its max."""
  heat = maps / np.maximum(maps.max(axis=(2, 3), keepdims=True), 1e-12)  # [R, S, H, W]
  rows = np.repeat(heat.reshape(-1, *heat.shape[2:])[..., None], 3, -1) * 2.0 - 1.0
  images_lib.save_grid(rows, path, cols=heat.shape[1], scale=scale)


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
  show = lambda v: f"{v.mean():.4f} +- {v.std(ddof=1):.4f}"
  if FLAGS.faithfulness:
    areas = faithfulness(explainer, FLAGS.faithfulness, FLAGS.steps, FLAGS.batch_size, FLAGS.seed)
    n = len(areas["method_deletion"])
    for curve in ("deletion", "insertion"):
      method, random = areas[f"method_{curve}"], areas[f"random_{curve}"]
      print(
        f"{curve} AUC over {n} eval images ({FLAGS.steps} steps): {FLAGS.method} {show(method)}, "
        f"random order {show(random)}, ratio {method.mean() / random.mean():.3f}"
      )
  if FLAGS.sanity:
    rows, maps = sanity(explainer, FLAGS.sanity, FLAGS.batch_size, FLAGS.seed)
    n = len(rows[0][1]["abs"])
    print(
      f"Parameter randomization ({FLAGS.method}, {n} eval images; Spearman rank correlation with"
      " the trained model's maps, mean +- std; layers re-initialised from the top down):"
    )
    print("| re-initialised down to | abs maps | signed maps |\n| --- | --- | --- |")
    for name, rho in rows:
      print(f"| {name} | {show(rho['abs'])} | {show(rho['signed'])} |")
    if FLAGS.sanity_out:
      sanity_picture(maps, FLAGS.sanity_out, FLAGS.scale)
      print(f"wrote {FLAGS.sanity_out}: rows trained, then " + ", ".join(n for n, _ in rows))


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
