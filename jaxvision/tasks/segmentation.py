"""Semantic segmentation (trainer "segmentation"): a class for every pixel.

A batch is {"inputs": images [B, H, W, C], "targets": class maps [B, H, W] int32} (class 0 the
background; `jaxvision.data.scenes` gives 1 + digit for the 10 digits, so 11 classes: the data
set's `num_classes` + 1); clips [B, T, H, W, C] with maps [B, T, H, W] are segmented frame by
frame. The loss is the per-pixel cross-entropy averaged over pixels, plus `dice_weight` times the
soft Dice loss (1 - the mean over the classes present in a scene of its soft Dice coefficient,
averaged over scenes: a per-example mean like the cross-entropy, the same under every
strategy). Augmentation shifts each scene and its class map together (`augment.shift_scene`).

Config keys read beyond the shared ones: `model` (a registry segmenter, e.g. "unet"),
`optimizer`, `schedule`, `augment.max_shift`, `dice_weight`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxvision import models, optim, parallel
from jaxvision.config_dict import ConfigError
from jaxvision.data import augment
from jaxvision.tasks import base
from jaxvision.tasks.classification import create_train_state, model_variables
from jaxvision.train.common import TrainState, num_params


def _frames(x: jax.Array, spatial: int) -> jax.Array:
  """`x` [B, (T,) *spatial-and-after] with the time axis (if any) folded into the batch."""
  return x.reshape(-1, *x.shape[x.ndim - spatial :])


def predict(state: TrainState, batch: dict) -> jax.Array:
  """Per-pixel logits [B, (T,) H, W, K] of a batch's images (or clips) in inference mode."""
  inputs = batch["inputs"]
  logits = state.apply_fn(model_variables(state, state.params), _frames(inputs, 3), train=False)
  return logits.reshape(*inputs.shape[:-1], logits.shape[-1])


def dice_loss(logits: jax.Array, onehot: jax.Array) -> jax.Array:
  """1 - soft Dice per example [B] of logits [B, H, W, K] against one-hot class maps
  [B, H, W, K]: the mean over the classes present in the example's targets of
  2 |P Y| / (|P| + |Y|), P the softmax, Y the targets.

  Classes absent from an example are left to the cross-entropy: a Dice term for them only
  pushes their probability down everywhere, and with a digit in at most 5 of a scene's 11
  classes that pressure silenced whole digit classes for good in a 4,000-step run (their IoU 0,
  the others' 0.8-0.9)."""
  probs = jax.nn.softmax(logits)
  sizes = jnp.sum(onehot, axis=(1, 2))  # [B, K]
  both = jnp.sum(probs * onehot, axis=(1, 2))
  dice = (2.0 * both + 1.0) / (jnp.sum(probs, axis=(1, 2)) + sizes + 1.0)
  present = (sizes > 0).astype(dice.dtype)
  return 1.0 - jnp.sum(dice * present, -1) / jnp.maximum(jnp.sum(present, -1), 1.0)


