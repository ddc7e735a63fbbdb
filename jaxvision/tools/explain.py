"""Attribution maps of a trained classifier, and their faithfulness against a random order.

  python -m jaxvision.tools.explain --workdir=runs/mnist_cnn_idx/data.fold=4 --method=ig \
      --num=16 --out=explain.png --faithfulness=500

Any classifier run on images [H, W, C], sequences [T, F] or clips [T, H, W, C] will do. For the
first `--num` eval examples it writes a PNG of input | map | overlay (the map in red over the
input), headed "predicted/true": images in three rows, a column each; sequences the same with
time along x (features down; a single feature as a line plot over its map); clips a block each,
its frames in a row, then their maps and overlays. Maps (`jaxvision.attribution`) explain the
predicted class. The baseline (what "removed" means for integrated gradients, occlusion and the
faithfulness curves) is by default black for images and clips (the eval inputs' minimum per
channel) and zero for sequences (standardised signals' mean); `--baseline=min|zero|mean` sets it.
With `--faithfulness=N` it prints the
deletion and insertion areas (RISE) of the method over the first N eval examples, elements (pixels,
time-feature cells, voxels) removed in the map's order, beside those of a random order (mean +-
std over the examples). Occlusion's window (`--window`, a size per input axis) defaults to 4x4
patches, spans of 4 time steps and 8x8 patches of one frame; Grad-CAM uses the last convolution,
or the one `--gradcam_layer` names (-2: the one before; or a path such as Conv_1), and applies
only to models with one. With `--sanity=N` it runs the model-parameter randomization test
(Adebayo et al. 2018) on the first N eval examples: the model's layers are re-initialised from
the output layer down, cumulatively, and at each stage the maps (of the class the trained model
predicts) are compared with the trained model's by Spearman rank correlation, of their absolute
values and signed; `--sanity_out` writes a PNG with a row per stage (trained first). A map that
passes decorrelates as layers go.

With either measurement it writes a results record (`<record_dir>/results.json`, default
`<workdir>/explain/method=<method>/`) for the report and a campaign's `Analysis`: the areas
(means over the examples) and the method's deletion area over the random order's, and the mean
rank correlations after the output layer and after every layer is re-initialised.
"""

from __future__ import annotations

import functools
import os
import sys
import time

import jax
import numpy as np
from absl import app, flags, logging

from jaxvision import attribution, runs
from jaxvision import images as images_lib

FLAGS = flags.FLAGS
KINDS = {2: "sequence", 3: "image", 4: "clip"}  # by the rank of one input
BASELINES = ("auto", "min", "zero", "mean")
LINE_HEIGHT = 24  # pixel rows of a single-feature sequence's line plot
HEADER = 14  # pixel rows of a caption line
METRICS = (
  {"name": "deletion_ratio", "label": "deletion / random order's", "format": "float",
   "better": "lower"},
  {"name": "deletion_auc", "label": "deletion AUC", "format": "float"},
  {"name": "random_deletion_auc", "label": "random order's deletion AUC", "format": "float"},
  {"name": "insertion_auc", "label": "insertion AUC", "format": "float"},
  {"name": "random_insertion_auc", "label": "random order's insertion AUC", "format": "float"},
  {"name": "sanity_signed_output", "label": "rank corr. (output layer random)",
   "format": "float"},
  {"name": "sanity_signed_all", "label": "rank corr. (all layers random)", "format": "float"},
  {"name": "sanity_abs_all", "label": "abs maps' rank corr. (all layers random)",
   "format": "float"},
)  # fmt: skip


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "A trained classifier run (images, sequences or clips).")
  flags.DEFINE_enum("method", "ig", attribution.METHODS, "The attribution method.")
  flags.DEFINE_integer("num", 16, "Eval examples in the PNG.")
  flags.DEFINE_string("out", None, "The PNG (input | map | overlay); none: no picture.")
  flags.DEFINE_integer(
    "faithfulness", 500, "Eval examples for the deletion/insertion areas; 0: off."
  )
  flags.DEFINE_integer("steps", 28, "Points of the deletion and insertion curves.")
  flags.DEFINE_integer("batch_size", 100, "Examples per compiled call.")
  flags.DEFINE_integer("seed", 0, "Seed of SmoothGrad's noise and of the random order.")
  flags.DEFINE_integer("scale", 4, "Pixel upscaling of the PNG.")
  flags.DEFINE_enum("baseline", "auto", BASELINES, "Removed elements' value, per channel/feature: "
                    "the eval inputs' minimum (black), zero or their mean; auto: min for images "
                    "and clips, zero for sequences.")  # fmt: skip
  flags.DEFINE_list("window", [], "Occlusion's window, a size per input axis (e.g. 4,4,1); "
                    "default 4x4 patches, 4 time steps, 8x8 patches of one frame.")  # fmt: skip
  flags.DEFINE_string("gradcam_layer", "-1", "Grad-CAM's convolution: its index in call order "
                      "(-1: the last, -2: the one before) or its path (e.g. Conv_1).")  # fmt: skip
  flags.DEFINE_integer("sanity", 0, "Eval examples for the parameter-randomization test; 0: off.")
  flags.DEFINE_string("sanity_out", None, "PNG of the randomization test's maps, a row per stage.")
  flags.DEFINE_string(
    "record_dir", None, "Folder of results.json (default: <workdir>/explain/method=<method>)."
  )


