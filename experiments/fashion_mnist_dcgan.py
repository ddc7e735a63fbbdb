"""DCGAN on Fashion-MNIST (TFDS), metrics on a jaxvision Fashion-MNIST classifier's features.

  python -m jaxvision.main --config=experiments/mnist_cnn.py --workdir=runs/fashion_mnist_cnn \
      --config.data.name=fashion_mnist
  python -m jaxvision.main --config=experiments/fashion_mnist_dcgan.py \
      --workdir=runs/fashion_mnist_dcgan

Needs TFDS fashion_mnist prepared in data_dir (see the README). `:idx` reads Fashion-MNIST's
original IDX files from $JAXVISION_FASHION_MNIST_DIR instead (train / t10k splits).
"""

import os

from jaxvision import config_lib, data


def get_config(source: str = "tfds"):
  if source not in ("tfds", "idx"):
    raise ValueError(f"fashion_mnist_dcgan takes 'tfds' or 'idx', got {source!r}")
  config = config_lib.gan_base_config()
  common = dict(name="fashion_mnist", normalize="symmetric", batch_size=64)
  if source == "idx":
    config.data = data.data_config(
      "idx",
      data_dir=os.environ.get("JAXVISION_FASHION_MNIST_DIR", ""),
      train_split="train",
      eval_split="t10k",
      **common,
    )
  else:
    config.data = data.data_config("tfds", **common)
  config.evaluators.eval.classifier_workdir = "runs/fashion_mnist_cnn"
  config.generator.features = (128, 64)
  config.discriminator.features = (64, 128)
  config.num_train_steps = 20_000
  config.eval_every_steps = 5000
  config.checkpoint.every_steps = 2500
  return config
