"""CIFAR-10 with a bigger VGG-style ConvNet (batch norm, dropout, random shifts).

  python -m jaxvision.main --config=experiments/cifar10_cnn.py --workdir=runs/cifar10_cnn

Needs TFDS cifar10 prepared in data_dir (see the README); meant for a GPU.
"""

from jaxvision import config_lib, data, models, optim


def get_config():
  config = config_lib.base_config()
  config.seed = 0
  config.data = data.data_config("tfds", name="cifar10", batch_size=128, eval_batch_size=1000)
  epochs = 60
  config.num_train_steps = epochs * (50_000 // config.data.batch_size)
  config.log_every_steps = 100
  config.eval_every_steps = 2000
  config.augment.max_shift = 4
  config.model = models.model_config(
    "convnet",
    features=(64, 64, 128, 128, 256, 256),
    pool=(False, True, False, True, False, True),
    dense=(256,),
    padding="SAME",
    batch_norm=True,
    dropout_rate=0.3,
  )
  config.optimizer = optim.optimizer_config(
    name="sgd", learning_rate=0.1, momentum=0.9, nesterov=True, grad_clip_norm=5.0
  )
  config.schedule = optim.schedule_config(name="warmup_cosine", warmup_steps=1000)
  config.label_smoothing = 0.1
  config.checkpoint.every_steps = 2000
  return config
