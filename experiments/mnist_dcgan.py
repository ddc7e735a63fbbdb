"""DCGAN on MNIST; sample quality measured on the features of a jaxvision MNIST classifier.

Offline (the real MNIST test split from IDX files, train t10k[:8000]; first train the classifier
whose features the metrics use):

  python -m jaxvision.main --config=experiments/mnist_cnn.py:idx --workdir=runs/mnist_cnn_idx
  python -m jaxvision.main --config=experiments/mnist_dcgan.py:idx --workdir=runs/mnist_dcgan_idx

`:tfds` (the default) trains on TFDS mnist with `runs/mnist_cnn` as the classifier. Samples:
`python -m jaxvision.tools.sample --workdir=runs/mnist_dcgan_idx --num=64 --out=grid.png`.
"""

from jaxvision import config_lib, data

CLASSIFIER = {"tfds": "runs/mnist_cnn", "idx": "runs/mnist_cnn_idx"}


def get_config(source: str = "tfds"):
  if source not in CLASSIFIER:
    raise ValueError(f"mnist_dcgan takes 'tfds' or 'idx', got {source!r}")
  config = config_lib.gan_base_config()
  if source == "idx":
    config.data = config_lib.offline_mnist_data(normalize="symmetric", batch_size=64)
  else:
    config.data = data.data_config("tfds", name="mnist", normalize="symmetric", batch_size=64)
  config.evaluators.eval.classifier_workdir = CLASSIFIER[source]
  config.generator.features = (128, 64)  # 7x7x128 -> 14x14x64 -> 28x28x1
  config.discriminator.features = (64, 128)
  config.num_train_steps = 10_000
  config.eval_every_steps = 2500
  config.checkpoint.every_steps = 2500
  return config