def input_kind(shape) -> str:
  """The kind of one input of `shape`: "sequence" [T, F], "image" [H, W, C] or "clip"
  [T, H, W, C]; ValueError for any other rank."""
  if len(shape) not in KINDS:
    raise ValueError(
      f"explain takes sequences [T, F], images [H, W, C] or clips [T, H, W, C], not inputs of "
      f"shape {tuple(shape)}"
    )
  return KINDS[len(shape)]


def baseline_of(inputs: np.ndarray, name: str) -> np.ndarray:
  """The baseline `name` ("min", "zero" or "mean") per channel or feature (the last axis) of
  inputs [N, ...]: their minimum, zero, or their mean."""
  axes = tuple(range(inputs.ndim - 1))
  if name == "min":
    return inputs.min(axis=axes)
  if name == "mean":
    return inputs.mean(axis=axes)
  if name == "zero":
    return np.zeros(inputs.shape[-1], inputs.dtype)
  raise ValueError(f"unknown baseline {name!r}; expected one of {BASELINES}")


def _parse_layer(layer: str) -> int | str:
  return int(layer) if layer.lstrip("-").isdigit() else layer


class Explainer:
  """A classifier run's maps and probabilities, compiled once per batch shape.

  Args:
    workdir: a classifier run on sequences, images or clips.
    method: one of `attribution.METHODS`.
    seed: of SmoothGrad's noise.
    baseline: "min", "zero", "mean" (see `baseline_of`) or "auto": min (black) for images and
      clips, zero for sequences.
    window: occlusion's window, a size per input axis (default `attribution.default_window`).
    layer: Grad-CAM's convolution (see `attribution.conv_layer`).

  Raises:
    ValueError: not a classifier of those inputs, a window of another rank, or Grad-CAM of a
      model without that convolution (one line, naming the model).
  """

  def __init__(
    self,
    workdir: str,
    method: str,
    seed: int = 0,
    *,
    baseline: str = "auto",
    window=None,
    layer: int | str = -1,
  ):
    run = runs.load_run(workdir)
    if run.config.trainer != "classifier":
      raise ValueError(f"{workdir} is a {run.config.trainer!r} run, not a classifier run")
    dataset = run.dataset()
    self.kind = input_kind(dataset.input_shape)
    self.run, self.dataset, self.method = run, dataset, method
    eval_ = dataset.eval.get(np.arange(len(dataset.eval)))
    self.inputs, self.labels = eval_["inputs"], eval_["targets"]
    if baseline == "auto":  # black for pictures; zero (standardised data's mean) for signals
      baseline = "zero" if self.kind == "sequence" else "min"
    self.baseline_name, self.baseline = baseline, baseline_of(self.inputs, baseline)
    predict = run.task.predict_fns()["predict"]
    logits_fn = lambda params, x: predict(run.state.replace(params=params), {"inputs": x})
    self.layer = self.window = None
    if method == "occlusion":
      self.window = tuple(window or attribution.default_window(dataset.input_shape))
      if len(self.window) != len(dataset.input_shape):
        raise ValueError(
          f"--window={','.join(map(str, self.window))} needs a size per axis of the inputs "
          f"{tuple(dataset.input_shape)}"
        )
    if method == "gradcam":
      try:
        path, shape = attribution.conv_layer(
          functools.partial(logits_fn, run.state.params), self.inputs[:1], layer
        )
      except ValueError as e:
        raise ValueError(
          f"--method=gradcam on model {run.config.model.name!r} ({workdir}): {e}"
        ) from None
      self.layer = ("/".join(path), shape[1:-1])
    key = jax.random.key(seed)
    self._logits = jax.jit(lambda x: logits_fn(run.state.params, x))
    self._maps_with = jax.jit(
      lambda params, x, target: attribution.attribute(
        method,
        functools.partial(logits_fn, params),
        x,
        target,
        baseline=self.baseline,
        key=key,
        window=self.window,
        layer=layer,
      )
    )

  def predict(self, x: np.ndarray) -> np.ndarray:
    return np.asarray(self._logits(x)).argmax(-1)

  def probs(self, x: np.ndarray) -> np.ndarray:
    return np.asarray(jax.nn.softmax(self._logits(x)))

  def maps(self, x: np.ndarray, params=None) -> tuple[np.ndarray, np.ndarray]:
    """(attributions [N, ...] (x's shape) of the predicted classes, the predictions [N]); with
    `params`, the maps of a model with those parameters for the trained model's predictions."""
    predicted = self.predict(x)
    params = self.run.state.params if params is None else params
    return np.asarray(self._maps_with(params, x, predicted)), predicted


