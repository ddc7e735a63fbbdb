"""Every data source, read offline: TFDS under mock_data, IDX files, MNIST-1D, digits."""

import gzip
import hashlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxvision import config_lib
from jaxvision.data import data_config, idx, load_dataset

MNIST_SHA256 = {  # from ../shared/data/README.md
  "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
  "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MNIST_TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _write_idx(path, array):
  """Writes `array` (uint8) as a gzipped IDX file."""
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_idx_round_trip_and_split(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (50, 6, 5), dtype=np.uint8)
  labels = rng.integers(0, 3, 50, dtype=np.uint8)
  _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
  _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
  config = data_config(
    "idx",
    name="toy",
    data_dir=str(tmp_path),
    train_split="t10k[:40]",
    eval_split="t10k[40:]",
    normalize="unit",
  )
  ds = load_dataset(config)
  assert ds.train.inputs.shape == (40, 6, 5, 1) and ds.eval.inputs.shape == (10, 6, 5, 1)
  assert ds.train.inputs.dtype == np.float32 and ds.train.targets.dtype == np.int32
  np.testing.assert_allclose(ds.train.inputs[..., 0], images[:40] / 255.0)
  np.testing.assert_array_equal(ds.eval.targets, labels[40:])
  assert ds.num_classes == 3


def test_idx_errors_name_what_was_looked_for(tmp_path):
  config = data_config(
    "idx", data_dir=str(tmp_path / "nowhere"), train_split="t10k[:8]", eval_split="t10k[8:]"
  )
  with pytest.raises(FileNotFoundError, match="nowhere"):
    load_dataset(config)
  config.data_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
    load_dataset(config)
  (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04junk")
  with pytest.raises(ValueError, match="not an IDX file"):
    idx.read_idx(tmp_path / "t10k-images-idx3-ubyte")


def test_overlapping_splits_are_refused(tmp_path):
  _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((10, 2, 2)))
  _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(10))
  config = data_config("idx", data_dir=str(tmp_path), train_split="t10k[:8]", eval_split="t10k[6:]")
  with pytest.raises(ValueError, match="overlap"):
    load_dataset(config)


def test_offline_mnist_idx(mnist_path):
  for name, digest in MNIST_SHA256.items():
    assert hashlib.sha256((mnist_path / name).read_bytes()).hexdigest() == digest
  ds = load_dataset(config_lib.offline_mnist_data(data_dir=str(mnist_path)))
  assert ds.train.inputs.shape == (8000, 28, 28, 1) and ds.eval.inputs.shape == (2000, 28, 28, 1)
  counts = np.bincount(np.concatenate([ds.train.targets, ds.eval.targets]), minlength=10)
  assert counts.tolist() == MNIST_TEST_CLASS_COUNTS
  # standardised with train statistics
  assert abs(ds.train.inputs.mean()) < 1e-3 and abs(ds.train.inputs.std() - 1) < 1e-3
  # the default fold 4 of 5 is exactly the split t10k[:8000] / t10k[8000:]
  assert "fold 4/5" in ds.description and "[8000:10000]" in ds.description
  sliced = load_dataset(
    data_config(
      "idx", data_dir=str(mnist_path), train_split="t10k[:8000]", eval_split="t10k[8000:]"
    )
  )
  for a, b in ((ds.train, sliced.train), (ds.eval, sliced.eval)):
    np.testing.assert_array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.targets, b.targets)


