"""The full experiment recipes reach their accuracy bars (slow: about a minute each on 2 cores)."""

import pytest

from experiments import mnist1d_cnn, mnist_cnn
from jaxvision.train import trainer

pytestmark = pytest.mark.slow


def test_mnist1d_cnn_reaches_97_percent(tmp_path):
  config = mnist1d_cnn.get_config()
  config.parallel.num_devices = 1  # the recorded recipe runs on one device
  assert trainer.train_and_evaluate(config, str(tmp_path)).final["eval_accuracy"] >= 0.97


def test_offline_mnist_cnn_a_reaches_98_5_percent(tmp_path, mnist_path):
  config = mnist_cnn.get_config("idx")
  config.data.data_dir = str(mnist_path)
  config.parallel.num_devices = 1
  assert trainer.train_and_evaluate(config, str(tmp_path)).final["eval_accuracy"] >= 0.985
