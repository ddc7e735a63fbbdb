"""Strategies and topologies agree: 1 device, 8 devices (sharded jit) and 8 devices (pmap) give
the same parameters after K steps (to 1e-5 relative), and checkpoints restore across device
counts and strategies.

The default suite proves it on tiny models a few steps long, none needing downloaded data: a CNN
with batch norm on the 8x8 digits, the LSTM on MNIST-1D through the scanned multi-step path, and
the DCGAN with batch norm in both networks on the digits. CNN A with and without batch norm on
the offline MNIST digits are the slow forms.
"""

import jax
import numpy as np
import pytest

from experiments import digits_cnn, mnist1d_rnn, mnist_cnn, mnist_dcgan
from jaxvision import data, models, optim
from jaxvision.train import loop, trainer
from jaxvision.workdir import restore_latest

TOPOLOGIES = [(1, "jit"), (0, "jit"), (0, "pmap")]  # (num_devices, strategy); 0: all 8


def _short(config, steps=6):
  config.num_train_steps = steps
  config.log_every_steps = config.eval_every_steps = config.checkpoint.every_steps = steps
  if "schedule" in config:
    config.schedule.warmup_steps = 2
  return config


def _sgd(config):
  # Adam divides by sqrt(v) + eps: for the batch-norm offsets, whose gradients are near zero,
  # that turns the float rounding of a different reduction order into differences of the
  # learning rate's size. SGD at a modest rate compares the parallel arithmetic, not the
  # conditioning of Adam or of a large step.
  config.optimizer = optim.optimizer_config(name="sgd", learning_rate=0.01, momentum=0.9)
  return config


def cnn_config(name, mnist_path):
  config = _short(mnist_cnn.get_config("idx"))
  config.data.data_dir = str(mnist_path)
  config.data.batch_size, config.data.eval_batch_size = 64, 1000
  config.model = models.model_config(name)
  config.augment.max_shift = 2  # per-example randomness must match across strategies too
  return _sgd(config) if config.model.name.endswith("_bn") else config


def tiny_cnn_config():
  """A CNN with batch norm after each conv and the hidden dense layer, on 8x8 digits."""
  config = _short(digits_cnn.get_config(), steps=4)
  config.model = models.model_config(
    "convnet", features=(8, 16), pool=(False, True), dense=(16,), padding="SAME", batch_norm=True
  )  # no dropout: its masks differ per device under pmap by design
  config.augment.max_shift = 1  # per-example randomness must match across strategies too
  return _sgd(config)


def lstm_config():
  config = _short(mnist1d_rnn.get_config("lstm"))
  config.model.hidden_size = 16
  config.data.batch_size, config.data.eval_batch_size = 64, 1000
  config.steps_per_call = 3  # the scanned multi-step path too
  return config


def gan_config():
  """A small DCGAN with batch norm in both networks on 8x8 digits."""
  config = _short(mnist_dcgan.get_config("idx"), steps=4)
  config.data = data.data_config("digits", normalize="symmetric", batch_size=64)
  config.generator = models.model_config("dcgan_generator", features=(32, 16))
  config.discriminator = models.model_config("dcgan_discriminator", features=(16, 32))
  config.z_dim = 16
  config.evaluators.eval.update(classifier_workdir="", batch_size=16, grid_size=16)
  return config


def _params(workdir, keys):
  state, _ = restore_latest(str(workdir))
  return [np.asarray(x) for k in keys for x in jax.tree.leaves(state[k])]


def _assert_close(a, b):
  """All parameters agree to 1e-5 relative (in norm over the model), and every tensor to 1e-3
  of its own norm. The batch-norm offsets of the first layers are small sums of ~40,000
  gradient terms with heavy cancellation: float32 rounding of another reduction order (one
  device or eight, any strategy) moves them by up to ~5e-4 of their size, while a missing
  cross-device mean moves them by O(1)."""
  total = sum(float(np.sum((x - y) ** 2)) for x, y in zip(a, b, strict=True)) ** 0.5
  assert total <= 1e-5 * sum(float(np.sum(y**2)) for y in b) ** 0.5
  for x, y in zip(a, b, strict=True):
    assert np.linalg.norm(x - y) <= 1e-3 * np.linalg.norm(y) + 1e-9, np.abs(x - y).max()


def _train(config, workdir, num_devices, strategy, halt=None):
  config = config.copy_and_resolve_references()
  config.parallel.num_devices, config.parallel.strategy = num_devices, strategy
  return trainer.train_and_evaluate(config, str(workdir), loop.Options(halt_after_steps=halt))


def _assert_topologies_agree(config, keys, tmp_path):
  results = []
  for num_devices, strategy in TOPOLOGIES:
    workdir = tmp_path / f"{num_devices}_{strategy}"
    outcome = _train(config, workdir, num_devices, strategy)
    assert (outcome.status, outcome.step) == ("finished", config.num_train_steps)
    results.append(_params(workdir, keys))
  _assert_close(results[0], results[1])
  _assert_close(results[0], results[2])


# name: (config, the state's parameter collections compared)
CASES = {
  "cnn_bn": (tiny_cnn_config, ["params", "batch_stats"]),
  "lstm": (lstm_config, ["params"]),
  "dcgan_bn": (gan_config, ["g_params", "d_params", "g_batch_stats"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_device_jit_and_pmap_agree(case, tmp_path):
  make_config, keys = CASES[case]
  _assert_topologies_agree(make_config(), keys, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn_a", "cnn_a_bn"])
def test_cnn_a_on_mnist_one_device_jit_and_pmap_agree(name, tmp_path, mnist_path):
  keys = ["params", "batch_stats"] if name.endswith("_bn") else ["params"]
  _assert_topologies_agree(cnn_config(name, mnist_path), keys, tmp_path)


@pytest.mark.parametrize(
  "first,second",
  [((0, "jit"), (1, "jit")), ((1, "jit"), (0, "pmap")), ((0, "pmap"), (0, "jit"))],
  ids=["8jit->1", "1->8pmap", "8pmap->8jit"],
)
def test_checkpoints_restore_across_devices_and_strategies(first, second, tmp_path):
  config = _short(digits_cnn.get_config(), steps=8)
  config.model.dropout_rate = 0.0  # dropout masks differ per device under pmap by design
  config.checkpoint.every_steps = 4
  straight = tmp_path / "straight"
  _train(config, straight, *first)
  moved = tmp_path / "moved"
  assert _train(config, moved, *first, halt=4).status == "halted"
  assert _train(config, moved, *second).status == "finished"
  _assert_close(_params(straight, ["params"]), _params(moved, ["params"]))


def test_pmap_resume_on_the_same_topology_is_bit_identical(tmp_path):
  config = _short(digits_cnn.get_config(), steps=8)
  config.checkpoint.every_steps = 4
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  _train(config, straight, 0, "pmap")
  _train(config, resumed, 0, "pmap", halt=4)
  _train(config, resumed, 0, "pmap")
  for x, y in zip(_params(straight, ["params"]), _params(resumed, ["params"]), strict=True):
    np.testing.assert_array_equal(x, y)


def test_batch_not_divisible_by_devices_is_refused_before_the_workdir(tmp_path):
  config = _short(digits_cnn.get_config())
  config.data.batch_size = 60  # not a multiple of 8
  with pytest.raises(ValueError, match="multiple of the 8 devices"):
    _train(config, tmp_path / "never", 0, "pmap")
  assert not (tmp_path / "never").exists()