def test_idx_cross_validation_folds_partition_the_split(tmp_path):
  images = np.arange(50, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8)
  _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
  _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(50) % 4)
  config = data_config(
    "idx",
    data_dir=str(tmp_path),
    train_split="t10k",
    eval_split="t10k",
    num_folds=5,
    normalize="none",
  )
  held = []
  for fold in range(5):
    config.fold = fold
    ds = load_dataset(config)
    train_ids = ds.train.inputs[:, 0, 0, 0].astype(int)
    eval_ids = ds.eval.inputs[:, 0, 0, 0].astype(int)
    # fold k evaluates on its contiguous block of 10 and trains on the other 40, in order
    assert eval_ids.tolist() == list(range(10 * fold, 10 * fold + 10))
    assert train_ids.tolist() == sorted(set(range(50)) - set(eval_ids))
    np.testing.assert_array_equal(ds.eval.targets, eval_ids % 4)
    held.extend(eval_ids)
  assert sorted(held) == list(range(50))  # every example is held out exactly once
  config.fold = 5
  with pytest.raises(ValueError, match=r"data.fold 5 not in \[0, 5\)"):
    load_dataset(config)
  config.fold, config.eval_split = 0, "t10k[40:]"
  with pytest.raises(ValueError, match="cross-validates one split"):
    load_dataset(config)


def test_tfds_splits_are_read_by_index_with_the_in_memory_numbers():
  from jaxvision.data import base
  from jaxvision.data import tfds as tfds_source

  config = data_config("tfds", name="mnist", data_dir="/nonexistent")
  with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = load_dataset(config)
    assert isinstance(ds.train, tfds_source.TfdsSource) and len(ds.train) == 24
    raw, labels = ds.train._raw(np.arange(24))
    # The same batches as the whole split normalised in memory, bit for bit.
    expected = base.Normalizer("standardize", raw)(raw)
    np.testing.assert_array_equal(ds.train.get(np.arange(24))["inputs"], expected)
    read, source = [], ds.train._source

    class Counting:  # the data source, counting what is read
      def __len__(self):
        return len(source)

      def __getitem__(self, i):
        read.append(i)
        return source[i]

    ds.train._source = Counting()
    batch = ds.train.get(np.array([5, 2, 7]))
    assert read == [5, 2, 7]  # a batch decodes its own examples only
    np.testing.assert_array_equal(batch["inputs"], expected[[5, 2, 7]])
    np.testing.assert_array_equal(batch["targets"], labels[[5, 2, 7]])
    assert batch["inputs"].shape == (3, 28, 28, 1) and batch["inputs"].dtype == np.float32
    assert ds.num_classes == 10 and ds.eval.get(np.arange(24))["targets"].max() < 10
    rows = load_dataset(data_config("tfds", name="mnist", data_dir="/x", layout="sequence"))
    assert rows.train.get(np.arange(2))["inputs"].shape == (2, 28, 28)
    config.shuffle_labels = True
    control = load_dataset(config)
    shuffled = np.random.default_rng(0).permutation(labels)
    np.testing.assert_array_equal(control.train.get(np.array([3, 1]))["targets"], shuffled[[3, 1]])


def test_streamed_statistics_do_not_depend_on_the_chunks():
  from jaxvision.data import base

  x = np.random.default_rng(0).integers(0, 256, (1000, 4, 4, 3)).astype(np.uint8)
  whole = base.channel_stats([x])
  parts = base.channel_stats([x[:7], x[7:500], x[500:]])
  for a, b in zip(whole, parts, strict=True):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(whole[0], x.reshape(-1, 3).mean(0), rtol=1e-6)
  np.testing.assert_allclose(whole[1], x.reshape(-1, 3).std(0) + 1e-6, rtol=1e-5)


def test_tfds_missing_set_is_a_clear_error(tmp_path):
  config = data_config("tfds", name="mnist", data_dir=str(tmp_path))
  with pytest.raises(
    FileNotFoundError, match="(?s)not prepared.*tfds build mnist --file_format=array_record"
  ):
    load_dataset(config)