def sanity(explainer: Explainer, num: int, batch_size: int, seed: int):
  """The cascading parameter-randomization test on the first `num` eval examples.

  Returns:
    ([(stage name, {"abs": Spearman [num], "signed": Spearman [num]})], element maps
    [stages + 1, S, *elements] of the first S <= 8 examples, the trained model's first), the
    stages from the output layer down.
  """
  trained = explainer.run.state.params
  fresh = explainer.run.task.init_state(jax.random.key(seed + 1)).params
  stages = attribution.randomized_params(trained, fresh)
  x = explainer.inputs[:num]
  batches = range(0, len(x), batch_size)
  maps = lambda params: np.concatenate(
    [explainer.maps(x[i : i + batch_size], params)[0] for i in batches]
  )
  reference = maps(trained)
  rows, shown = [], [attribution.element_map(reference[:8])]
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
    shown.append(attribution.element_map(randomized[:8]))
  return rows, np.stack(shown)


def _line_plot(signal: np.ndarray) -> np.ndarray:
  """Signals [N, T] in [0, 1] -> [N, LINE_HEIGHT, T]: 1 on the curve (joined step to step)."""
  y = np.round((1 - signal) * (LINE_HEIGHT - 1)).astype(int)  # [N, T]: the row of each step
  previous = np.concatenate([y[:, :1], y[:, :-1]], axis=1)
  rows = np.arange(LINE_HEIGHT)[None, :, None]
  low, high = np.minimum(y, previous)[:, None], np.maximum(y, previous)[:, None]
  return ((rows >= low) & (rows <= high)).astype(np.float32)