def train_step(
  state: TrainState,
  batch: dict,
  key: jax.Array,
  *,
  learning_rate_fn,
  max_shift: int = 0,
  dice_weight: float = 0.0,
  axis_name: str | None = None,
):
  """One optimizer step on a batch {"inputs": [B, (T,) H, W, C], "targets": [B, (T,) H, W]}.

  Args:
    state: the train state (donated by the caller's compiled step).
    batch: the global batch (under pmap: this device's rows of it).
    key: the run's base PRNG key; this step's keys derive from it by `fold_in(key, step)`.
    learning_rate_fn: the schedule, logged as `learning_rate`.
    max_shift: shift augmentation of images and class maps together (0: none).
    dice_weight: weight of the soft Dice loss added to the cross-entropy (0: none).
    axis_name: the device axis under pmap (gradients, metrics and batch statistics are averaged
      over it); None under sharded jit.

  Returns:
    (new state, {"train_loss", "train_pixel_accuracy", "learning_rate", "grad_norm"}).
  """
  aug_key, dropout_key = jax.random.split(jax.random.fold_in(key, state.step))
  if axis_name is not None:  # dropout masks differ per device (cannot match one device exactly)
    dropout_key = jax.random.fold_in(dropout_key, jax.lax.axis_index(axis_name))
  batch = augment.shift_scene(
    aug_key, {"inputs": batch["inputs"], "targets": batch["targets"]}, max_shift, axis_name
  )
  inputs, targets = _frames(batch["inputs"], 3), _frames(batch["targets"], 2)
  mutable = ["batch_stats"] if state.batch_stats else False

  def loss_fn(params):
    out = state.apply_fn(
      model_variables(state, params),
      inputs,
      train=True,
      rngs={"dropout": dropout_key},
      mutable=mutable,
    )
    logits, updates = out if mutable else (out, {})  # [B, H, W, K]
    onehot = jax.nn.one_hot(targets, logits.shape[-1])  # (a gather's gradient is a slow scatter)
    loss = optax.softmax_cross_entropy(logits, onehot).mean()
    if dice_weight:
      loss = loss + dice_weight * dice_loss(logits, onehot).mean()
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = parallel.pmean(grads, axis_name)
  new_state = state.apply_gradients(
    grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats)
  )
  step_metrics = {
    "train_loss": loss,
    "train_pixel_accuracy": jnp.mean(jnp.argmax(logits, -1) == targets),
    "learning_rate": learning_rate_fn(state.step),
    "grad_norm": optax.global_norm(grads),
  }
  return new_state, parallel.pmean(step_metrics, axis_name)


def validate(config, strategy) -> None:
  """Checks the keys this family reads; raises ConfigError naming the key and the fix."""
  del strategy
  optim.validate(config.optimizer, "optimizer")
  if config.augment.max_shift < 0:
    raise ConfigError(f"config.augment.max_shift={config.augment.max_shift} must be >= 0")
  if config.dice_weight < 0:
    raise ConfigError(f"config.dice_weight={config.dice_weight} must be >= 0")
  if config.data.source != "scenes":
    raise ConfigError(
      f"the segmentation trainer needs config.data.source='scenes' (got {config.data.source!r}):"
      " a source of images with per-pixel class maps"
    )


class Task(base.Task):
  """Segmentation with a registry segmenter and per-pixel cross-entropy (see the module)."""

  def __init__(self, config, data: base.DataInfo, axis_name: str | None = None):
    super().__init__(config, data, axis_name)
    self.num_classes = data.num_classes + 1  # the background, then the data set's classes
    self.model = models.create_model(
      config.model, num_classes=self.num_classes, axis_name=axis_name
    )
    self.tx, self.schedule = optim.create_optimizer(
      config.optimizer, config.schedule, config.num_train_steps
    )

  validate = staticmethod(validate)

  def init_state(self, key) -> TrainState:
    example = jnp.zeros((1, *self.data.input_shape[-3:]), jnp.float32)  # one image [1, H, W, C]
    return create_train_state(self.model, self.tx, example, key)

  def train_step(self, state, batch, key, *, axis_name=None):
    return train_step(
      state,
      batch,
      key,
      learning_rate_fn=self.schedule,
      max_shift=self.config.augment.max_shift,
      dice_weight=float(self.config.dice_weight),
      axis_name=axis_name,
    )

  def with_optimizers(self, state):
    return state.replace(tx=self.tx)

  def predict_fns(self) -> dict:
    return {"predict": predict}

  def evaluator_info(self) -> dict:
    return {"num_pixel_classes": self.num_classes}

  def summary(self, state) -> str:
    return f"{self.config.model.name}: {num_params(state.params):,} params"

  def results(self, state) -> dict:
    return {"num_params": num_params(state.params), "model": models.describe(self.config.model)}
