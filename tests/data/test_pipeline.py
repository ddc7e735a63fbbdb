"""Batching is a pure function of (seed, step); eval covers every example once; augmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.data import ArraySource, BatchSampler, eval_batches
from jaxvision.data.augment import random_shift


def test_each_epoch_is_a_permutation_and_batches_are_reproducible():
  sampler = BatchSampler(num_examples=100, batch_size=10, seed=3)
  epoch0 = np.concatenate([sampler.indices(s) for s in range(10)])
  epoch1 = np.concatenate([sampler.indices(s) for s in range(10, 20)])
  assert sorted(epoch0) == list(range(100)) and sorted(epoch1) == list(range(100))
  assert not np.array_equal(epoch0, epoch1)
  # a fresh sampler (a resumed run) gives the same batch at the same step, in any order
  fresh = BatchSampler(num_examples=100, batch_size=10, seed=3)
  np.testing.assert_array_equal(fresh.indices(13), sampler.indices(13))
  np.testing.assert_array_equal(fresh.indices(2), sampler.indices(2))
  other_seed = BatchSampler(num_examples=100, batch_size=10, seed=4)
  assert not np.array_equal(other_seed.indices(0), sampler.indices(0))


def test_remainder_dropped_and_bad_batch_sizes():
  sampler = BatchSampler(num_examples=25, batch_size=10, seed=0)
  assert sampler.steps_per_epoch == 2
  assert len(set(sampler.indices(0)) | set(sampler.indices(1))) == 20
  with pytest.raises(ValueError, match="exceeds"):
    BatchSampler(num_examples=5, batch_size=10, seed=0)


def test_eval_batches_cover_split_once_with_mask():
  source = ArraySource(
    inputs=np.arange(23, dtype=np.float32)[:, None], targets=np.arange(23, dtype=np.int32)
  )
  batches = list(eval_batches(source, 10))
  assert [b["inputs"].shape[0] for b in batches] == [10, 10, 10]
  mask = np.concatenate([b["mask"] for b in batches])
  targets = np.concatenate([b["targets"] for b in batches])
  assert mask.sum() == 23 and targets[mask == 1].tolist() == list(range(23))


def test_eval_batches_pad_targets_of_any_shape():
  frames = np.arange(7 * 2 * 3, dtype=np.float32).reshape(7, 2, 3) + 1  # e.g. next frames
  source = ArraySource(inputs=np.ones((7, 4, 1), np.float32), targets=frames)
  *_, last = eval_batches(source, 4)
  assert last["targets"].shape == (4, 2, 3) and last["targets"].dtype == np.float32
  np.testing.assert_array_equal(last["targets"][:3], frames[4:])
  np.testing.assert_array_equal(last["targets"][3], 0)
  np.testing.assert_array_equal(last["mask"], [1, 1, 1, 0])


def test_random_shift_translates_with_zero_fill():
  x = jnp.arange(2 * 6 * 1, dtype=jnp.float32).reshape(2, 6, 1) + 1
  assert random_shift(jax.random.key(0), x, 0) is x
  y = random_shift(jax.random.key(0), x, 2)
  assert y.shape == x.shape
  for i in range(2):
    row, orig = np.asarray(y[i, :, 0]), np.asarray(x[i, :, 0])
    # some shift s in [-2, 2] reproduces the output from the input, zero-filled
    matches = [s for s in range(-2, 3) if np.array_equal(row, np.roll(np.pad(orig, 2), s)[2:-2])]
    assert matches, (row, orig)
  images = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  assert random_shift(jax.random.key(2), images, 1).shape == images.shape


def test_random_shift_moves_a_clip_in_space_only():
  # With time_axes=1 every frame of a clip moves by the clip's one spatial shift, and no frame
  # moves in time: the same as shifting the frames stacked as channels of one image.
  clips = jax.random.uniform(jax.random.key(3), (4, 5, 8, 8, 1)) + 0.5  # [B, T, H, W, C] > 0
  y = random_shift(jax.random.key(4), clips, 2, time_axes=1)
  as_channels = clips.transpose(0, 2, 3, 1, 4).reshape(4, 8, 8, 5)
  expected = random_shift(jax.random.key(4), as_channels, 2)
  np.testing.assert_array_equal(y, expected.reshape(4, 8, 8, 5, 1).transpose(0, 3, 1, 2, 4))
  assert np.all(np.asarray(y).any(axis=(2, 3, 4)))  # no frame was shifted out in time
  assert not np.array_equal(y, clips)  # something moved
