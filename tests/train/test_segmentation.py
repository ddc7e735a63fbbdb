"""Segmentation: the U-Net, the losses, IoU from a confusion matrix, the evaluator end to end (a
perfect prediction scores 1, a damaged one less) and a short training on generated scenes."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import scenes_segmentation
from jaxvision import data, models, parallel
from jaxvision.evaluators import common as evaluators
from jaxvision.evaluators import segmentation as seg_eval
from jaxvision.models import layers, unet
from jaxvision.tasks import segmentation
from jaxvision.train import trainer


def tiny_config(mnist_path, steps=8):
  """A 3-level U-Net of 8-32 channels on 48x48 scenes of 1-3 digits."""
  config = scenes_segmentation.get_config()
  config.data.update(
    data_dir=str(mnist_path),
    size=48,
    min_side=16,
    max_side=28,
    max_digits=3,
    batch_size=16,
    eval_batch_size=16,
    num_eval=32,
  )
  config.model = models.model_config("unet_tiny")
  config.num_train_steps = steps
  config.log_every_steps = config.eval_every_steps = config.checkpoint.every_steps = steps
  config.schedule.warmup_steps = 1
  config.augment.max_shift = 4
  config.evaluators.eval.png_scenes = 2
  return config


def test_unet_maps_images_to_per_pixel_logits_at_any_depth():
  for features in [(8,), (8, 16), (4, 8, 16, 32)]:
    model = unet.UNet(num_classes=11, features=features)
    x = jnp.zeros((2, 32, 32, 1))
    variables = model.init(jax.random.key(0), x, train=False)
    assert model.apply(variables, x, train=False).shape == (2, 32, 32, 11)
  with pytest.raises(ValueError, match="divisible by 8"):
    model.init(jax.random.key(0), jnp.zeros((1, 36, 36, 1)), train=False)


def test_upsample_is_nearest_neighbour():
  x = jnp.arange(2 * 2 * 3, dtype=jnp.float32).reshape(1, 2, 2, 3)
  np.testing.assert_array_equal(layers.upsample(x), jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


def test_dice_loss_is_zero_when_right_and_near_one_when_wrong():
  targets = jnp.array([[[0, 1], [2, 2]]])  # [1, 2, 2]
  onehot = jax.nn.one_hot(targets, 4)  # class 3 is absent
  assert float(segmentation.dice_loss(50.0 * onehot, onehot)[0]) < 1e-3
  wrong = jax.nn.one_hot((targets + 1) % 3, 4)
  assert float(segmentation.dice_loss(50.0 * wrong, onehot)[0]) > 0.6
  # An absent class is the cross-entropy's business: predicting it costs Dice only through
  # the present classes it takes pixels from.
  absent = jax.nn.one_hot(jnp.full_like(targets, 3), 4)
  # present classes of 1, 1 and 2 pixels, none predicted: Dice (0 + 1) / (size + 1) each
  expected = 1.0 - (1 / 2 + 1 / 2 + 1 / 3) / 3
  np.testing.assert_allclose(segmentation.dice_loss(50.0 * absent, onehot), [expected], 1e-3)


def test_iou_from_a_hand_built_confusion_matrix():
  targets = jnp.array([0, 0, 0, 1, 1, 2])
  predicted = jnp.array([0, 0, 1, 1, 1, 0])
  matrix = seg_eval.confusion(targets, predicted, jnp.ones(6), 4)
  np.testing.assert_array_equal(matrix, [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
  per_class = seg_eval.iou(matrix)
  # class 0: 2 hits / (3 true + 3 predicted - 2); class 1: 2 / (2 + 3 - 2); class 2: 0 / 1
  np.testing.assert_allclose(per_class[:3], [2 / 4, 2 / 3, 0.0])
  assert np.isnan(per_class[3])  # neither true nor predicted: left out of the means
  masked = seg_eval.confusion(targets, predicted, jnp.array([1, 1, 1, 1, 1, 0]), 4)
  assert float(masked.sum()) == 5


def _evaluator(config, predict_fn, tmp_path):
  dataset = data.load_dataset(config.data)
  context = evaluators.Context(
    predict_fns={"predict": predict_fn},
    dataset=dataset,
    strategy=parallel.Strategy(1),
    workdir=str(tmp_path),
    key=jax.random.key(0),
    batch_size=16,
    info={"num_pixel_classes": 11},
  )
  return seg_eval.Evaluator("eval", context, png_scenes=2), dataset


def test_the_evaluator_scores_the_truth_1_and_damaged_maps_less(mnist_path, tmp_path):
  config = tiny_config(mnist_path)
  truth = lambda state, batch: 10.0 * jax.nn.one_hot(batch["targets"], 11)
  evaluator, dataset = _evaluator(config, truth, tmp_path)
  out = evaluator.run(None, 0)
  assert out["eval_miou"] == out["eval_miou_objects"] == out["eval_pixel_accuracy"] == 1.0
  assert (tmp_path / "samples" / "step_0.png").is_file()

  def shifted(state, batch):  # every map one pixel to the right: the strokes' edges are wrong
    return 10.0 * jax.nn.one_hot(jnp.roll(batch["targets"], 1, axis=-1), 11)

  damaged = _evaluator(config, shifted, tmp_path)[0].run(None, 1)
  assert 0.3 < damaged["eval_miou_objects"] < damaged["eval_miou"] < 0.95
  assert damaged["eval_iou_0"] > 0.9  # the background barely changes


def test_a_short_training_lowers_the_loss_and_writes_its_metrics(mnist_path, tmp_path):
  config = tiny_config(mnist_path, steps=30)
  config.log_every_steps = 5
  config.optimizer.learning_rate = 1e-2
  config.dice_weight = 0.0
  config.parallel.num_devices = 1  # one compile of the step (the 8-device paths: other tests)
  outcome = trainer.train_and_evaluate(config, str(tmp_path))
  assert outcome.status == "finished"
  rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [r["train_loss"] for r in rows if "train_loss" in r]
  assert losses[-1] < 0.6 * losses[0], losses
  results = json.loads((tmp_path / "results.json").read_text())
  assert {"eval_miou", "eval_miou_objects", "eval_pixel_accuracy"} <= set(results["final"])
  assert results["final"]["eval_pixel_accuracy"] > 0.8  # background at least
  assert (tmp_path / "samples" / "step_30.png").is_file()


def test_bad_keys_are_config_errors(mnist_path):
  config = tiny_config(mnist_path)
  config.dice_weight = -1.0
  with pytest.raises(Exception, match="dice_weight"):
    segmentation.validate(config, None)
  config = tiny_config(mnist_path)
  config.data = data.data_config("digits")
  with pytest.raises(Exception, match="data.source='scenes'"):
    segmentation.validate(config, None)
  config = tiny_config(mnist_path)
  config.evaluators = ml_collections.ConfigDict({"eval": dict(type="segmentation")})
  assert segmentation.Task(config, segmentation.base.DataInfo((48, 48, 1), {"num_classes": 10}))
