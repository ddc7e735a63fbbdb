"""DCGAN on CIFAR-10 (32x32x3, TFDS); metrics on the features of experiments/cifar10_cnn.py.

  python -m jaxvision.main --config=experiments/cifar10_cnn.py --workdir=runs/cifar10_cnn
  python -m jaxvision.main --config=experiments/cifar10_dcgan.py --workdir=runs/cifar10_dcgan

4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x3 against a 128-256-512 discriminator, as in the DCGAN
paper's CIFAR setup. Meant for a GPU; needs TFDS cifar10 prepared in data_dir.
"""

from jaxvision import config_lib, data, models


def get_config():
  config = config_lib.gan_base_config()
  config.data = data.data_config("tfds", name="cifar10", normalize="symmetric", batch_size=128)
  config.evaluators.eval.classifier_workdir = "runs/cifar10_cnn"
  config.generator = models.model_config("dcgan_generator_cifar")
  config.discriminator = models.model_config("dcgan_discriminator_cifar")
  config.num_train_steps = 50_000
  config.eval_every_steps = 5000
  config.checkpoint.every_steps = 5000
  return config
