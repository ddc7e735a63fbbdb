"""scikit-learn's 8x8 digits with a small ConvNet: seconds on a laptop, no download.

python -m jaxvision.main --config=experiments/digits_cnn.py --workdir=runs/digits_cnn
"""

from jaxvision import config_lib, data, models, optim
from jaxvision.tools import sweep


def get_config():
  config = config_lib.base_config()
  config.seed = 0
  config.data = data.data_config("digits", batch_size=64, eval_batch_size=360)
  config.num_train_steps = 1000
  config.log_every_steps = 100
  config.eval_every_steps = 500
  config.model = models.model_config(
    "convnet", features=(32, 64), pool=(False, True), dense=(64,), padding="SAME", dropout_rate=0.1
  )
  config.optimizer = optim.optimizer_config(name="adam", learning_rate=1e-3)
  config.schedule = optim.schedule_config(name="warmup_cosine", warmup_steps=50)
  config.checkpoint.every_steps = 500
  return config


def get_sweep():
  """Four seeds: `python -m jaxvision.tools.sweep --config=experiments/digits_cnn.py
  --parallel=2`."""
  return sweep.product(seed=range(4))
