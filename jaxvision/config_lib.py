"""Helpers for experiment configs: blocks with every key present, so locked overrides work."""

from __future__ import annotations

import os

import ml_collections

# Where the offline experiments find MNIST-format IDX files; relative paths are from the repo root.
MNIST_DIR_ENV = "JAXVISION_MNIST_DIR"
DEFAULT_MNIST_DIR = "../shared/data/mnist"


def block(defaults: dict, **overrides) -> ml_collections.ConfigDict:
  """A ConfigDict of `defaults` updated by `overrides`; an unknown override key is an error."""
  unknown = set(overrides) - set(defaults)
  if unknown:
    raise KeyError(f"unknown keys {sorted(unknown)}; expected some of {sorted(defaults)}")
  return ml_collections.ConfigDict({**defaults, **overrides})


DATA_DEFAULTS = dict(
  source="tfds",  # tfds | idx | mnist1d | digits | marked_sum
  name="mnist",  # the TFDS name, or a label for idx files
  data_dir="",  # tfds: its data_dir ("" = TFDS default); idx: the folder of IDX files
  train_split="train",  # TFDS-style split strings; slices like "t10k[:8000]" work for idx
  eval_split="test",
  normalize="standardize",  # standardize | unit | symmetric | none
  batch_size=128,
  eval_batch_size=1000,
  layout="image",  # image | sequence (images as rows over time, e.g. sequential MNIST)
  shuffle_labels=False,  # permute the train labels: a control that must stay at chance
  # Generated sources only (marked_sum): sizes and sequence length (0: the source's default).
  num_train=0,
  num_eval=0,
  seq_length=0,
)


def data_config(**overrides) -> ml_collections.ConfigDict:
  return block(DATA_DEFAULTS, **overrides)


def offline_mnist_data(**overrides) -> ml_collections.ConfigDict:
  """The real MNIST test split from IDX files: train t10k[:8000], eval t10k[8000:]."""
  return data_config(
    **{
      "source": "idx",
      "name": "mnist",
      "data_dir": os.environ.get(MNIST_DIR_ENV, DEFAULT_MNIST_DIR),
      "train_split": "t10k[:8000]",
      "eval_split": "t10k[8000:]",
      **overrides,
    }
  )


def gan_base_config() -> ml_collections.ConfigDict:
  """Keys every GAN experiment has (trainer "gan"); experiments set data and the networks."""
  from jaxvision import checkpoint, optim, xla

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
      generator=dict(
        features=(256, 128), kernel_size=4, batch_norm=True, conv_transpose_impl="auto"
      ),
      discriminator=dict(features=(64, 128), kernel_size=4, batch_norm=True),
      g_optimizer=optim.optimizer_config(**adam),
      d_optimizer=optim.optimizer_config(**adam),
      schedule=optim.schedule_config(),
      data=data_config(normalize="symmetric", batch_size=64),
      eval=dict(
        classifier_workdir="",  # a finished jaxvision classifier run on the same data ("": none)
        num_samples=10_000,  # generated images per evaluation (IS, class shares, KID)
        batch_size=500,
        grid_size=64,  # images in each samples/step_N.png
      ),
      parallel=dict(num_devices=0),
      xla=xla.xla_config(),
      checkpoint=checkpoint.checkpoint_config(),
    )
  )


def base_config(**overrides) -> ml_collections.ConfigDict:
  """Keys every experiment has; experiments set `data`, `model`, `optimizer`, `schedule`."""
  from jaxvision import checkpoint, models, optim, xla

  config = ml_collections.ConfigDict(
    dict(
      trainer="classifier",
      seed=0,
      num_train_steps=1000,
      log_every_steps=100,
      eval_every_steps=1000,
      label_smoothing=0.0,
      augment=dict(max_shift=0),  # random translation, in pixels/positions per spatial axis
      parallel=dict(num_devices=0),  # 0: every device
      # Train steps per compiled call (a lax.scan over batches gathered from data kept on
      # device); 1 is the plain per-step loop. Same results either way; faster only where
      # dispatch dominates (see benchmarks/RESULTS.md): on XLA:CPU scanned conv steps are slower.
      steps_per_call=1,
      xla=xla.xla_config(),
      data=data_config(),
      model=models.model_config("cnn_a"),
      optimizer=optim.optimizer_config(),
      schedule=optim.schedule_config(),
      checkpoint=checkpoint.checkpoint_config(),
    )
  )
  config.update(overrides)
  return config
