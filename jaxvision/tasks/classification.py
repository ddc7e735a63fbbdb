"""Supervised classification (trainer "classifier"): images, sequences and clips into classes.

A batch is {"inputs": [B, ...], "targets": [B] class ids} and optionally "lengths" [B] (the valid
steps of padded sequences), which reaches the model as its `lengths` argument. Steps are pure
functions of explicit pytrees, written once for the global batch; the parallel strategy compiles
and places them (`axis_name` is None under sharded jit, the device axis under pmap).

Config keys read beyond the shared ones: `model` (any registry classifier), `optimizer`,
`schedule`, `augment` (max_shift, rotate, scale, shear), `label_smoothing`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxvision import models, optim, parallel, pruning, quantize
from jaxvision.config_dict import ConfigError
from jaxvision.data import augment
from jaxvision.tasks import base
from jaxvision.train.common import TrainState, num_params

# Per-example batch fields that reach the model as keyword arguments when a batch has them.
MODEL_FIELDS = ("lengths",)


def create_train_state(model, tx, example_inputs, key) -> TrainState:
  """Initialises params (and batch stats) from one example batch [B, ...]."""
  variables = model.init({"params": key}, example_inputs, train=False)
  return TrainState.create(
    apply_fn=model.apply,
    params=variables["params"],
    tx=tx,
    batch_stats=variables.get("batch_stats", {}),
  )


def model_variables(state: TrainState, params) -> dict:
  """The variables `apply_fn` takes: `params`, with the batch statistics when the model has any."""
  if state.batch_stats:
    return {"params": params, "batch_stats": state.batch_stats}
  return {"params": params}


def model_kwargs(batch: dict) -> dict:
  """The batch's fields beyond its inputs that the model takes (`MODEL_FIELDS`)."""
  return {k: batch[k] for k in MODEL_FIELDS if k in batch}


def predict(state: TrainState, batch: dict) -> jax.Array:
  """Logits [B, K] of a batch's inputs [B, ...] in inference mode (the evaluators' "predict")."""
  return state.apply_fn(
    model_variables(state, state.params), batch["inputs"], **model_kwargs(batch), train=False
  )


def features(state: TrainState, batch: dict) -> tuple[jax.Array, jax.Array]:
  """(logits [B, K], the output layer's inputs [B, D]) in inference mode (GAN metrics' space)."""
  return state.apply_fn(
    model_variables(state, state.params),
    batch["inputs"],
    **model_kwargs(batch),
    train=False,
    return_features=True,
  )


