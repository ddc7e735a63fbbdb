"""The RNN family through the classifier trainer: real steps reduce the loss; resume is exact."""

import json

import pytest

from experiments import mnist1d_rnn, seed_lstm, seqmnist_lstm
from jaxvision.train import loop, trainer
from tests.train.test_classifier import assert_same_params, read_jsonl


def _short(config, steps):
  config.num_train_steps = steps
  config.log_every_steps = 10
  config.eval_every_steps = 10
  config.checkpoint.every_steps = 10
  config.schedule.warmup_steps = 2
  config.data.eval_batch_size = 1000
  return config


@pytest.mark.slow  # 20-45 s; RNN steps are covered by the loop contract's scanned RNN
def test_gru_on_mnist1d_sequences_reduces_loss(tmp_path):
  config = _short(mnist1d_rnn.get_config("gru"), 80)
  config.model.hidden_size = 32
  config.schedule.name = "constant"  # a GRU leaves its initial plateau sooner without decay
  config.optimizer.learning_rate = 1e-2
  trainer.train_and_evaluate(config, str(tmp_path))
  train = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "train_loss" in r]
  assert train[-1]["train_loss"] < 0.8 * train[0]["train_loss"]


@pytest.mark.slow  # 20-45 s; RNN steps are covered by the loop contract's scanned RNN
def test_sequential_mnist_lstm_reduces_loss(tmp_path, mnist_path):
  config = _short(seqmnist_lstm.get_config("idx"), 60)
  config.data.data_dir = str(mnist_path)
  config.model.hidden_size = 32
  config.schedule.name = "constant"
  config.optimizer.learning_rate = 5e-3
  trainer.train_and_evaluate(config, str(tmp_path))
  train = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "train_loss" in r]
  assert train[-1]["train_loss"] < 0.7 * train[0]["train_loss"]


@pytest.mark.slow  # 20-45 s; RNN steps are covered by the loop contract's scanned RNN
def test_seed_lstm_resume_is_identical(tmp_path):
  config = _short(seed_lstm.get_config(), 20)
  config.data.num_train, config.data.num_eval = 1024, 256
  config.data.eval_batch_size = 256
  config.model.hidden_size = 16
  straight = trainer.train_and_evaluate(config, str(tmp_path / "straight"))
  halted = trainer.train_and_evaluate(
    config, str(tmp_path / "resumed"), loop.Options(halt_after_steps=10)
  )
  assert (halted.status, halted.step) == ("halted", 10)
  resumed = trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert_same_params(tmp_path / "straight", tmp_path / "resumed")
  assert straight.final == resumed.final
  recorded = json.loads((tmp_path / "resumed" / "results.json").read_text())
  assert recorded["final"] == resumed.final
  assert recorded["model"]["hidden_size"] == 16 and recorded["model"]["num_layers"] == 3