def _heat_panels(importance: np.ndarray, kind: str) -> np.ndarray:
  """Element maps [N, *elements] -> 2-D pictures [N, P, Q]: images as they are, sequences with
  time along x ([F, T]; a single feature as LINE_HEIGHT equal rows), clips as a filmstrip
  [H, T * W]."""
  if kind == "sequence" and importance.shape[-1] == 1:  # [N, T, 1]
    return np.repeat(importance[:, None, :, 0], LINE_HEIGHT, axis=1)
  if kind == "sequence":
    return importance.transpose(0, 2, 1)
  if kind == "clip":  # [N, T, H, W]
    n, t, h, w = importance.shape
    return importance.transpose(0, 2, 1, 3).reshape(n, h, t * w)
  return importance


def sanity_picture(maps: np.ndarray, path: str, scale: int, kind: str = "image") -> None:
  """A PNG of the randomization stages' element maps [R, S, *elements] of inputs of `kind`: a
  row per stage, each map scaled to its max."""
  r, s = maps.shape[:2]
  panels = _heat_panels(maps.reshape(r * s, *maps.shape[2:]), kind)  # [R*S, P, Q]
  heat = panels / np.maximum(panels.max(axis=(1, 2), keepdims=True), 1e-12)
  rows = np.repeat(heat[..., None], 3, -1) * 2.0 - 1.0
  images_lib.save_grid(rows, path, cols=s, scale=scale)


def faithfulness(explainer: Explainer, num: int, steps: int, batch_size: int, seed: int) -> dict:
  """Deletion and insertion areas of the method and of a random order on `num` eval examples."""
  rng = np.random.default_rng(seed)
  areas = {
    k: [] for k in ("method_deletion", "method_insertion", "random_deletion", "random_insertion")
  }
  for start in range(0, min(num, len(explainer.inputs)), batch_size):
    x = explainer.inputs[start : min(start + batch_size, num)]
    maps, predicted = explainer.maps(x)
    importance = attribution.element_map(maps)
    orders = {"method": importance, "random": rng.uniform(size=importance.shape)}
    for name, order in orders.items():
      curves = attribution.deletion_insertion(
        explainer.probs, x, order, predicted, explainer.baseline, steps=steps
      )
      areas[f"{name}_deletion"].append(curves["deletion_auc"])
      areas[f"{name}_insertion"].append(curves["insertion_auc"])
  return {k: np.concatenate(v) for k, v in areas.items()}


def picture(explainer: Explainer, num: int, path: str, scale: int) -> list[str]:
  """Writes the input | map | overlay PNG of the first `num` eval examples (see `draw`); returns
  each one's "predicted/true"."""
  x, labels = explainer.inputs[:num], explainer.labels[:num]
  maps, predicted = explainer.maps(x)
  captions = [f"{p}/{t}" for p, t in zip(predicted, labels, strict=True)]
  draw(x, attribution.element_map(maps), captions, path, scale, explainer.kind)
  return captions


def draw(
  x: np.ndarray, importance: np.ndarray, captions: list[str], path: str, scale: int, kind: str
) -> None:
  """Writes the input | map | overlay PNG of inputs x [N, ...] of `kind` and their element maps
  [N, *elements]: images and sequences in three rows (input, map, overlay) of a column each,
  clips in a block each (frames, maps and overlays in rows); captions over columns or blocks."""
  axes = tuple(range(1, importance.ndim))
  heat = importance / np.maximum(importance.max(axis=axes, keepdims=True), 1e-12)  # [0, 1] each
  gray = x if kind == "sequence" else x.mean(-1)  # [N, *elements]
  gray = (gray - gray.min(axis=axes, keepdims=True)) / np.maximum(
    np.ptp(gray, axis=axes, keepdims=True), 1e-12
  )
  if kind == "sequence":
    gray = _line_plot(gray[..., 0]) if x.shape[-1] == 1 else gray.transpose(0, 2, 1)
    heat = _heat_panels(heat, kind)  # [N, P, T]
  rgb = lambda a: np.repeat(a[..., None], 3, -1)
  overlay = np.stack([np.maximum(0.6 * gray, heat), 0.6 * gray, 0.6 * gray], -1)
  if kind == "clip":  # [N, T, H, W]: a block of 3 rows of T frames per clip
    block = lambda i: np.concatenate([rgb(gray[i]), rgb(heat[i]), overlay[i]]) * 2.0 - 1.0
    blocks = [images_lib.grid(block(i), cols=x.shape[1]) for i in range(len(x))]
    _save_captioned(blocks, [[c] for c in captions], path, scale)
  else:
    rows = np.concatenate([rgb(gray), rgb(heat), overlay]) * 2.0 - 1.0  # [3N, P, Q, 3]
    _save_captioned([images_lib.grid(rows, cols=len(x))], [captions], path, scale)


