"""Speech recognition with CTC (trainer "ctc"): log-mel frames in, a word per output label.

A batch is {"inputs": frames [B, T, F] (zero past each utterance's end), "lengths": real frames
[B] int32, "targets": word ids [B, L] int32 padded with -1} (`jaxvision.data.speech`). The model
(`jaxvision.models.speech`) maps it to per-frame logits [B, T', K] over the CTC blank (class 0)
and the words (word w is class w + 1, so K = data.num_classes + 1) with their paddings [B, T']
(the front end's time downsampling included), and the loss is `optax.ctc_loss` per utterance,
averaged over the batch. SpecAugment (`jaxvision.data.audio.spec_augment`) masks (and optionally
warps) the train inputs on device, drawn for the global batch from this step's key.

Config keys read beyond the shared ones: `model` (a `SpeechRecognizer` preset, e.g.
"speech_bilstm"), `optimizer`, `schedule`, `spec_augment` (freq_masks, freq_width, time_masks,
time_width, vtlp; zeros: off), `data` (source "speech"), `evaluators` (type "speech").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxvision import models, optim, parallel
from jaxvision.config_dict import ConfigError
from jaxvision.data import audio
from jaxvision.tasks import base
from jaxvision.train.common import TrainState, num_params

SOURCES = ("speech",)  # data sources with {"inputs", "lengths", "targets"} word sequences


def create_train_state(model, tx, example_inputs, key) -> TrainState:
  """Initialises the recogniser's params from one example batch of frames [1, T, F]."""
  variables = model.init({"params": key}, example_inputs, train=False)
  return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx)


def ctc_labels(targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(CTC labels [B, L]: word w as class w + 1, label paddings [B, L]: 1.0 past the words) of
  word ids [B, L] padded with -1."""
  real = targets >= 0
  return jnp.where(real, targets + 1, 0), (~real).astype(jnp.float32)


def ctc_loss(logits: jax.Array, paddings: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-utterance CTC loss [B] (the negative log-probability of the targets) of logits
  [B, T', K] with frame paddings [B, T'], against word ids [B, L] padded with -1."""
  labels, label_paddings = ctc_labels(targets)
  return optax.ctc_loss(logits, paddings, labels, label_paddings)


def predict(state: TrainState, batch: dict) -> tuple[jax.Array, jax.Array]:
  """(logits [B, T', K], frame paddings [B, T']) of a batch's frames in inference mode (the
  evaluators' "predict")."""
  return state.apply_fn(
    {"params": state.params}, batch["inputs"], lengths=batch["lengths"], train=False
  )


def train_step(
  state: TrainState,
  batch: dict,
  key: jax.Array,
  *,
  learning_rate_fn,
  spec_augment: dict | None = None,
  axis_name: str | None = None,
):
  """One optimizer step on a batch {"inputs", "lengths", "targets"} (see the module).

  Args:
    state: the train state (donated by the caller's compiled step).
    batch: the global batch (under pmap: this device's rows of it).
    key: the run's base PRNG key; this step's keys derive from it by `fold_in(key, step)`.
    learning_rate_fn: the schedule, logged as `learning_rate`.
    spec_augment: `audio.spec_augment`'s masks and warp (None or zeros: none), drawn for the
      global batch.
    axis_name: the device axis under pmap (gradients and metrics are averaged over it; every
      device holds as many utterances, so that is the global mean); None under jit.

  Returns:
    (new state, {"train_loss", "learning_rate", "grad_norm"}).
  """
  aug_key, dropout_key = jax.random.split(jax.random.fold_in(key, state.step))
  if axis_name is not None:  # dropout masks differ per device (cannot match one device exactly)
    dropout_key = jax.random.fold_in(dropout_key, jax.lax.axis_index(axis_name))
  lengths = batch["lengths"]
  inputs = audio.spec_augment(
    aug_key, batch["inputs"], lengths, **(spec_augment or {}), axis_name=axis_name
  )

  def loss_fn(params):
    logits, paddings = state.apply_fn(
      {"params": params}, inputs, lengths=lengths, train=True, rngs={"dropout": dropout_key}
    )
    return ctc_loss(logits, paddings, batch["targets"]).mean()

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  grads = parallel.pmean(grads, axis_name)
  new_state = state.apply_gradients(grads=grads)
  step_metrics = {
    "train_loss": loss,
    "learning_rate": learning_rate_fn(state.step),
    "grad_norm": optax.global_norm(grads),
  }
  return new_state, parallel.pmean(step_metrics, axis_name)


def validate(config, strategy) -> None:
  """Checks the keys this trainer reads; raises ConfigError naming the key and the fix."""
  del strategy
  optim.validate(config.optimizer, "optimizer")
  if config.data.source not in SOURCES:
    raise ConfigError(
      f"the ctc trainer needs word sequences: config.data.source must be one of {SOURCES}, "
      f"got {config.data.source!r}"
    )
  audio.validate_spec_augment(config.spec_augment)


class Task(base.Task):
  """CTC speech recognition with a registry `SpeechRecognizer` (see the module)."""

  def __init__(self, config, data: base.DataInfo, axis_name: str | None = None):
    super().__init__(config, data, axis_name)
    # The data's classes are the words; the model adds the CTC blank at 0.
    self.model = models.create_model(config.model, num_classes=data.num_classes + 1)
    self.tx, self.schedule = optim.create_optimizer(
      config.optimizer, config.schedule, config.num_train_steps
    )

  validate = staticmethod(validate)

  def init_state(self, key) -> TrainState:
    example = jnp.zeros((1, *self.data.input_shape), jnp.float32)  # [1, T, F]
    return create_train_state(self.model, self.tx, example, key)

  def train_step(self, state, batch, key, *, axis_name=None):
    return train_step(
      state,
      batch,
      key,
      learning_rate_fn=self.schedule,
      spec_augment=dict(self.config.spec_augment),
      axis_name=axis_name,
    )

  def with_optimizers(self, state):
    return state.replace(tx=self.tx)

  def predict_fns(self) -> dict:
    return {"predict": predict}

  def summary(self, state) -> str:
    return f"{self.config.model.name}: {num_params(state.params):,} params"

  def results(self, state) -> dict:
    return {"num_params": num_params(state.params), "model": models.describe(self.config.model)}
