"""The generated multi-digit scenes: deterministic, train and eval digits disjoint, boxes and class
maps that match the rendered digits, overlap bounded, moving clips, and the joint shift."""

import jax
import numpy as np
import pytest

from jaxvision import data
from jaxvision.data import augment, scenes


@pytest.fixture
def config(mnist_path):
  return data.data_config("scenes", data_dir=str(mnist_path), num_train=200, num_eval=50)


def _extent(mask: np.ndarray) -> list:
  rows, cols = np.nonzero(mask)
  return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_scenes_are_pure_functions_of_seed_and_index(config):
  dataset = data.load_dataset(config)
  first, again = dataset.train.get(np.arange(8)), data.load_dataset(config).train.get(np.arange(8))
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.array_equal(first["inputs"][0], first["inputs"][1])
  shape = {k: v.shape for k, v in first.items()}
  assert shape == {
    "inputs": (8, 96, 96, 1),
    "targets": (8, 96, 96),
    "boxes": (8, 5, 4),
    "labels": (8, 5),
    "num_objects": (8,),
  }
  assert dataset.info == {"num_classes": 10, "max_objects": 5, "canvas": 96}
  counts = first["num_objects"]
  assert ((first["labels"] >= 0).sum(1) == counts).all() and (counts >= 1).all()


def test_train_and_eval_scenes_draw_disjoint_digit_images(config):
  digits, labels = data.moving_mnist.read_digits(config, with_labels=True)
  train, eval_ = scenes.scene_makers(config, digits, labels)
  train_ids = np.concatenate([train.sample(0, i)["digit_ids"] for i in range(300)])
  eval_ids = np.concatenate([eval_.sample(1, i)["digit_ids"] for i in range(300)])
  assert train_ids.max() < config.eval_digits_from <= eval_ids.min()
  example = eval_(1, 7)  # the labels are those of the eval digit images drawn
  spec = eval_.sample(1, 7)
  n = len(spec["digit_ids"])
  np.testing.assert_array_equal(example["labels"][:n], labels[spec["digit_ids"]])


def test_boxes_and_class_maps_are_the_rendered_digits_extents(config):
  config.max_overlap = 0.0  # disjoint boxes: each digit's pixels can be told apart
  dataset = data.load_dataset(config)
  batch = dataset.train.get(np.arange(20))
  image = batch["inputs"][..., 0]
  for i in range(20):
    boxes, labels = batch["boxes"][i], batch["labels"][i]
    for k in range(batch["num_objects"][i]):
      x0, y0, x1, y1 = boxes[k].astype(int)
      assert np.array_equal(boxes[k], boxes[k].round())
      inside = np.zeros(image[i].shape, bool)
      inside[y0:y1, x0:x1] = True
      drawn = inside & (image[i] >= scenes.THRESHOLD / 255)
      assert _extent(drawn) == [x0, y0, x1, y1], (i, k)
      assert _extent(inside & (batch["targets"][i] == 1 + labels[k])) == [x0, y0, x1, y1]
    # every digit pixel belongs to a box; nothing bright lies outside them
    covered = np.zeros(image[i].shape, bool)
    for x0, y0, x1, y1 in boxes[: batch["num_objects"][i]].astype(int):
      covered[y0:y1, x0:x1] = True
    assert not (batch["targets"][i][~covered]).any()
    assert set(np.unique(batch["targets"][i])) <= {0, *(1 + labels[labels >= 0])}


def test_overlap_between_digits_is_bounded(config):
  config.update(max_overlap=0.1, min_digits=5, max_digits=5)
  batch = data.load_dataset(config).train.get(np.arange(30))
  for i in range(30):
    boxes = list(batch["boxes"][i][: batch["num_objects"][i]])
    for k, box in enumerate(boxes):
      assert scenes.covered(box, boxes[:k]) <= 0.1 + 1e-6  # by the union of earlier ones
      for other in boxes[:k]:
        assert scenes.covered(box, [other]) <= 0.1 + 1e-6
        assert scenes.covered(other, [box]) <= 0.1 + 1e-6
  assert batch["num_objects"].mean() > 3  # most scenes find room for their digits


def test_moving_scenes_start_as_the_still_scene_and_move_their_boxes(config):
  still = data.load_dataset(config).train.get(np.arange(3))
  config.frames = 6
  dataset = data.load_dataset(config)
  clips = dataset.train.get(np.arange(3))
  assert clips["inputs"].shape == (3, 6, 96, 96, 1) and clips["boxes"].shape == (3, 6, 5, 4)
  assert dataset.info["time_axes"] == 1
  np.testing.assert_array_equal(clips["inputs"][:, 0], still["inputs"])
  np.testing.assert_array_equal(clips["boxes"][:, 0], still["boxes"])
  real = clips["labels"] >= 0
  sizes = clips["boxes"][..., 2:] - clips["boxes"][..., :2]  # [B, T, M, 2]
  np.testing.assert_array_equal(sizes, np.broadcast_to(sizes[:, :1], sizes.shape))  # rigid
  moved = np.abs(np.diff(clips["boxes"][..., :2], axis=1)).sum(-1)  # [B, T - 1, M]
  assert (moved[np.broadcast_to(real[:, None], moved.shape)] > 0).mean() > 0.5
  assert (clips["boxes"] >= 0).all() and (clips["boxes"] <= 96).all()


def test_bad_options_are_one_line_errors(config):
  digits, labels = data.moving_mnist.read_digits(config, with_labels=True)
  with pytest.raises(ValueError, match="min_side <= max_side < size"):
    scenes.SceneMaker(digits, labels, max_side=96, size=96)
  with pytest.raises(ValueError, match="min_digits <= max_digits"):
    scenes.SceneMaker(digits, labels, min_digits=3, max_digits=2)
  with pytest.raises(ValueError, match="max_overlap"):
    scenes.SceneMaker(digits, labels, max_overlap=1.0)


def test_shift_scene_moves_pixels_class_maps_and_boxes_together(config):
  config.max_overlap = 0.0
  batch = data.load_dataset(config).train.get(np.arange(16))
  shifted = jax.tree.map(np.asarray, augment.shift_scene(jax.random.key(3), batch, 12))
  image = batch["inputs"][..., 0]
  moved_any = False
  for i in range(16):
    # the shift is the one that maps the original class map onto the shifted one
    found = [
      (dy, dx)
      for dy in range(-12, 13)
      for dx in range(-12, 13)
      if np.array_equal(_translate(batch["targets"][i], dy, dx), shifted["targets"][i])
      and np.array_equal(_translate(image[i], dy, dx), shifted["inputs"][i, ..., 0])
    ]
    assert found, i
    dy, dx = found[0]
    moved_any |= (dy, dx) != (0, 0)
    for k in range(5):
      if batch["labels"][i, k] < 0:
        assert shifted["labels"][i, k] == -1
        continue
      box = np.clip(batch["boxes"][i, k] + [dx, dy, dx, dy], 0, 96)
      if box[2] > box[0] and box[3] > box[1]:
        assert shifted["labels"][i, k] == batch["labels"][i, k]
        np.testing.assert_array_equal(shifted["boxes"][i, k], box)
      else:  # moved off the canvas: no longer an object
        assert shifted["labels"][i, k] == -1 and not shifted["boxes"][i, k].any()
    assert shifted["num_objects"][i] == (shifted["labels"][i] >= 0).sum()
  assert moved_any


def _translate(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """`x` [H, W] moved by (dy, dx), zero-filled."""
  out = np.zeros_like(x)
  h, w = x.shape
  out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
    max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
  ]
  return out