def train_step(
  state: TrainState,
  batch: dict,
  key: jax.Array,
  *,
  learning_rate_fn,
  max_shift: int = 0,
  time_axes: int = 0,
  affine: dict | None = None,
  label_smoothing: float = 0.0,
  teacher=None,
  temperature: float = 4.0,
  alpha: float = 0.0,
  axis_name: str | None = None,
):
  """One optimizer step on a batch {"inputs": [B, ...], "targets": [B] class ids}.

  Args:
    state: the train state (donated by the caller's compiled step).
    batch: the global batch (under pmap: this device's rows of it).
    key: the run's base PRNG key; this step's keys derive from it by `fold_in(key, step)`.
    learning_rate_fn: the schedule, logged as `learning_rate`.
    max_shift: random-shift augmentation (0: none); shifts are drawn for the global batch, so
      every strategy and device count augments each example alike.
    time_axes: leading input axes the shift leaves alone (a clip's frames; `augment`).
    affine: `augment.random_affine`'s ranges ({"rotate", "scale", "shear"}; None or zeros: off),
      applied before the shift.
    label_smoothing: cross-entropy label smoothing.
    teacher: inputs -> a teacher's logits, for distillation (None: the labels alone); the loss is
      then alpha * the labels' cross-entropy + (1 - alpha) * temperature^2 * the cross-entropy
      with the teacher's softmax at `temperature` (Hinton et al. 2015), on the same augmented
      inputs.
    temperature, alpha: of the distillation.
    axis_name: the device axis under pmap (gradients, metrics and batch statistics are averaged
      over it); None under sharded jit.

  Returns:
    (new state, {"train_loss", "train_accuracy", "learning_rate", "grad_norm"}).
  """
  aug_key, dropout_key = jax.random.split(jax.random.fold_in(key, state.step))
  if axis_name is not None:  # dropout masks differ per device (cannot match one device exactly)
    dropout_key = jax.random.fold_in(dropout_key, jax.lax.axis_index(axis_name))
  inputs = batch["inputs"]
  if affine and any(affine.values()):  # its own key: the shifts stay those of runs without it
    inputs = augment.random_affine(
      jax.random.fold_in(aug_key, 1), inputs, **affine, axis_name=axis_name
    )
  inputs = augment.random_shift(
    aug_key, inputs, max_shift, axis_name=axis_name, time_axes=time_axes
  )
  labels = batch["targets"]
  mutable = ["batch_stats"] if state.batch_stats else False
  soft = None
  if teacher is not None:
    soft = jax.nn.softmax(jax.lax.stop_gradient(teacher(inputs)) / temperature)

  def loss_fn(params):
    out = state.apply_fn(
      model_variables(state, params),
      inputs,
      **model_kwargs(batch),
      train=True,
      rngs={"dropout": dropout_key},
      mutable=mutable,
    )
    logits, updates = out if mutable else (out, {})
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    loss = optax.softmax_cross_entropy(logits, targets).mean()
    if soft is not None:
      distilled = optax.softmax_cross_entropy(logits / temperature, soft).mean() * temperature**2
      loss = alpha * loss + (1.0 - alpha) * distilled
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = parallel.pmean(grads, axis_name)
  new_state = state.apply_gradients(
    grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats)
  )
  step_metrics = {
    "train_loss": loss,
    "train_accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
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
  ranges = {"rotate": (0, 180), "scale": (0, 1), "shear": (0, 80)}
  for name, (low, high) in ranges.items():
    value = config.augment.get(name, 0.0)
    if not low <= value < high:
      raise ConfigError(f"config.augment.{name}={value} must be in [{low}, {high})")
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ConfigError(f"config.label_smoothing={config.label_smoothing} must be in [0, 1)")


class Task(base.Task):
  """Classification: a registry classifier, one optimizer, cross-entropy (see the module)."""

  def __init__(self, config, data: base.DataInfo, axis_name: str | None = None):
    super().__init__(config, data, axis_name)
    self.model = models.create_model(
      config.model, num_classes=data.num_classes, axis_name=axis_name
    )
    self.tx, self.schedule = optim.create_optimizer(
      config.optimizer, config.schedule, config.num_train_steps
    )
    self._teacher = None  # loaded by the first traced step (`_distillation`)

  validate = staticmethod(validate)

  def init_state(self, key) -> TrainState:
    example = jnp.zeros((1, *self.data.input_shape), jnp.float32)
    state = create_train_state(self.model, self.tx, example, key)
    if self.config.get("qat"):  # training and evaluation see the int8 model's rounding
      state = state.replace(apply_fn=quantize.qat_apply(self.model.apply))
    return state

  def train_step(self, state, batch, key, *, axis_name=None):
    augment_config = self.config.augment
    return train_step(
      state,
      batch,
      key,
      learning_rate_fn=self.schedule,
      max_shift=augment_config.max_shift,
      time_axes=self.data.info.get("time_axes", 0),
      affine={k: augment_config.get(k, 0.0) for k in ("rotate", "scale", "shear")},
      label_smoothing=self.config.label_smoothing,
      axis_name=axis_name,
      **self._distillation(),
    )

  def _distillation(self) -> dict:
    """The teacher's logits function and settings when `config.distill.teacher` is set (its run
    is loaded when the step is first traced, so a student loads without its teacher)."""
    distill = self.config.get("distill")
    if not distill or not distill.teacher:
      return {}
    if self._teacher is None:
      from jaxvision import runs

      with jax.ensure_compile_time_eval():  # loaded while the step is traced: concrete arrays
        run = runs.load_run(distill.teacher)
      same = (run.task.data.num_classes, tuple(run.task.data.input_shape)) == (
        self.data.num_classes,
        tuple(self.data.input_shape),
      )
      if run.config.trainer != "classifier" or not same:
        raise ConfigError(
          f"config.distill.teacher={distill.teacher} must be a classifier of the same inputs "
          f"{tuple(self.data.input_shape)} and {self.data.num_classes} classes"
        )
      state = run.state
      self._teacher = lambda x: predict(state, {"inputs": x})
    return {
      "teacher": self._teacher,
      "temperature": distill.temperature or 4.0,
      "alpha": distill.alpha,
    }

  def with_optimizers(self, state):
    return state.replace(tx=self.tx)

  def predict_fns(self) -> dict:
    return {"predict": predict, "features": features}

  def summary(self, state) -> str:
    return f"{self.config.model.name}: {num_params(state.params):,} params"

  def results(self, state) -> dict:
    return {
      "num_params": num_params(state.params),
      "num_nonzero": pruning.nonzeros(state.params),
      "model": models.describe(self.config.model),
    }
