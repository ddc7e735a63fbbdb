"""Moving MNIST generated from the real MNIST test digits: determinism, splits, motion, labels."""

import pathlib

import ml_collections
import numpy as np
import pytest

from jaxvision import data as data_lib
from jaxvision.data import idx
from jaxvision.data import moving_mnist as mm


def _config(mnist_path, **changes) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({**mm.DEFAULTS, "data_dir": str(mnist_path), **changes})


@pytest.fixture
def digits(mnist_path):
  return mm.read_digits(_config(mnist_path))


def test_the_default_data_dir_is_read_when_used_and_relative_to_the_repository(
  monkeypatch, tmp_path
):
  # Not when the module was imported, and not relative to the current directory.
  assert data_lib.data_config("moving_mnist").data_dir == ""  # resolved when the data loads
  monkeypatch.setenv(idx.MNIST_DIR_ENV, "/elsewhere/mnist")
  assert idx.default_mnist_dir() == "/elsewhere/mnist"
  monkeypatch.delenv(idx.MNIST_DIR_ENV)
  monkeypatch.chdir(tmp_path)
  repo = pathlib.Path(__file__).resolve().parents[2]
  assert idx.default_mnist_dir() == str((repo / ".." / "shared" / "data" / "mnist").resolve())


def test_bounce_stays_inside_and_reflects():
  start, velocity = np.array([[1.0, 30.0]]), np.array([[-3.0, 4.5]])
  path = mm.bounce(start, velocity, 40, limit=36.0)[0]  # [T, 2]
  assert path.shape == (40, 2) and path.min() >= 0.0 and path.max() <= 36.0
  steps = np.abs(np.diff(path, axis=0))
  # Speed is kept through every bounce (a reflected step splits the same distance in two parts).
  assert np.all(steps <= np.abs(velocity[0]) + 1e-9)
  np.testing.assert_allclose(path[1], [2.0, 34.5])  # x: 1 - 3 = -2 -> reflected to 2
  np.testing.assert_allclose(path[2], [5.0, 33.0])  # y: 30 + 9 = 39 -> 36 - 3


def test_deterministic_shapes_and_range(mnist_path):
  ds = mm.load(_config(mnist_path, num_train=20, num_eval=10))
  a = ds.train.get(np.array([3, 4]))
  b = ds.train.get(np.array([3, 4]))
  assert a["inputs"].shape == (2, 20, 64, 64, 1) and a["inputs"].dtype == np.float32
  assert a["targets"].shape == (2, 10, 64, 64, 1) and a["targets"].dtype == np.float32
  assert a["inputs"].min() == 0.0 and a["inputs"].max() == 1.0
  np.testing.assert_array_equal(a["inputs"], b["inputs"])  # same (seed, index): same clip
  np.testing.assert_array_equal(a["targets"], a["inputs"][:, 10:])  # targets: the future frames
  assert np.abs(a["inputs"][0] - a["inputs"][1]).mean() > 0.01  # another index, another clip
  assert np.abs(ds.eval.get(np.array([3]))["inputs"][0] - a["inputs"][0]).mean() > 0.01
  assert len(ds.train) == 20 and len(ds.eval) == 10
  assert "t10k[:8000]" in ds.description and "t10k[8000:]" in ds.description


def test_train_and_eval_digits_are_disjoint(digits, mnist_path):
  train, eval_ = mm.clip_makers(_config(mnist_path), digits)
  used_train = np.concatenate([train.sample(0, i)["digit_ids"] for i in range(300)])
  used_eval = np.concatenate([eval_.sample(1, i)["digit_ids"] for i in range(300)])
  assert used_train.max() < 8000 and used_eval.min() >= 8000 and used_eval.max() < 10_000
  assert len(np.unique(used_train)) > 400  # the clips do draw from the whole pool
  # The recorded ids are the images drawn: clip 0 rendered from them alone reproduces it.
  spec = eval_.sample(1, 0)
  clip = mm.render(digits[spec["digit_ids"]], spec["positions"], 64)
  np.testing.assert_array_equal(clip, eval_(1, 0)["inputs"])


def test_digits_stay_whole_inside_the_frame(digits, mnist_path):
  train, _ = mm.clip_makers(_config(mnist_path, digits_per_clip=1, frames=40), digits)
  for index in range(30):
    spec = train.sample(0, index)
    clip = train(0, index)["inputs"]  # [T, 64, 64, 1]
    assert spec["positions"].min() >= 0 and spec["positions"].max() <= 64 - 28
    ink = digits[spec["digit_ids"][0]].astype(np.float32).sum() / 255.0
    # No part of the digit is ever cut off by the frame's border: every frame holds all its ink.
    np.testing.assert_allclose(clip.sum(axis=(1, 2, 3)), ink, rtol=1e-5)
    speed = np.linalg.norm(spec["velocity"][0])
    assert 2.0 <= speed <= 4.0
    assert np.abs(np.diff(spec["positions"][0], axis=0)).max() <= 5  # 4 px/frame, rounded