def _save_captioned(grids: list[np.ndarray], captions: list[list[str]], path: str, scale: int):
  """Stacks uint8 pictures, each upscaled by `scale` under a line of its captions (spread evenly
  over its width), into one PNG."""
  from PIL import Image, ImageDraw

  images = [
    Image.fromarray(g).resize((g.shape[1] * scale, g.shape[0] * scale), Image.NEAREST)
    for g in grids
  ]
  height = sum(HEADER + image.height for image in images)
  canvas = Image.new("RGB", (max(image.width for image in images), height), "white")
  draw, top = ImageDraw.Draw(canvas), 0
  for image, line in zip(images, captions, strict=True):
    canvas.paste(image, (0, top + HEADER))
    width = image.width / len(line)
    for i, caption in enumerate(line):
      draw.text((i * width + 4, top + 1), caption, fill="black")
    top += HEADER + image.height
  canvas.save(path)


def _describe_baseline(explainer: Explainer) -> str:
  """What the baseline is, in words and values."""
  values = np.round(explainer.baseline, 4).tolist()
  if len(values) <= 4:
    shown = str(values)
  elif min(values) == max(values):
    shown = f"{values[0]} for each of {len(values)}"
  else:
    shown = f"{len(values)} values in [{min(values)}, {max(values)}]"
  per = "feature" if explainer.kind == "sequence" else "channel"
  if explainer.baseline_name == "min" and explainer.kind != "sequence":
    return f"black (the normalised value {shown})"
  if explainer.baseline_name == "zero":
    return "zero"
  what = {"min": "minimum", "mean": "mean"}[explainer.baseline_name]
  return f"the eval inputs' {what} per {per} ({shown})"


def record_dir(workdir: str, method: str) -> str:
  """The default folder of a run's record for `method`."""
  return os.path.join(workdir, "explain", f"method={method}")


