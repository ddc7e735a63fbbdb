"""Detection: COCO box AP (pycocotools) of the trainer's decoded detections, and a PNG of them.

Over the whole eval split (padded batches, masked), the trainer's `pred` function ("detect")
decodes each scene's boxes, scores and classes; they are gathered to the host with the ground
truth and scored by pycocotools' COCOeval (bbox, at most 100 detections per image, every area):
`<name>_ap` is AP@[.5:.95], `<name>_ap50` AP@0.5 and `<name>_ap75` AP@0.75, each the mean over
the classes that have objects, and `<name>_ap50_class<k>` the AP@0.5 of class k alone (logged and
kept in results.json's final metrics, left out of the report's tables). Clips are scored per
frame: every frame of every eval clip is one COCO image, so the AP is over all frames.

`coco_metrics` is the COCO glue as a pure function of arrays (what the tests call). Every
evaluation also writes `<workdir>/samples/step_N.png`: the first eval scenes (or, for clips, the
frames of the first clips, one row each) with the true boxes in red and the detections scoring at
least `png_min_score` in green, labelled with class and score.
"""

from __future__ import annotations

import contextlib
import io
import os

import jax
import numpy as np

from jaxvision import workdir as workdir_lib
from jaxvision.evaluators.common import MetricSpec, rows_over_split


