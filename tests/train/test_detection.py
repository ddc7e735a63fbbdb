"""The detection family: target encoding and decoding, the focal loss, COCO AP against hand-made
cases, the evaluator over padded batches under pmap, config errors, and short trainings on
generated scenes (still and clips) that lower the loss.

Tiny sizes throughout: 48x48 scenes of 1-3 digits of 12-24 px, `centernet_tiny` (two stages of
8/16 channels, group norm), batches of 8.
"""

import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from experiments import scenes_detection
from jaxvision import data, models, parallel
from jaxvision.config_dict import ConfigError
from jaxvision.evaluators import common as evaluators_lib
from jaxvision.evaluators import detection as detection_evaluator
from jaxvision.models import centernet
from jaxvision.tasks import detection
from jaxvision.tasks.base import DataInfo
from jaxvision.train import trainer
from tests.conftest import MNIST_FILES, mnist_dir


def tiny_config(steps: int = 8, frames: int = 1):
  """The experiment, shrunk: 8 scenes of 48x48 (or clips of `frames`) per step."""
  if not all((mnist_dir() / f).is_file() for f in MNIST_FILES):
    pytest.skip(f"offline MNIST IDX files not found in {mnist_dir()} (set JAXVISION_MNIST_DIR)")
  config = scenes_detection.get_config("video" if frames > 1 else "still")
  config.data.update(
    data_dir=str(mnist_dir()),
    size=48,
    max_digits=3,
    min_side=12,
    max_side=24,
    frames=frames,
    batch_size=8,
    eval_batch_size=8,
    num_train=512,
    num_eval=12,  # one full eval batch and one padded with 4 empty scenes
  )
  config.model = models.model_config("centernet_tiny")
  config.augment.max_shift = 2
  config.detection.top_k = 10
  config.optimizer.learning_rate = 1e-2
  config.schedule.warmup_steps = 1
  config.num_train_steps = steps
  config.log_every_steps = 2
  config.eval_every_steps = config.checkpoint.every_steps = steps
  config.checkpoint.keep = 10
  config.evaluators.eval.update(png_scenes=2, png_scale=1)
  return config


# ---------------------------------------------------------------- targets, losses, decoding


def centernet_radius(height, width, min_overlap=0.7):
  """CenterNet's `gaussian_radius` (src/lib/utils/image.py), transcribed."""
  b1 = height + width
  c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
  r1 = (b1 + math.sqrt(b1**2 - 4 * c1)) / 2
  b2 = 2 * (height + width)
  c2 = (1 - min_overlap) * width * height
  r2 = (b2 + math.sqrt(b2**2 - 4 * 4 * c2)) / 2
  a3 = 4 * min_overlap
  b3 = -2 * min_overlap * (height + width)
  c3 = (min_overlap - 1) * width * height
  r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
  return max(0, int(min(r1, r2, r3)))


BOXES = np.array(
  [
    [[10, 20, 30, 44], [50, 50, 70, 90], [0, 0, 0, 0]],  # a 3 and a 7, one padding row
    [[4, 4, 16, 10], [0, 0, 0, 0], [0, 0, 0, 0]],  # a 0
  ],
  np.float32,
)
LABELS = np.array([[3, 7, -1], [0, -1, -1]], np.int32)


def test_the_radius_is_centernets():
  sizes = [(1, 1), (2, 5), (5, 5), (6, 4), (10, 3), (12, 12), (30, 20)]
  got = detection.gaussian_radius(*(jnp.array(s, jnp.float32) for s in zip(*sizes, strict=True)))
  assert got.tolist() == [centernet_radius(h, w) for h, w in sizes]
  assert got.tolist()[-1] > 1  # not all zero: large boxes get a wide bump