def measures(areas: dict | None, rows: list | None) -> dict:
  """The record's numbers from `faithfulness`'s areas and `sanity`'s rows (either may be None):
  means over the examples."""
  final = {}
  if areas is not None:
    for curve in ("deletion", "insertion"):
      final[f"{curve}_auc"] = float(areas[f"method_{curve}"].mean())
      final[f"random_{curve}_auc"] = float(areas[f"random_{curve}"].mean())
    final["deletion_ratio"] = final["deletion_auc"] / final["random_deletion_auc"]
    final["num_faithfulness"] = len(areas["method_deletion"])
  if rows:
    final["sanity_signed_output"] = float(rows[0][1]["signed"].mean())
    final["sanity_signed_all"] = float(rows[-1][1]["signed"].mean())
    final["sanity_abs_all"] = float(rows[-1][1]["abs"].mean())
    final["num_sanity"] = len(rows[0][1]["signed"])
  return final


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  start = time.perf_counter()
  try:
    window = tuple(int(v) for v in FLAGS.window) or None
    explainer = Explainer(
      FLAGS.workdir,
      FLAGS.method,
      FLAGS.seed,
      baseline=FLAGS.baseline,
      window=window,
      layer=_parse_layer(FLAGS.gradcam_layer),
    )
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"explain: error: {e}")
  noun = explainer.kind + "s"
  what = FLAGS.method
  if explainer.window is not None:
    what += f" (window {'x'.join(map(str, explainer.window))})"
  if explainer.layer is not None:
    what += f" (layer {explainer.layer[0]}, {'x'.join(map(str, explainer.layer[1]))})"
  print(f"{what} maps of {FLAGS.workdir} (step {explainer.run.step}); "
        f"baseline: {_describe_baseline(explainer)}")  # fmt: skip
  if FLAGS.out:
    captions = picture(explainer, FLAGS.num, FLAGS.out, FLAGS.scale)
    heads = "blocks" if explainer.kind == "clip" else "columns"
    print(f"wrote {FLAGS.out}: input | map | overlay, {heads} predicted/true {' '.join(captions)}")
  show = lambda v: f"{v.mean():.4f} +- {v.std(ddof=1):.4f}"
  final = {}
  if FLAGS.faithfulness:
    areas = faithfulness(explainer, FLAGS.faithfulness, FLAGS.steps, FLAGS.batch_size, FLAGS.seed)
    final.update(measures(areas, None))
    for curve in ("deletion", "insertion"):
      ratio = final[f"{curve}_auc"] / final[f"random_{curve}_auc"]
      print(
        f"{curve} AUC over {final['num_faithfulness']} eval {noun} ({FLAGS.steps} steps): "
        f"{FLAGS.method} {show(areas[f'method_{curve}'])}, random order "
        f"{show(areas[f'random_{curve}'])}, ratio {ratio:.3f}"
      )
  if FLAGS.sanity:
    rows, maps = sanity(explainer, FLAGS.sanity, FLAGS.batch_size, FLAGS.seed)
    final.update(measures(None, rows))
    print(
      f"Parameter randomization ({FLAGS.method}, {final['num_sanity']} eval {noun}; Spearman "
      "rank correlation with the trained model's maps, mean +- std; layers re-initialised from "
      "the top down):"
    )
    print("| re-initialised down to | abs maps | signed maps |\n| --- | --- | --- |")
    for name, rho in rows:
      print(f"| {name} | {show(rho['abs'])} | {show(rho['signed'])} |")
    if FLAGS.sanity_out:
      sanity_picture(maps, FLAGS.sanity_out, FLAGS.scale, explainer.kind)
      print(f"wrote {FLAGS.sanity_out}: rows trained, then " + ", ".join(n for n, _ in rows))
  if final:
    _write_record(explainer, final, time.perf_counter() - start)


def _write_record(explainer: Explainer, final: dict, wall_time_s: float) -> None:
  """Writes the record of this command's measurements (`final`, from `measures`)."""
  from jaxvision.tools import record

  settings = {
    "method": FLAGS.method,
    "baseline": explainer.baseline_name,
    "steps": FLAGS.steps,
    "seed": FLAGS.seed,
    "faithfulness": FLAGS.faithfulness,
    "sanity": FLAGS.sanity,
  }
  # as given (what they resolved to is under "maps"), so that the defaults label no row
  if FLAGS["gradcam_layer"].present:
    settings["gradcam_layer"] = FLAGS.gradcam_layer
  if FLAGS["window"].present:
    settings["window"] = ",".join(FLAGS.window)
  maps = {}
  if explainer.layer is not None:
    maps["layer"], maps["layer_positions"] = explainer.layer[0], list(explainer.layer[1])
  if explainer.window is not None:
    maps["window"] = list(explainer.window)
  command = record.command_line("explain")
  made = record.make(
    FLAGS.workdir, "explain", settings, final, METRICS, command, wall_time_s, maps=maps
  )
  uses = {"num_faithfulness": "the areas", "num_sanity": "the randomization test"}
  counts = [f"{final[k]:,} for {what}" for k, what in uses.items() if k in final]
  made["dataset"] = f"{made['dataset']}; its first eval examples: {', '.join(counts)}"
  directory = FLAGS.record_dir or record_dir(FLAGS.workdir, FLAGS.method)
  record.write(directory, made)
  print(f"wrote {directory}/results.json")


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
