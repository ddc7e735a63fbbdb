"""DCGAN on MNIST; sample quality measured on the features of a jaxvision MNIST classifier.

Offline (the real MNIST test split from IDX files, train t10k[:8000]; first train the classifier
whose features the metrics use):

  python -m jaxvision.main --config=experiments/mnist_cnn.py:idx_sharp \
      --workdir=runs/mnist_cnn_idx_sharp/default
  python -m jaxvision.main --config=experiments/mnist_dcgan.py:idx --workdir=runs/mnist_dcgan_idx

(the classifier is CNN A on the GAN's own training images without label smoothing, so that real
digits score near the Inception score's ceiling of 10). `:tfds` (the default) trains on TFDS
mnist with `runs/mnist_cnn` as the classifier. Samples:
`python -m jaxvision.tools.sample --workdir=runs/mnist_dcgan_idx --num=64 --out=grid.png`.

`:idx_ablation` is the small-data ablation (`python -m jaxvision.tools.sweep
--config=experiments/mnist_dcgan.py:idx_ablation`): every option alone on top of the plain recipe,
the same seed and 3,000 steps for all. `:idx_best` is the recipe that combines them (two seeds).
"""

from jaxvision import config_lib, data

CLASSIFIER = {"tfds": "runs/mnist_cnn", "idx": "runs/mnist_cnn_idx_sharp/default"}
VARIANTS = ("tfds", "idx", "idx_ablation", "idx_best")


def get_config(source: str = "tfds"):
  if source not in VARIANTS:
    raise ValueError(f"mnist_dcgan takes one of {VARIANTS}, got {source!r}")
  if source == "idx_ablation":
    config = get_config("idx")
    config.num_train_steps = 3000
    config.eval_every_steps = 1500
    config.checkpoint.every_steps = 500
    return config
  if source == "idx_best":
    # The small-data recipe: class-conditional (projection D with an AC-GAN class head: without
    # it 93.7% of the samples were the digit asked for), hinge loss, a spectrally normalised D
    # without batch norm, DiffAugment; 10,000 steps.
    config = get_config("idx")
    config.conditional = True
    config.class_loss_weight = 1.0
    config.loss = "hinge"
    config.discriminator.batch_norm = False
    config.discriminator.spectral_norm = True
    config.augment = "translation,cutout"
    return config
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


def get_sweep(source: str = "tfds"):
  """`:idx_ablation`: the plain recipe and each small-data option alone (R1 and spectral norm
  with batch norm off in D, as they assume, so "d_no_batch_norm" is their baseline); lazy R1
  every 16 steps as in StyleGAN2; TTUR with Heusel et al.'s rates. `:idx_best`: two seeds.
  Other variants: one run."""
  if source == "idx_best":
    return [{"seed": 0}, {"seed": 1}]
  if source != "idx_ablation":
    return [{}]
  no_bn = {"discriminator.batch_norm": False}
  r1 = lambda gamma: {"_name": f"r1_{gamma:g}", **no_bn, "r1_gamma": gamma, "r1_every": 16}
  return [
    {"_name": "plain"},
    {"_name": "diffaugment", "augment": "translation,cutout"},
    {"_name": "d_no_batch_norm", **no_bn},
    r1(0.1),
    r1(1.0),
    r1(10.0),
    {"_name": "spectral_norm", **no_bn, "discriminator.spectral_norm": True},
    {"_name": "ttur", "g_optimizer.learning_rate": 1e-4, "d_optimizer.learning_rate": 4e-4},
    {"_name": "hinge", "loss": "hinge"},
    {"_name": "conditional", "conditional": True},
  ]