def test_targets_peak_at_box_centres_and_decoding_recovers_the_boxes():
  encode = jax.jit(detection.encode_targets, static_argnums=(2, 3))
  targets = encode(jnp.asarray(BOXES), jnp.asarray(LABELS), (24, 24), 10)
  heatmap = np.asarray(targets["heatmap"])  # [2, 24, 24, 10]
  # Centres (20, 32), (60, 70), (10, 7) px: cells (5, 8), (15, 17), (2, 1) (x, y).
  peaks = sorted(map(tuple, np.argwhere(heatmap == 1.0)))
  assert peaks == [(0, 8, 5, 3), (0, 17, 15, 7), (1, 1, 2, 0)]  # (example, y, x, class)
  assert heatmap[0, ..., [0, 1, 2, 4, 5, 6, 8, 9]].max() == 0.0  # absent classes stay empty
  assert 0 < heatmap[0, 8, 6, 3] < 1  # a bump around the centre, not a single cell
  np.testing.assert_array_equal(targets["valid"], [[1, 1, 0], [1, 0, 0]])
  np.testing.assert_allclose(targets["size"][0, 0], [5.0, 6.0])  # 20 x 24 px in cells of 4
  np.testing.assert_allclose(targets["offset"][0, 1], [0.0, 0.5])  # (60, 70) / 4 - (15, 17)
  # The targets written into maps at the centre cells decode to the boxes themselves.
  maps = {}
  for name in ("size", "offset"):
    flat = jnp.zeros((2, 24 * 24, 2))
    flat = flat.at[jnp.arange(2)[:, None], targets["index"]].set(
      targets[name] * targets["valid"][..., None]
    )
    maps[name] = flat.reshape(2, 24, 24, 2)
  decode = jax.jit(detection.decode, static_argnums=(3,))
  found = decode(targets["heatmap"], maps["size"], maps["offset"], 3)
  np.testing.assert_array_equal(found["scores"][0, :2], [1.0, 1.0])
  first = np.argsort(found["classes"][0, :2])  # the 3 and the 7, whichever scored first
  np.testing.assert_allclose(found["boxes"][0, :2][first], BOXES[0, :2], atol=1e-4)
  assert found["classes"][0, :2][first].tolist() == [3, 7]
  np.testing.assert_allclose(found["boxes"][1, 0], BOXES[1, 0], atol=1e-4)
  assert found["classes"][1, 0] == 0 and found["scores"][1, 0] == 1.0
  assert found["scores"][1, 1] < 1.0  # no second object: only weaker peaks follow


def test_peaks_keep_local_maxima_only():
  heat = jnp.zeros((1, 5, 5, 1)).at[0, 1, 1, 0].set(0.9).at[0, 1, 2, 0].set(0.5)
  heat = heat.at[0, 4, 4, 0].set(0.3)
  kept = np.asarray(detection.peaks(heat))[0, ..., 0]
  assert kept[1, 1] == pytest.approx(0.9) and kept[1, 2] == 0.0 and kept[4, 4] == pytest.approx(0.3)


def test_focal_loss_on_a_hand_built_case():
  heatmap = jnp.array([1.0, 0.5, 0.0]).reshape(1, 1, 3, 1)
  logits = jnp.array([0.0, 0.0, math.log(1 / 3)]).reshape(1, 1, 3, 1)  # p = 0.5, 0.5, 0.25
  expected = (
    -((1 - 0.5) ** 2) * math.log(0.5)  # the centre
    - (1 - 0.5) ** 4 * 0.5**2 * math.log(1 - 0.5)  # half-way up a bump
    - (1 - 0.0) ** 4 * 0.25**2 * math.log(1 - 0.25)  # background
  )
  assert float(detection.focal_loss(logits, heatmap, 1.0)) == pytest.approx(expected, rel=1e-5)
  assert float(detection.focal_loss(logits, heatmap, 2.0)) == pytest.approx(expected / 2, 1e-5)


