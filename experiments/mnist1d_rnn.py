"""MNIST-1D as sequences (40 steps x 1 feature) with a GRU or an LSTM.

  python -m jaxvision.main --config=experiments/mnist1d_rnn.py:gru --workdir=runs/mnist1d_gru
  python -m jaxvision.main --config=experiments/mnist1d_rnn.py:lstm --workdir=runs/mnist1d_lstm

One unidirectional layer of 128 units, classified from its last state; Adam with warm-up +
cosine decay and random shifts of up to 2 steps.
"""

from jaxvision import config_lib, data, models, optim
from jaxvision.tools import sweep


def get_config(cell: str = "gru"):
  if cell not in ("gru", "lstm"):
    raise ValueError(f"mnist1d_rnn takes 'gru' or 'lstm', got {cell!r}")
  config = config_lib.base_config()
  config.seed = 0
  config.xla.cpu_ynn_fusions = True  # faster for recurrent steps on XLA:CPU
  config.steps_per_call = 25  # scanning steps is ~40% faster for RNNs on XLA:CPU
  config.augment.max_shift = 2
  config.data = data.data_config("mnist1d", batch_size=128)
  config.model = models.model_config(cell, hidden_size=128)
  config.optimizer = optim.optimizer_config(name="adam", learning_rate=3e-3, grad_clip_norm=1.0)
  config.schedule = optim.schedule_config(name="warmup_cosine", warmup_steps=300)
  config.num_train_steps = 8000
  config.log_every_steps = 500
  config.eval_every_steps = 2000
  config.checkpoint.every_steps = 2000
  return config


def get_sweep(cell: str = "gru"):
  """Three seeds of either cell (runs/mnist1d_rnn_gru/seed=K, ...)."""
  del cell
  return sweep.product(seed=range(3))
