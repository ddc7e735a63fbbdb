"""Base configs for experiments: every key a trainer reads is present, so locked overrides work.

Experiments (`experiments/*.py`) start from `base_config()` (classifiers) or `gan_base_config()`
and set the blocks they change: `data` (`jaxvision.data.data_config`), `model`
(`jaxvision.models.model_config`), `optimizer`, `schedule`, `evaluators`.
"""

from __future__ import annotations

import ml_collections

from jaxvision import checkpoint, models, optim, parallel, xla
from jaxvision import data as data_lib
from jaxvision.data import idx


def offline_mnist_data(**overrides) -> ml_collections.ConfigDict:
  """The real MNIST test split from IDX files, 5 folds; fold 4 (the default) trains on
  t10k[:8000] and evaluates on t10k[8000:]. `--config.data.fold=K` selects another."""
  return data_lib.data_config(
    "idx",
    **{
      "name": "mnist",
      "data_dir": idx.default_mnist_dir(),
      "train_split": "t10k",
      "eval_split": "t10k",
      "num_folds": 5,
      "fold": 4,
      **overrides,
    },
  )


def classification_evaluators() -> ml_collections.ConfigDict:
  """One classification evaluator, "eval", on the eval split: eval_accuracy and eval_loss."""
  return ml_collections.ConfigDict({"eval": dict(type="classification", pred="predict")})


def members_config() -> dict:
  """The members keys (`jaxvision.train.members`): K models in one program, each its own run."""
  return dict(
    members="",  # e.g. "seed=0:5" or "optimizer.learning_rate=1e-3,3e-3;seed=0,1" ("": one run)
    members_impl="auto",  # auto | vmap | unroll: how one program steps every member
  )


def base_config(**overrides) -> ml_collections.ConfigDict:
  """Keys every classifier experiment has; experiments set `data`, `model`, `optimizer`, ..."""
  config = ml_collections.ConfigDict(
    dict(
      trainer="classifier",
      seed=0,
      num_train_steps=1000,
      log_every_steps=100,
      eval_every_steps=1000,
      label_smoothing=0.0,
      qat=False,  # quantization-aware training: int8 fake-quant weights and inputs (quantize.py)
      # Knowledge distillation (Hinton et al. 2015) from a trained classifier run.
      distill=dict(
        teacher="",  # the teacher run's workdir; "" trains on the labels alone
        temperature=0.0,  # softmax temperature of the soft targets; 0: 4
        alpha=0.0,  # weight of the labels' cross-entropy (the soft targets' is 1 - alpha)
      ),
      augment=dict(
        max_shift=0,  # random translation, in pixels/positions per spatial axis
        rotate=0.0,  # random rotation of images, up to this many degrees either way
        scale=0.0,  # random scaling of images by a factor in [1 - scale, 1 + scale]
        shear=0.0,  # random shear of images, up to this many degrees either way
      ),
      parallel=parallel.parallel_config(),
      # Train steps per compiled call (a lax.scan over batches gathered from data kept on
      # device); 1 is the plain per-step loop. Same results either way; faster only where
      # dispatch dominates (see benchmarks/RESULTS.md): on XLA:CPU scanned conv steps are slower.
      steps_per_call=1,
      **members_config(),
      xla=xla.xla_config(),
      data=data_lib.data_config("mnist1d"),
      model=models.model_config("cnn_a"),
      optimizer=optim.optimizer_config(),
      schedule=optim.schedule_config(),
      evaluators=classification_evaluators(),
      checkpoint=checkpoint.checkpoint_config(),
    )
  )
  config.update(overrides)
  return config


def gan_base_config() -> ml_collections.ConfigDict:
  """Keys every GAN experiment has (trainer "gan"); experiments set data and the networks."""
  adam = dict(name="adam", learning_rate=2e-4, b1=0.5, b2=0.999)
  return ml_collections.ConfigDict(
    dict(
      trainer="gan",
      seed=0,
      num_train_steps=5000,
      log_every_steps=100,
      eval_every_steps=1000,
      z_dim=100,
      loss="non_saturating",  # non_saturating | hinge
      ema_decay=0.999,  # generator EMA used for evaluation; 0 turns it off
      ema_start_step=0,  # the EMA copies the weights until this step, then averages
      augment="",  # DiffAugment policy for every image D sees, e.g. "translation,cutout"
      r1_gamma=0.0,  # R1 penalty weight on real images (0: off)
      r1_every=1,  # lazy R1 (StyleGAN2): on every k-th step, weighted by k
      conditional=False,  # class labels into G and a projection D ("make a 7")
      class_loss_weight=0.0,  # conditional: D also classifies, G is asked its labels (AC-GAN)
      generator=models.model_config("dcgan_generator"),
      discriminator=models.model_config("dcgan_discriminator"),
      g_optimizer=optim.optimizer_config(**adam),
      d_optimizer=optim.optimizer_config(**adam),
      schedule=optim.schedule_config(),
      data=data_lib.data_config("idx", normalize="symmetric", batch_size=64),
      evaluators=ml_collections.ConfigDict(
        {
          "eval": dict(
            type="gan",
            pred="generate",
            classifier_workdir="",  # a finished classifier run on the same data ("": none)
            num_samples=10_000,  # generated images per evaluation, for every metric
            batch_size=0,  # generated per compiled call (0: data.eval_batch_size)
            grid_size=64,  # images in each samples/step_N.png
          )
        }
      ),
      parallel=parallel.parallel_config(),
      **members_config(),
      xla=xla.xla_config(),
      checkpoint=checkpoint.checkpoint_config(),
    )
  )


def scenes_base_config(
  trainer: str,
  variant: str,
  *,
  batch_size: int,
  clip_batch_size: int,
  learning_rate: float,
  num_train_steps: int,
) -> ml_collections.ConfigDict:
  """What the multi-digit scenes experiments (detection, segmentation) share: scenes shifted by
  up to 8 pixels with their targets, 1,000 eval scenes (200 clips of 8 frames for `variant`
  "video"), AdamW (weight decay 1e-4) with 200 warm-up steps and a cosine decay to 1% of
  `learning_rate`, evaluated every 1,000 steps; the experiment sets `model` and `evaluators`."""
  config = base_config(trainer=trainer)
  # Classifier-only keys: a key nothing reads would be a silent no-op override.
  for key in ("label_smoothing", "qat", "distill"):
    del config[key]
  config.augment = ml_collections.ConfigDict(dict(max_shift=8))
  config.data = data_lib.data_config(
    "scenes", batch_size=batch_size, eval_batch_size=200, num_eval=1000
  )
  if variant == "video":
    config.data.update(frames=8, batch_size=clip_batch_size, eval_batch_size=40, num_eval=200)
  config.optimizer = optim.optimizer_config(
    name="adamw", learning_rate=learning_rate, weight_decay=1e-4
  )
  config.schedule = optim.schedule_config(name="warmup_cosine", warmup_steps=200, end_factor=0.01)
  config.num_train_steps = num_train_steps
  config.log_every_steps = 100
  config.eval_every_steps = 1000
  config.checkpoint.every_steps = 500
  return config
