"""The seeds' RNN: 3 x LSTM(64) over (100, 1) sequences, binary output, on the marked-sum task.

  python -m jaxvision.main --config=experiments/seed_lstm.py --workdir=runs/seed_lstm
  python -m jaxvision.main --config=experiments/seed_lstm.py:control \
    --workdir=runs/seed_lstm_control

The task (jaxvision/data/marked_sum.py) needs information from both ends of each sequence.
`:control` trains on shuffled labels and must stay at chance (50%).
"""

from jaxvision import config_lib, data, models, optim
from jaxvision.tools import sweep


def get_config(variant: str = "task"):
  if variant not in ("task", "control"):
    raise ValueError(f"seed_lstm takes 'task' or 'control', got {variant!r}")
  config = config_lib.base_config()
  config.seed = 0
  config.xla.cpu_ynn_fusions = True  # faster for recurrent steps on XLA:CPU
  config.steps_per_call = 25  # scanning steps is ~40% faster for RNNs on XLA:CPU
  config.data = data.data_config(
    "marked_sum",
    num_train=10_000,
    num_eval=2_000,
    seq_length=100,
    batch_size=128,
    shuffle_labels=variant == "control",
  )
  # Chrono-style init (Tallec & Ollivier 2018): a forget bias near log(T) keeps a ~100-step
  # memory open from the start (sigmoid(5)^90 ~ 0.55; at the usual 0 or 1 it is ~1e-27 or 1e-12,
  # and the task never gets a gradient).
  config.model = models.model_config("seed_lstm", forget_bias=5.0)
  config.optimizer = optim.optimizer_config(name="adam", learning_rate=3e-3, grad_clip_norm=1.0)
  config.schedule = optim.schedule_config(name="warmup_cosine", warmup_steps=200)
  config.num_train_steps = 4000
  config.log_every_steps = 100
  config.eval_every_steps = 1000
  config.checkpoint.every_steps = 1000
  return config


def get_sweep(variant: str = "task"):
  """Two seeds of the task or of its control (runs/seed_lstm[_control]/seed=K)."""
  del variant
  return sweep.product(seed=range(2))
