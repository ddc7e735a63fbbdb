"""MNIST-1D with a 1-D CNN: the default experiment; its data is generated, no download.

  python -m jaxvision.main --config=experiments/mnist1d_cnn.py --workdir=runs/mnist1d_cnn

4,000 train / 1,000 test sequences of length 40 (the `mnist1d` package defaults). Four conv
blocks (kernel 5, max-pooling), AdamW with warm-up + cosine decay, random shifts of up to 2
positions, 6,000 steps.

`experiments/mnist1d_cnn.py:fast` is the recipe the benchmark times: 32-channel convs and 1,000
steps at a higher learning rate (a few seconds on a laptop CPU, about 1% less accurate, and more
seed-dependent).
"""

from jaxvision import config_lib, data, models, optim, sweep


def get_config(variant: str = "default"):
  if variant not in ("default", "fast"):
    raise ValueError(f"mnist1d_cnn takes 'default' or 'fast', got {variant!r}")
  config = config_lib.base_config()
  config.seed = 0
  config.augment.max_shift = 2
  config.data = data.data_config("mnist1d", batch_size=128)
  config.model = models.model_config("cnn_1d")
  config.optimizer = optim.optimizer_config(name="adamw", learning_rate=3e-3, weight_decay=1e-2)
  config.schedule = optim.schedule_config(name="warmup_cosine", warmup_steps=300)
  config.num_train_steps = 6000
  config.log_every_steps = 500
  config.eval_every_steps = 2000
  config.checkpoint.every_steps = 2000
  if variant == "fast":
    config.model.features = (32, 32, 32, 32)
    config.num_train_steps = 1000
    config.optimizer.learning_rate = 8e-3
    config.schedule.warmup_steps = 100
    config.log_every_steps = 250
    config.eval_every_steps = config.checkpoint.every_steps = 1000
  return config


def get_sweep(variant: str = "default"):
  """Three seeds of either recipe: `python -m jaxvision.sweep --config=experiments/mnist1d_cnn.py`
  (runs/mnist1d_cnn/seed=0, ...; `:fast` -> runs/mnist1d_cnn_fast/...)."""
  del variant  # the same seeds for both recipes
  return sweep.product(seed=range(3))