def test_losses_are_normalised_by_the_global_object_count_under_pmap():
  """8 devices, one scene each with 0-3 objects: the devices' mean loss and gradient equal the
  whole batch's (normalised by all its objects, not each device's own)."""
  rng = np.random.default_rng(0)
  n = jax.device_count()
  labels = np.full((n, 3), -1, np.int32)
  boxes = np.zeros((n, 3, 4), np.float32)
  for i in range(n):
    for m in range(i % 4):  # 0, 1, 2, 3 objects
      x, y = rng.integers(0, 60, 2)
      boxes[i, m] = [x, y, x + rng.integers(8, 30), y + rng.integers(8, 30)]
      labels[i, m] = rng.integers(0, 10)
  encode = jax.jit(detection.encode_targets, static_argnums=(2, 3))
  targets = encode(jnp.asarray(boxes), jnp.asarray(labels), (24, 24), 10)
  outputs = {
    "heatmap": jnp.asarray(rng.normal(size=(n, 24, 24, 10)), jnp.float32) - 2.0,
    "size": jnp.asarray(rng.normal(size=(n, 24, 24, 2)) + 4.0, jnp.float32),
    "offset": jnp.asarray(rng.uniform(size=(n, 24, 24, 2)), jnp.float32),
  }

  def loss(outputs, targets, axis_name=None):
    return detection.detection_losses(outputs, targets, axis_name=axis_name)["loss"]

  whole, whole_grad = jax.jit(jax.value_and_grad(loss))(outputs, targets)
  split = lambda x: x.reshape(n, 1, *x.shape[1:])
  value, grad = jax.pmap(
    lambda o, t: (jax.lax.pmean(loss(o, t, "d"), "d"), jax.grad(loss)(o, t, "d")), axis_name="d"
  )(jax.tree.map(split, outputs), jax.tree.map(split, targets))
  assert float(value[0]) == pytest.approx(float(whole), rel=1e-5)
  # Each device's gradient of its own rows is n times the whole batch's gradient of them (the
  # strategies' pmean of the gradients divides by n).
  for name in outputs:
    local = np.asarray(grad[name]).reshape(whole_grad[name].shape)
    np.testing.assert_allclose(local / n, whole_grad[name], rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------- COCO AP


def _gt():
  """Three scenes of 1-2 digits (padded to 3 rows)."""
  boxes = np.array(
    [
      [[10, 10, 30, 40], [50, 20, 80, 60], [0, 0, 0, 0]],
      [[5, 5, 25, 30], [0, 0, 0, 0], [0, 0, 0, 0]],
      [[40, 40, 70, 80], [10, 60, 30, 90], [0, 0, 0, 0]],
    ],
    np.float32,
  )
  labels = np.array([[1, 7, -1], [1, -1, -1], [3, 7, -1]], np.int32)
  return boxes, labels


def test_ground_truth_as_detections_has_ap_one_and_perturbed_boxes_less():
  boxes, labels = _gt()
  scores = (labels >= 0).astype(np.float32)  # padding rows score 0 and are dropped
  classes = np.maximum(labels, 0)
  perfect = detection_evaluator.coco_metrics(boxes, labels, boxes, scores, classes, 10, 0.01)
  assert perfect == pytest.approx(
    {"ap": 1, "ap50": 1, "ap75": 1, "ap50_class1": 1, "ap50_class3": 1, "ap50_class7": 1}
  )
  nudged = boxes + np.array([3, 3, 3, 3], np.float32)  # IoU 0.6-0.8: found at 0.5, not at .95
  off = detection_evaluator.coco_metrics(boxes, labels, nudged, scores, classes, 10, 0.01)
  assert off["ap50"] == 1.0 and off["ap"] < 0.6
  moved = boxes + np.array([12, 12, 12, 12], np.float32)  # IoU < 0.5 for most
  lost = detection_evaluator.coco_metrics(boxes, labels, moved, scores, classes, 10, 0.01)
  assert lost["ap50"] < 0.5
  wrong = detection_evaluator.coco_metrics(boxes, labels, boxes, scores, (classes + 1) % 10, 10)
  assert wrong["ap50"] == 0.0
  none = detection_evaluator.coco_metrics(boxes, labels, boxes, 0 * scores, classes, 10, 0.01)
  assert none["ap"] == 0.0 and none["ap50_class7"] == 0.0


def test_ap_matches_hand_computed_cases():
  # One class, two scenes with one digit each; detections by score: the first digit (a hit), a
  # box on empty canvas (a false positive), the second digit (a hit). Precision/recall after
  # each: (1, 1/2), (1/2, 1/2), (2/3, 1). COCO's 101-point interpolated precision is 1 at the
  # 51 recall levels 0..0.50 and 2/3 at the 50 levels 0.51..1: AP = (51 + 50 * 2/3) / 101,
  # the same at every IoU threshold (the hits are exact, the miss overlaps nothing).
  gt = np.array([[[0, 0, 10, 10], [0, 0, 0, 0]], [[20, 20, 30, 30], [0, 0, 0, 0]]], np.float32)
  labels = np.array([[0, -1], [0, -1]], np.int32)
  found = np.array([[[0, 0, 10, 10], [0, 0, 0, 0]], [[50, 50, 60, 60], [20, 20, 30, 30]]])
  scores = np.array([[0.9, 0.0], [0.8, 0.7]], np.float32)
  classes = np.zeros((2, 2), np.int32)
  metrics = detection_evaluator.coco_metrics(gt, labels, found, scores, classes, 10, 0.01)
  expected = (51 + 50 * 2 / 3) / 101
  for key in ("ap", "ap50", "ap75", "ap50_class0"):
    assert metrics[key] == pytest.approx(expected, abs=1e-6), key
  # One digit found with IoU 100 / 147 = 0.68: a hit at the thresholds 0.50-0.65 (4 of the 10),
  # a miss above: AP@0.5 = 1, AP@[.5:.95] = 0.4, AP@0.75 = 0.
  metrics = detection_evaluator.coco_metrics(
    gt[:1], labels[:1], np.array([[[0, 0, 10, 14.7]]]), np.ones((1, 1)), np.zeros((1, 1)), 10
  )
  assert (metrics["ap50"], metrics["ap"], metrics["ap75"]) == pytest.approx((1.0, 0.4, 0.0))


def _evaluator(config, strategy, tmp_path, predict_fns):
  dataset = data.load_dataset(config.data)
  context = evaluators_lib.Context(
    predict_fns=predict_fns,
    dataset=dataset,
    strategy=strategy,
    workdir=str(tmp_path),
    key=jax.random.key(0),
    batch_size=config.data.eval_batch_size,
  )
  return evaluators_lib.from_config(config.evaluators, context)[0], dataset


def _truth_as_detections(state, batch):
  """A perfect detector: the batch's own boxes, score 1 (0 for padding rows)."""
  del state
  labels = batch["labels"]
  if batch["boxes"].ndim == 4:  # clips: the same digits in every frame
    labels = jnp.broadcast_to(labels[:, None], batch["boxes"].shape[:3])
  return {
    "boxes": batch["boxes"],
    "scores": (labels >= 0).astype(jnp.float32),
    "classes": jnp.maximum(labels, 0),
  }


@pytest.mark.parametrize("frames", [1, 3], ids=["scenes", "clips"])
def test_the_evaluator_scores_the_truth_one_over_padded_batches_under_pmap(frames, tmp_path):
  config = tiny_config(frames=frames)
  strategy = parallel.create_strategy(parallel.parallel_config(strategy="pmap"))
  evaluator, dataset = _evaluator(config, strategy, tmp_path, {"detect": _truth_as_detections})
  found = evaluator.detections(None)
  assert len(found["boxes"]) == 12  # the padding of the second batch is gone
  expected = dataset.eval.get(np.arange(12))
  np.testing.assert_array_equal(found["true_boxes"], expected["boxes"])
  np.testing.assert_array_equal(found["true_labels"], expected["labels"])
  metrics = evaluator.run(None, step=3)
  assert metrics["eval_ap50"] == metrics["eval_ap"] == 1.0
  assert {s.name for s in evaluator.metrics} == {"eval_ap50", "eval_ap", "eval_ap75"}
  digits = {int(d) for d in expected["labels"].reshape(-1) if d >= 0}
  assert {k for k in metrics if "_class" in k} == {f"eval_ap50_class{d}" for d in digits}
  png = Image.open(tmp_path / "samples" / "step_3.png")
  side = 48 + 2  # scale 1, 2 px apart
  assert png.size == ((frames if frames > 1 else 2) * side + 2, (2 if frames > 1 else 1) * side + 2)
  pixels = np.asarray(png.convert("RGB"))
  assert ((pixels[..., 1] > 200) & (pixels[..., 0] < 100)).any()  # green boxes drawn


# ------------------------------------------------------------------------ model and config


def test_the_detector_maps_96_pixel_scenes_to_a_24_cell_grid():
  model = models.create_model(models.model_config("centernet"), num_classes=10)
  x = jnp.zeros((2, 96, 96, 1))
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert {k: v.shape for k, v in out.items()} == {
    "heatmap": (2, 24, 24, 10),
    "size": (2, 24, 24, 2),
    "offset": (2, 24, 24, 2),
  }
  with pytest.raises(ValueError, match="multiples of 16"):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x[:, :40, :40])


