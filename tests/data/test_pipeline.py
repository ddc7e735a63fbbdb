"""Batching is a pure function of (seed, step); eval covers every example once; augmentation;
prefetching gives exactly the synchronous batches."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.data import ArraySource, BatchSampler, eval_batches, pipeline
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


def test_random_affine_rotates_scales_and_shears_each_image_on_its_own():
  from jaxvision.data import augment

  x = np.zeros((4, 15, 15, 2), np.float32)
  x[:, 7, 2:13, :] = 1.0  # a horizontal bar through the centre
  same = augment.random_affine(jax.random.key(0), jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(same), x)  # every range 0: unchanged
  # At 90 degrees either way the bar stands upright (bilinear, so up to interpolation).
  upright = np.asarray(augment.random_affine(jax.random.key(1), jnp.asarray(x), rotate=90.0))
  assert upright.shape == x.shape
  angles = np.asarray(jax.random.uniform(jax.random.key(1), (4, 3), minval=-1))[:, 0] * 90
  for image, angle in zip(upright, angles, strict=True):
    rows, cols = np.nonzero(image[..., 0] > 0.5)
    tall, wide = np.ptp(rows) + 1, np.ptp(cols) + 1
    assert (tall > wide) == (abs(angle) > 45), (angle, tall, wide)
  # Scaling keeps the centre where it is and changes the bar's length by the drawn factor.
  scaled = np.asarray(augment.random_affine(jax.random.key(2), jnp.asarray(x), scale=0.5))
  factors = 1 + np.asarray(jax.random.uniform(jax.random.key(2), (4, 3), minval=-1))[:, 1] * 0.5
  for image, factor in zip(scaled, factors, strict=True):
    length = np.sum(image[7, :, 0])
    assert length == pytest.approx(11 * factor, abs=1.5), (length, factor)
    assert image[7, 7, 0] == pytest.approx(1.0)
  # One channel without a channel axis (an image read as a sequence of rows) works alike.
  rows = augment.random_affine(jax.random.key(1), jnp.asarray(x[..., 0]), rotate=90.0)
  np.testing.assert_allclose(np.asarray(rows), upright[..., 0], atol=1e-6)
  with pytest.raises(ValueError, match="expected images"):
    augment.random_affine(jax.random.key(0), jnp.zeros((2, 8)), rotate=5.0)


def test_prefetcher_gives_exactly_the_synchronous_batches_and_follows_jumps():
  calls = []

  def make(step):
    calls.append(step)
    return {"step": step, "rows": np.full(3, step)}

  batches = pipeline.Prefetcher(make, depth=2)
  order = [0, 1, 2, 3, 7, 8, 2, 3]  # a resume or multi-step call jumps; the thread follows
  got = [batches.get(s) for s in order]
  batches.close()
  assert [g["step"] for g in got] == order
  assert all((g["rows"] == g["step"]).all() for g in got)
  assert set(order) <= set(calls)
  assert [pipeline.Prefetcher(make, depth=0).get(s)["step"] for s in (5, 1)] == [5, 1]
  with pytest.raises(ValueError, match="depth must be >= 0"):
    pipeline.Prefetcher(make, depth=-1)


def test_prefetcher_builds_ahead_while_the_loop_waits_and_raises_at_the_failing_step():
  started = threading.Event()

  def make(step):
    if step == 3:
      raise OSError("disk gone at step 3")
    if step == 2:
      started.set()
    return step

  batches = pipeline.Prefetcher(make, depth=2)
  assert batches.get(0) == 0
  assert started.wait(5)  # step 2 was built before the loop asked for it
  assert [batches.get(1), batches.get(2)] == [1, 2]
  with pytest.raises(OSError, match="disk gone at step 3"):
    batches.get(3)
  assert batches.get(4) == 4  # the next get starts again
  batches.close()
  assert not any(t.name == "prefetch" for t in threading.enumerate())


@pytest.mark.parametrize(
  "n", [10, 3]
)  # 10: the last batch has an all-padding share; 3: the only one
def test_eval_shares_read_only_their_rows_and_make_up_the_whole_batches(n):
  source = ArraySource(
    inputs=np.arange(n * 2, dtype=np.float32).reshape(n, 2), targets=np.arange(n)
  )

  class Counting:
    def __init__(self):
      self.reads = []

    def __len__(self):
      return n

    def get(self, indices):
      self.reads.append(np.asarray(indices).tolist())
      return source.get(indices)

  whole = list(eval_batches(source, 8))
  hosts = [Counting(), Counting()]
  shares = [list(eval_batches(h, 8, slice(4 * i, 4 * i + 4))) for i, h in enumerate(hosts)]
  for batch, first, second in zip(whole, *shares, strict=True):
    for key in batch:
      np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), batch[key])
  real = []
  for host, batches in zip(hosts, shares, strict=True):
    for read, batch in zip(host.reads, batches, strict=True):
      if batch["mask"].any():
        real += read
      else:  # an all-padding share reads one example for its shapes, and yields zeros
        assert read == [0] and not batch["inputs"].any()
  assert sorted(real) == list(range(n))  # every example read once, by one host
