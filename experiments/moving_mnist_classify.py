"""Moving MNIST motion classification: which of 4 orientations the digits move along.

  python -m jaxvision.main --config=experiments/moving_mnist_classify.py \\
      --workdir=runs/mmnist_classify
  python -m jaxvision.main --config=experiments/moving_mnist_classify.py:single_frame \\
      --workdir=runs/mmnist_classify_single_frame

The label is the orientation of the digits' path (folded into [0, 90] degrees, 4 bins); every
single frame is independent of it, so only motion tells. `:single_frame` is the control: the same
clips, the first frame only, where the model must stay at chance (25%). A model that beats the
control has learnt motion, not digit shapes or positions.

Offline: clips are generated on the fly from the MNIST IDX files in $JAXVISION_MNIST_DIR (else
../shared/data/mnist). The ordinary classifier trainer runs the registry's `video_classifier`
(per-frame encoder, one ConvLSTM over time, mean-pooled last state). Sized for a 2-core CPU: two
digits on 48x48 frames, 8 frames, batch 32, 2,000 steps. Measured on a 2-core AMD EPYC: 0.3-0.45 s
per step, 10-15 minutes in all; the control (one frame per clip) 0.05 s per step, about 2.

Seeds: `python -m jaxvision.tools.sweep --config=experiments/moving_mnist_classify.py` (and
`...classify.py:single_frame`) runs three seeds of either.
"""

import ml_collections

from jaxvision import config_lib, data, models, optim
from jaxvision.tools import sweep

VARIANTS = ("clips", "single_frame")


def get_config(variant: str = "clips") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"moving_mnist_classify takes one of {VARIANTS}, got {variant!r}")
  config = config_lib.base_config()  # trainer "classifier"
  config.seed = 0
  config.data = data.data_config(
    "moving_mnist",
    task="classify",
    label="orientation",
    classes=4,
    size=48,
    frames=8,
    digits_per_clip=2,
    single_frame=variant == "single_frame",
    batch_size=32,
    eval_batch_size=200,
    num_eval=1000,
  )
  config.model = models.model_config("video_classifier")
  config.optimizer = optim.optimizer_config(name="adam", learning_rate=2e-3, grad_clip_norm=1.0)
  config.schedule = optim.schedule_config(name="warmup_cosine", warmup_steps=100)
  config.num_train_steps = 2000
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint.every_steps = 500
  return config


def get_sweep(variant: str = "clips"):
  """Three seeds of the task or of its control (runs/moving_mnist_classify[_single_frame]/...)."""
  del variant  # the same seeds for both
  return sweep.product(seed=range(3))