@pytest.mark.parametrize(
  "key,value,match",
  [
    ("detection.top_k", 0, "config.detection.top_k=0"),
    ("detection.size_weight", -1.0, "config.detection.size_weight=-1.0"),
    ("detection.min_overlap", 1.0, "config.detection.min_overlap=1.0"),
    ("augment.max_shift", -2, "config.augment.max_shift=-2"),
    ("data.size", 40, "config.data.size=40 must be a multiple of 16"),
    ("model.name", "cnn_a", "config.model.name='cnn_a' is not a CenterNet"),
    ("optimizer.learning_rate", 0.0, "config.optimizer.learning_rate"),
  ],
)
def test_bad_values_are_config_errors_naming_the_key(key, value, match):
  config = scenes_detection.get_config()
  block, name = key.split(".")
  config[block][name] = value
  with pytest.raises(ConfigError, match=match):
    detection.validate(config, None)


def test_a_source_without_boxes_is_a_config_error():
  config = scenes_detection.get_config()
  config.data = data.data_config("digits")
  with pytest.raises(ConfigError, match="config.data.source='digits' has no boxes"):
    detection.validate(config, None)


# ------------------------------------------------------------------------------ training


def _train_rows(workdir):
  rows = [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r for r in rows if "train_loss" in r], [r for r in rows if "eval_ap50" in r]