def _centroids(frames):
  """Centre of ink (x, y) of frames [N, H, W, 1]."""
  ink = frames[..., 0]
  total = ink.sum(axis=(1, 2))
  ys, xs = np.arange(ink.shape[1]), np.arange(ink.shape[2])
  x = (ink.sum(axis=1) * xs).sum(axis=1) / total
  y = (ink.sum(axis=2) * ys).sum(axis=1) / total
  return np.stack([x, y], axis=1)


def _nearest_mean_accuracy(features, labels, num_classes):
  """Accuracy on the second half of a nearest-class-mean classifier fit on the first half."""
  half = len(labels) // 2
  means = np.stack([features[:half][labels[:half] == k].mean(0) for k in range(num_classes)])
  distance = ((features[half:, None, :] - means[None]) ** 2).sum(-1)
  return float((distance.argmin(1) == labels[half:]).mean())


def _classify(mnist_path, **changes):
  """400 train clips of one digit in a fixed random order (so that the halves of the
  nearest-mean checks do not follow index % classes): (dataset, batch, order)."""
  config = _config(
    mnist_path, task="classify", digits_per_clip=1, num_train=400, num_eval=80, **changes
  )
  ds = mm.load(config)
  order = np.random.default_rng(0).permutation(400)
  return config, ds, ds.train.get(order), order


def test_orientation_balanced_and_no_single_frame_tells(mnist_path):
  config, ds, batch, order = _classify(mnist_path)
  assert ds.info == {"num_classes": 4, "time_axes": 1} and ds.num_classes == 4
  labels, frames = batch["targets"], batch["inputs"]  # [400], [400, T, 64, 64, 1]
  assert labels.dtype == np.int32 and labels.shape == (400,)
  np.testing.assert_array_equal(np.bincount(labels, minlength=4), [100] * 4)
  tracks = np.stack([_centroids(frames[:, t]) for t in range(20)], axis=1)  # [400, T, 2]
  # Positive control: the track's typical step (median: bounces aside) gives the path's angle.
  step = np.median(np.abs(np.diff(tracks, axis=1)), axis=1)  # [400, 2]
  angle = np.arctan2(step[:, 1], step[:, 0])[:, None]
  assert _nearest_mean_accuracy(angle, labels, 4) > 0.85
  # No single frame, first, middle or last, tells the class: the same check stays near 1/4.
  for t in (0, 10, 19):
    assert _nearest_mean_accuracy(tracks[:, t], labels, 4) < 0.35, t
  # The single-frame control is the same clip's first frame.
  single = mm.load(_config(mnist_path, **{**config, "single_frame": True}))
  one = single.train.get(order[:5])
  assert one["inputs"].shape == (5, 1, 64, 64, 1)
  np.testing.assert_array_equal(one["inputs"][:, 0], frames[:5, 0])
  np.testing.assert_array_equal(one["targets"], labels[:5])


def test_heading_needs_order_and_first_frame_tells_nothing(mnist_path):
  _, ds, batch, _ = _classify(mnist_path, label="heading", classes=8)
  labels, frames = batch["targets"], batch["inputs"]
  np.testing.assert_array_equal(np.bincount(labels, minlength=8), [50] * 8)
  first = _centroids(frames[:, 0])
  motion = _centroids(frames[:, 1]) - first  # signed: which way it set off
  assert _nearest_mean_accuracy(motion, labels, 8) > 0.85
  assert _nearest_mean_accuracy(first, labels, 8) < 0.25  # chance 1/8
  # (Later frames do tell something here, as the module docstring says; no assertion on them.)


def test_labels_follow_the_index_and_errors(mnist_path):
  ds = mm.load(_config(mnist_path, task="classify", classes=8, num_train=8, num_eval=16))
  assert ds.num_classes == 8
  np.testing.assert_array_equal(ds.eval.get(np.arange(16))["targets"], list(range(8)) * 2)
  with pytest.raises(ValueError, match="classes"):
    mm.load(_config(mnist_path, task="classify", classes=6))
  with pytest.raises(ValueError, match="single_frame"):
    mm.load(_config(mnist_path, single_frame=True))
  with pytest.raises(ValueError, match="observed"):
    mm.load(_config(mnist_path, observed=20))
  with pytest.raises(ValueError, match="eval_digits_from"):
    mm.load(_config(mnist_path, eval_digits_from=10_000))
  with pytest.raises(ValueError, match="digits_source"):
    mm.load(_config(mnist_path, digits_source="web"))


def test_tfds_digits_source_names_what_is_missing(tmp_path):
  # Offline there is no prepared TFDS MNIST: the error must say where it looked and how to fix it.
  config = _config(tmp_path, digits_source="tfds")
  with pytest.raises(FileNotFoundError, match="(?s)'mnist' split 'test'.*tfds build mnist"):
    mm.read_digits(config)
