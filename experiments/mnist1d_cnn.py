"""MNIST-1D with a 1-D CNN: the default experiment; its data is generated, no download.

  python -m jaxvision.main --config=experiments/mnist1d_cnn.py --workdir=runs/mnist1d_cnn

4,000 train / 1,000 test sequences of length 40 (the `mnist1d` package defaults). AdamW with
warm-up + cosine decay and random shifts of up to 2 positions.
"""

from jaxvision import config_lib, optim


def get_config():
  config = config_lib.base_config()
  config.seed = 0
  config.num_train_steps = 6000
  config.log_every_steps = 500
  config.eval_every_steps = 2000
  config.augment.max_shift = 2
  config.data = config_lib.data_config(source="mnist1d", name="mnist1d", batch_size=128)
  config.model = dict(name="cnn_1d", dropout_rate=0.0, batch_norm=False)
  config.optimizer = optim.optimizer_config(name="adamw", learning_rate=3e-3, weight_decay=1e-2)
  config.schedule = optim.schedule_config(name="warmup_cosine", warmup_steps=300)
  config.checkpoint.every_steps = 2000
  return config