def test_mnist1d_generated_offline_with_package_defaults(tmp_path, monkeypatch):
  from jaxvision.data import mnist1d

  monkeypatch.setenv("JAXVISION_CACHE_DIR", str(tmp_path))
  state = np.random.get_state()
  ds = load_dataset(data_config("mnist1d"))  # generated, then cached
  assert ds.train.inputs.shape == (4000, 40, 1) and ds.eval.inputs.shape == (1000, 40, 1)
  assert ds.num_classes == 10 and set(np.unique(ds.train.targets)) == set(range(10))
  # make_dataset seeds numpy's global generator; the loader must leave it as it was
  np.testing.assert_array_equal(np.random.get_state()[1], state[1])
  assert len(list(tmp_path.glob("mnist1d-*-defaults.npz"))) == 1
  again = load_dataset(data_config("mnist1d"))  # read back: the very same arrays
  np.testing.assert_array_equal(ds.train.inputs, again.train.inputs)
  fresh = mnist1d._generate()
  np.testing.assert_array_equal(again.eval.inputs[..., 0], fresh["x_test"].astype(np.float32))
  np.testing.assert_array_equal(again.train.targets, fresh["y"])


def test_the_cache_makes_once_and_remakes_a_damaged_file(tmp_path, monkeypatch):
  from jaxvision.data import cache

  monkeypatch.setenv("JAXVISION_CACHE_DIR", str(tmp_path / "c"))
  calls = []
  make = lambda: calls.append(1) or {"a": np.arange(3)}
  for _ in range(2):
    np.testing.assert_array_equal(cache.load_or_make("x", make)["a"], np.arange(3))
  assert len(calls) == 1
  (tmp_path / "c" / "x.npz").write_bytes(b"not a zip")
  np.testing.assert_array_equal(cache.load_or_make("x", make)["a"], np.arange(3))
  assert len(calls) == 2 and sorted(p.name for p in (tmp_path / "c").iterdir()) == ["x.npz"]


def test_digits_fixed_split():
  ds = load_dataset(data_config("digits"))
  assert ds.train.inputs.shape == (1437, 8, 8, 1) and ds.eval.inputs.shape == (360, 8, 8, 1)
  again = load_dataset(data_config("digits"))
  np.testing.assert_array_equal(ds.eval.targets, again.eval.targets)


def test_unknown_source():
  with pytest.raises(ValueError, match="unknown data source 'imagenet'"):
    data_config("imagenet")
  config = data_config("digits")
  config.source = "imagenet"  # what --config.data.source=imagenet does
  with pytest.raises(ValueError, match="unknown data source 'imagenet'"):
    load_dataset(config)


def test_marked_sum_task_needs_both_marks():
  from jaxvision.data import marked_sum

  inputs, y = marked_sum.generate(20_000, 100, np.random.default_rng(0))
  x = inputs[..., 0]
  assert x.shape == (20_000, 100) and 0.48 < y.mean() < 0.52
  marked = x < 0
  assert marked.sum(1).tolist() == [2] * 20_000
  assert marked[:, :10].sum(1).tolist() == [2] * 20_000  # both marks in the first tenth
  values = -np.where(marked, x, 0)
  np.testing.assert_allclose(values.sum(1) > 1.0, y)
  # one marked value alone predicts the label at best ~75% of the time
  first = values[np.arange(20_000), marked.argmax(1)]
  assert 0.72 < ((first > 0.5) == y).mean() < 0.78


def test_sequence_layout_and_shuffled_label_control():
  config = data_config("digits", layout="sequence")
  ds = load_dataset(config)
  assert ds.train.inputs.shape == (1437, 8, 8) and "rows as time steps" in ds.description
  images = load_dataset(data_config("digits"))
  np.testing.assert_array_equal(ds.train.inputs, images.train.inputs[..., 0])
  config.shuffle_labels = True
  shuffled = load_dataset(config)
  assert sorted(shuffled.train.targets) == sorted(ds.train.targets)
  assert (shuffled.train.targets != ds.train.targets).mean() > 0.8
  np.testing.assert_array_equal(shuffled.eval.targets, ds.eval.targets)  # eval keeps true labels
  with pytest.raises(ValueError, match="unknown data.layout"):
    load_dataset(data_config("digits", layout="video"))