def coco_metrics(
  gt_boxes: np.ndarray,
  gt_labels: np.ndarray,
  boxes: np.ndarray,
  scores: np.ndarray,
  classes: np.ndarray,
  num_classes: int,
  min_score: float = 0.0,
) -> dict:
  """COCO box AP of detections against padded ground truth, one COCO image per row.

  Args:
    gt_boxes: [N, M, 4] (x0, y0, x1, y1), x1/y1 exclusive (width x1 - x0), in pixels.
    gt_labels: [N, M] class ids in [0, num_classes); -1 (or an empty box) marks padding.
    boxes: detections [N, K, 4], as gt_boxes.
    scores: [N, K].
    classes: [N, K] class ids.
    num_classes: the classes (COCO categories 1..num_classes).
    min_score: detections scoring below it are dropped (COCOeval keeps 100 per image anyway).

  Returns:
    {"ap": AP@[.5:.95], "ap50", "ap75", "ap50_class<k>" for each class k with objects}; AP is
    0.0 without detections and nan without objects.
  """
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval

  def xywh(box):
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]

  annotations = []
  for i, (image_boxes, image_labels) in enumerate(zip(gt_boxes, gt_labels, strict=True)):
    for box, label in zip(image_boxes, image_labels, strict=True):
      if label >= 0 and box[2] > box[0] and box[3] > box[1]:  # an empty box is padding too
        annotations.append(
          {
            "id": len(annotations) + 1,  # COCO ids start at 1
            "image_id": i + 1,
            "category_id": int(label) + 1,
            "bbox": xywh(box),
            "area": float((box[2] - box[0]) * (box[3] - box[1])),
            "iscrowd": 0,
          }
        )
  present = sorted({a["category_id"] - 1 for a in annotations})
  if not annotations:
    return {"ap": float("nan"), "ap50": float("nan"), "ap75": float("nan")}
  detections = [
    {"image_id": i + 1, "category_id": int(c) + 1, "bbox": xywh(box), "score": float(s)}
    for i in range(len(boxes))
    for box, s, c in zip(boxes[i], scores[i], classes[i], strict=True)
    if s >= min_score
  ]
  if not detections:
    return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0, **{f"ap50_class{k}": 0.0 for k in present}}
  with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
    truth = COCO()
    truth.dataset = {
      "images": [{"id": i + 1} for i in range(len(gt_boxes))],
      "annotations": annotations,
      "categories": [{"id": k + 1} for k in range(num_classes)],
    }
    truth.createIndex()
    evaluation = COCOeval(truth, truth.loadRes(detections), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
  # precision [IoU thresholds, recall thresholds, classes, areas, max dets]: IoU 0.5, every
  # area, 100 detections; -1 where a class has no objects.
  precision = evaluation.eval["precision"][0, :, :, 0, -1]
  metrics = {"ap": evaluation.stats[0], "ap50": evaluation.stats[1], "ap75": evaluation.stats[2]}
  metrics.update({f"ap50_class{k}": precision[:, k].mean() for k in present})
  return {k: float(v) for k, v in metrics.items()}


class Evaluator:
  """`<name>_ap50`, `<name>_ap`, `<name>_ap75`, `<name>_ap50_class<k>` and a PNG of boxes.

  Settings (`config.evaluators.<name>`):
    pred: the trainer's decoding function (default "detect": {"boxes", "scores", "classes"}).
    batch_size: scenes (or clips) per eval batch (0: `config.data.eval_batch_size`).
    min_score: detections scoring below it are not scored (they add only a recall tail).
    png_scenes: eval scenes (clips: their frames, a row each) in each PNG; 0: no PNG.
    png_scale: pixel upscaling of the PNG.
    png_min_score: detections drawn in the PNG score at least this.
  """

  def __init__(
    self,
    name: str,
    context,
    *,
    pred: str = "detect",
    batch_size: int = 0,
    min_score: float = 0.001,
    png_scenes: int = 8,
    png_scale: int = 3,
    png_min_score: float = 0.3,
  ):
    strategy = context.strategy
    self._name, self._strategy, self._workdir = name, strategy, context.workdir
    self._source = context.dataset.eval
    self._num_classes = context.dataset.num_classes
    self._batch_size = batch_size or context.batch_size
    strategy.check_batch_size(self._batch_size, f"evaluators.{name}.batch_size")
    if not 0 <= png_scenes <= len(self._source):
      raise ValueError(f"evaluators.{name}.png_scenes={png_scenes} not in [0, {len(self._source)}]")
    if png_scale < 1:
      raise ValueError(f"evaluators.{name}.png_scale={png_scale} must be >= 1")
    predict_fn = context.predict_fns[pred]

    def detect(state, batch):  # the truth and mask ride along: every host gets every row
      keep = {k: batch[k] for k in ("boxes", "labels", "mask")}
      return {**predict_fn(state, batch), **{f"true_{k}": v for k, v in keep.items()}}

    self._detect = strategy.compile(detect, compiler_options=context.compiler_options)
    self._min_score, self._png_min_score = min_score, png_min_score
    self._png_scenes, self._png_scale = png_scenes, png_scale
    self.metrics = (
      MetricSpec(f"{name}_ap50", "AP@0.5", "float", "higher"),
      MetricSpec(f"{name}_ap", "AP@[.5:.95]", "float", "higher"),
      MetricSpec(f"{name}_ap75", "AP@0.75", "float", "higher"),
    )

  def provenance(self) -> dict:
    return {}

  def detections(self, state) -> dict:
    """Every eval scene's detections and truth, in order, as numpy: {"boxes", "scores",
    "classes", "true_boxes", "true_labels"} (clips: each with its frame axis)."""
    parts = list(
      rows_over_split(
        self._detect, state, self._source, self._batch_size, self._strategy, mask="true_mask"
      )
    )
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def run(self, state, step: int) -> dict:
    found = self.detections(state)
    frames = per_frame(found)
    metrics = coco_metrics(
      frames["true_boxes"],
      frames["true_labels"],
      frames["boxes"],
      frames["scores"],
      frames["classes"],
      self._num_classes,
      self._min_score,
    )
    if self._png_scenes and jax.process_index() == 0:
      path = os.path.join(workdir_lib.samples_dir(self._workdir), f"step_{step}.png")
      inputs = self._source.get(np.arange(self._png_scenes))["inputs"]
      shown = {k: v[: self._png_scenes] for k, v in found.items()}
      save_boxes_png(path, inputs, shown, self._png_min_score, self._png_scale)
    return {f"{self._name}_{k}": v for k, v in metrics.items()}


def per_frame(found: dict) -> dict:
  """Detections and truth of clips ("boxes" [N, T, K, 4], "true_labels" [N, M]) as N * T scenes
  (labels repeated per frame); of scenes, unchanged."""
  if found["boxes"].ndim != 4:
    return found
  frames = found["boxes"].shape[1]
  out = {k: v.reshape(-1, *v.shape[2:]) for k, v in found.items() if k != "true_labels"}
  out["true_labels"] = np.repeat(found["true_labels"], frames, axis=0)
  return out


def save_boxes_png(
  path: str, inputs: np.ndarray, found: dict, min_score: float = 0.3, scale: int = 3
) -> str:
  """Writes scenes with their true boxes (red) and detections (green, "class score") as a PNG.

  Args:
    path: the PNG file.
    inputs: scenes [N, S, S, C] in [0, 1] (a grid of 4 columns), or clips [N, T, S, S, C] (a row
      of frames per clip).
    found: `Evaluator.detections` of those N scenes or clips.
    min_score: the lowest score drawn.
    scale: pixel upscaling.

  Returns:
    `path`.
  """
  from PIL import Image, ImageDraw

  clips = inputs.ndim == 5
  cols = inputs.shape[1] if clips else min(4, len(inputs))
  frames, found = inputs.reshape(-1, *inputs.shape[-3:]), per_frame(found)
  side, pad = inputs.shape[-2] * scale, 2
  rows = -(-len(frames) // cols)
  canvas = Image.new("RGB", (cols * (side + pad) + pad, rows * (side + pad) + pad), "white")
  draw = ImageDraw.Draw(canvas)
  for i, frame in enumerate(frames):
    gray = np.clip(np.rint(frame.mean(-1) * 255), 0, 255).astype(np.uint8)
    tile = Image.fromarray(gray).convert("RGB").resize((side, side), Image.NEAREST)
    x, y = pad + (i % cols) * (side + pad), pad + (i // cols) * (side + pad)
    canvas.paste(tile, (x, y))
    to_canvas = lambda box, x=x, y=y: [x + box[0] * scale, y + box[1] * scale,
                                       x + box[2] * scale - 1, y + box[3] * scale - 1]  # fmt: skip
    for box, label in zip(found["true_boxes"][i], found["true_labels"][i], strict=True):
      if label >= 0:
        draw.rectangle(to_canvas(box), outline=(255, 60, 60))
    for box, score, label in zip(
      found["boxes"][i], found["scores"][i], found["classes"][i], strict=True
    ):
      if score >= min_score:
        corners = to_canvas(box)
        draw.rectangle(corners, outline=(40, 220, 40), width=2)
        draw.text((corners[0] + 2, corners[1] + 1), f"{label} {score:.2f}", fill=(40, 220, 40))
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  canvas.save(path)
  return path
