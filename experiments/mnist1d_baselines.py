"""MNIST-1D baselines from the paper's table: logistic regression and an MLP.

  python -m jaxvision.main --config=experiments/mnist1d_baselines.py:mlp --workdir=runs/mnist1d_mlp
  python -m jaxvision.main --config=experiments/mnist1d_baselines.py:logistic \\
    --workdir=runs/mnist1d_logistic

The paper (Greydanus 2020) reports logistic regression 32% and an MLP 68% on the same 4,000 /
1,000 split (the `mnist1d` package defaults). Adam with warm-up + cosine decay, no augmentation
(the paper's baselines have none). `get_sweep` runs 3 seeds.
"""

from jaxvision import config_lib, data, models, optim
from jaxvision.tools import sweep


def get_config(model: str = "mlp"):
  if model not in ("mlp", "logistic"):
    raise ValueError(f"mnist1d_baselines takes 'mlp' or 'logistic', got {model!r}")
  config = config_lib.base_config()
  config.seed = 0
  config.data = data.data_config("mnist1d", batch_size=128)
  config.model = models.model_config(model)
  config.optimizer = optim.optimizer_config(name="adamw", learning_rate=2e-3, weight_decay=1e-2)
  config.schedule = optim.schedule_config(name="warmup_cosine", warmup_steps=200)
  config.num_train_steps = 4000
  config.log_every_steps = 500
  config.eval_every_steps = 2000
  config.checkpoint.every_steps = 2000
  return config


def get_sweep(arg=None):
  del arg
  return sweep.product(seed=[0, 1, 2])