def test_a_short_training_lowers_the_loss_and_is_evaluated(tmp_path):
  config = tiny_config(steps=40)
  config.log_every_steps = 10
  outcome = trainer.train_and_evaluate(config, str(tmp_path))
  assert (outcome.status, outcome.step) == ("finished", 40)
  train, evals = _train_rows(tmp_path)
  # Window means (steps 1-10 first): the heatmap's focal loss and the L1 losses all fall.
  assert train[-1]["train_loss"] < 0.8 * train[0]["train_loss"], [r["train_loss"] for r in train]
  assert train[-1]["train_heatmap_loss"] < train[0]["train_heatmap_loss"]
  assert 0.0 <= evals[-1]["eval_ap50"] <= 1.0 and evals[-1]["eval_ap"] <= evals[-1]["eval_ap50"]
  results = json.loads((tmp_path / "results.json").read_text())
  assert [m["name"] for m in results["metrics"]] == ["eval_ap50", "eval_ap", "eval_ap75"]
  assert results["model"]["name"] == "centernet_tiny"
  assert (tmp_path / "samples" / "step_40.png").is_file()


def test_clips_are_trained_and_detected_per_frame():
  """A clip batch is its frames as scenes: the same step (shifts included) and detections."""
  config = tiny_config(frames=3)
  dataset = data.load_dataset(config.data)
  task = detection.Task(config, DataInfo.of(dataset))
  state = jax.jit(task.init_state)(jax.random.key(0))
  np.testing.assert_allclose(state.params["heatmap"]["bias"], centernet.HEATMAP_BIAS)  # p = 0.1
  clips = dataset.train.get(np.arange(4))  # inputs [4, 3, 48, 48, 1], labels [4, 3]
  step = jax.jit(task.train_step)
  _, clip_metrics = step(state, clips, jax.random.key(1))
  _, frame_metrics = step(state, detection.fold_frames(clips), jax.random.key(1))
  assert np.isfinite(float(clip_metrics["train_loss"]))
  for name, value in frame_metrics.items():
    assert float(clip_metrics[name]) == pytest.approx(float(value), rel=1e-5), name
  detect, predict = jax.jit(task.predict_fns()["detect"]), task.predict_fns()["predict"]
  found = detect(state, clips)
  assert found["boxes"].shape == (4, 3, 10, 4) and found["classes"].shape == (4, 3, 10)
  assert jax.eval_shape(predict, state, clips)["heatmap"].shape == (4, 3, 12, 12, 10)
  alone = detect(state, {"inputs": clips["inputs"][:, 1]})  # the second frames as scenes
  np.testing.assert_allclose(alone["boxes"], found["boxes"][:, 1], atol=1e-4)


def test_the_experiment_configs_validate():
  for variant in scenes_detection.VARIANTS:
    config = scenes_detection.get_config(variant)
    detection.validate(config, None)
    assert config.trainer == "detection" and "label_smoothing" not in config
  assert scenes_detection.get_sweep() == [{"seed": 0}, {"seed": 1}]
  assert isinstance(scenes_detection.get_config().detection, ml_collections.ConfigDict)
