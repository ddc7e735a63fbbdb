"""Next-frame prediction (trainer "video"): `train_step`, `predict`, `train_and_evaluate`.

A clip batch is {"inputs": the whole clip [B, T, H, W, C] in [0, 1], "targets": its last P frames
[B, P, H, W, C]} (`jaxvision.data.moving_mnist`, task "predict"). Training is teacher-forced
(`teacher_forcing=True`: the predictor reads the true previous frame at every step) or free
running (False: after the T - P context frames it reads the sigmoid of its own previous output,
as at evaluation, and the loss is backpropagated through that feedback). Evaluation always rolls
the model out freely from the context frames (`predict`), so it never sees the frames it is
scored on. The loss is a per-frame mean ("bce": binary cross-entropy of the
logits, pixels as soft targets; "mse": squared error of the sigmoid pixels) over the P target
frames and the batch.

Video *classification* needs no Task of its own: its batches are {"inputs", "targets"} class
ids, so `jaxvision.tasks.classification` trains the registry's `video_classifier` on them.

Config keys read beyond the shared ones: `loss` ("bce" | "mse"), `teacher_forcing` (bool,
default True), `model` (a `FramePredictor`
preset, e.g. "convlstm_predictor"), `optimizer`, `schedule`, `data` (a "moving_mnist" source with
task "predict"), `evaluators` (e.g. type "video_prediction").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxvision import models, optim, parallel, video_metrics
from jaxvision.config_dict import ConfigError
from jaxvision.tasks import base
from jaxvision.train.common import TrainState, num_params

LOSSES = ("bce", "mse")


def create_train_state(model, tx, example_clip, key) -> TrainState:
  """Initialises the predictor's params from one example clip [1, T, H, W, C]."""
  variables = model.init({"params": key}, example_clip, train=False)
  return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx)


def frame_loss(logits: jax.Array, targets: jax.Array, loss: str) -> jax.Array:
  """Per-frame loss [B, P] of logits [B, P, H, W, C] against frames [B, P, H, W, C] in [0, 1]."""
  if loss == "bce":
    return video_metrics.frame_bce(logits, targets)
  if loss == "mse":
    return video_metrics.frame_mse(jax.nn.sigmoid(logits), targets)
  raise ValueError(f"unknown video loss {loss!r}; expected one of {LOSSES}")


def train_step(
  state: TrainState,
  batch: dict,
  key: jax.Array,
  *,
  learning_rate_fn,
  loss: str = "bce",
  teacher_forcing: bool = True,
  axis_name: str | None = None,
):
  """One optimizer step on a clip batch, teacher-forced or free running.

  Args:
    state: the train state (donated by the caller's compiled step).
    batch: {"inputs": clips [B, T, H, W, C], "targets": their last P frames [B, P, H, W, C]}
      (under pmap: this device's rows).
    key: the run's base PRNG key. Unused: the predictor has no dropout or noise; kept so that
      every trainer's step has the same signature (and a stochastic variant needs no new plumbing).
    learning_rate_fn: the schedule, logged as `learning_rate`.
    loss: "bce" or "mse" (see `frame_loss`), averaged over frames and clips.
    teacher_forcing: feed the true previous frames (True) or, after the context, the model's own
      predictions, as the evaluation rollout does (False).
    axis_name: the device axis under pmap (gradients and metrics are averaged over it; every
      device holds the same number of clips, so that is the global mean); None under jit.

  Returns:
    (new state, {"train_loss", "learning_rate", "grad_norm"}).
  """
  del key
  clips, targets = batch["inputs"], batch["targets"]
  num_predict = targets.shape[1]

  def loss_fn(params):
    logits = state.apply_fn(
      {"params": params},
      clips,
      train=True,
      num_predict=num_predict,
      teacher_forcing=teacher_forcing,
    )  # [B, P, H, W, C]
    return frame_loss(logits, targets, loss).mean()

  value, grads = jax.value_and_grad(loss_fn)(state.params)
  grads = parallel.pmean(grads, axis_name)
  new_state = state.apply_gradients(grads=grads)
  step_metrics = {
    "train_loss": value,
    "learning_rate": learning_rate_fn(state.step),
    "grad_norm": optax.global_norm(grads),
  }
  return new_state, parallel.pmean(step_metrics, axis_name)


def predict(state: TrainState, batch: dict) -> jax.Array:
  """Free-running rollout: logits [B, P, H, W, C] of the last P frames of a batch's clips
  {"inputs": [B, T, H, W, C], "targets": [B, P, H, W, C]}, predicted from the first T - P alone
  (the evaluators' "predict"; only the targets' shape is read)."""
  return state.apply_fn(
    {"params": state.params},
    batch["inputs"],
    train=False,
    num_predict=batch["targets"].shape[1],
    teacher_forcing=False,
  )


def validate(config, strategy) -> None:
  """Checks the keys this trainer reads; raises ConfigError naming the key and the fix."""
  del strategy
  optim.validate(config.optimizer, "optimizer")
  if config.loss not in LOSSES:
    raise ConfigError(f"config.loss={config.loss!r} unknown; expected one of {LOSSES}")
  if not isinstance(config.get("teacher_forcing", True), bool):
    raise ConfigError(f"config.teacher_forcing={config.teacher_forcing!r} must be True or False")
  if config.data.source != "moving_mnist" or config.data.task != "predict":
    raise ConfigError(
      "the video trainer needs config.data.source='moving_mnist' with task='predict' "
      f"(got {config.data.source!r}); video classification runs with trainer='classifier'"
    )


class Task(base.Task):
  """Next-frame prediction with a registry `FramePredictor` (see the module)."""

  def __init__(self, config, data: base.DataInfo, axis_name: str | None = None):
    super().__init__(config, data, axis_name)
    self.model = models.create_model(config.model, axis_name=axis_name)
    self.tx, self.schedule = optim.create_optimizer(
      config.optimizer, config.schedule, config.num_train_steps
    )

  validate = staticmethod(validate)

  def init_state(self, key) -> TrainState:
    example = jnp.zeros((1, *self.data.input_shape), jnp.float32)  # [1, T, H, W, C]
    return create_train_state(self.model, self.tx, example, key)

  def train_step(self, state, batch, key, *, axis_name=None):
    return train_step(
      state,
      batch,
      key,
      learning_rate_fn=self.schedule,
      loss=self.config.loss,
      teacher_forcing=self.config.get("teacher_forcing", True),
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
