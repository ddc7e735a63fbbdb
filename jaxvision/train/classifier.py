"""Supervised classification: `train_step`, `train_steps` and `train_and_evaluate`.

Steps are pure functions of explicit pytrees, written once for the global batch; the parallel
strategy compiles and places them (`axis_name` is None under sharded jit, the device axis under
pmap) and the shared loop (`jaxvision.train.loop`) does the periodic work.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxvision import data as data_lib
from jaxvision import models, optim, parallel, xla
from jaxvision.data import augment
from jaxvision.evaluators import common as evaluators_lib
from jaxvision.train import loop
from jaxvision.train.common import TrainState, num_params


def create_train_state(model, tx, example_inputs, key) -> TrainState:
  """Initialises params (and batch stats) from one example batch [B, ...]."""
  variables = model.init({"params": key}, example_inputs, train=False)
  return TrainState.create(
    apply_fn=model.apply,
    params=variables["params"],
    tx=tx,
    batch_stats=variables.get("batch_stats", {}),
  )


def _variables(state: TrainState, params) -> dict:
  if state.batch_stats:
    return {"params": params, "batch_stats": state.batch_stats}
  return {"params": params}


def predict(state: TrainState, inputs: jax.Array) -> jax.Array:
  """Logits [B, K] of inputs [B, ...] in inference mode (the "predict" evaluators use)."""
  return state.apply_fn(_variables(state, state.params), inputs, train=False)


def train_step(
  state: TrainState,
  batch: dict,
  key: jax.Array,
  *,
  learning_rate_fn,
  max_shift: int = 0,
  time_axes: int = 0,
  label_smoothing: float = 0.0,
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
    label_smoothing: cross-entropy label smoothing.
    axis_name: the device axis under pmap (gradients, metrics and batch statistics are averaged
      over it); None under sharded jit.

  Returns:
    (new state, {"train_loss", "train_accuracy", "learning_rate", "grad_norm"}).
  """
  aug_key, dropout_key = jax.random.split(jax.random.fold_in(key, state.step))
  if axis_name is not None:  # dropout masks differ per device (cannot match one device exactly)
    dropout_key = jax.random.fold_in(dropout_key, jax.lax.axis_index(axis_name))
  inputs = augment.random_shift(
    aug_key, batch["inputs"], max_shift, axis_name=axis_name, time_axes=time_axes
  )
  labels = batch["targets"]
  mutable = ["batch_stats"] if state.batch_stats else False

  def loss_fn(params):
    out = state.apply_fn(
      _variables(state, params), inputs, train=True, rngs={"dropout": dropout_key}, mutable=mutable
    )
    logits, updates = out if mutable else (out, {})
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    loss = optax.softmax_cross_entropy(logits, targets).mean()
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


def train_steps(state: TrainState, data: dict, indices: jax.Array, key: jax.Array, **kwargs):
  """`len(indices)` train steps in one compiled loop, gathering batches from on-device data.

  Args:
    state: the train state (donated by the caller's compiled step).
    data: the whole train split on device, {"inputs": [N, ...], "targets": [N]}.
    indices: [K, B] example indices of K consecutive global batches (under pmap: this device's
      columns).
    key: the run's base PRNG key, as for `train_step`.
    **kwargs: `train_step`'s keyword arguments.

  Returns:
    (new state, metrics with a leading [K] axis): the same as K calls of `train_step`.
  """

  def body(state, batch_indices):
    batch = jax.tree.map(lambda x: x[batch_indices], data)  # [B, ...]
    return train_step(state, batch, key, **kwargs)

  return jax.lax.scan(body, state, indices)


def validate(config, strategy) -> None:
  loop.validate(config)
  strategy.check_batch_size(config.data.batch_size, "data.batch_size")
  strategy.check_batch_size(config.data.eval_batch_size, "data.eval_batch_size")
  if config.augment.max_shift < 0:
    raise ValueError(f"config.augment.max_shift={config.augment.max_shift} must be >= 0")
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ValueError(f"config.label_smoothing={config.label_smoothing} must be in [0, 1)")


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, options: loop.Options | None = None
) -> loop.Outcome:
  """Trains `config.model` on `config.data`, resuming from `<workdir>/checkpoints` if present.

  Args:
    config: the experiment config (see `experiments/`).
    workdir: where checkpoints, metrics and results go.
    options: halt_after_steps, allow_config_change and the invocation recorded in results.json.

  Returns:
    How the run ended, with the final eval metrics when it finished.
  """
  strategy = parallel.create_strategy(config.parallel)
  validate(config, strategy)
  dataset = data_lib.load_dataset(config.data)
  if config.steps_per_call > 1 and not isinstance(dataset.train, data_lib.ArraySource):
    raise ValueError(
      f"config.steps_per_call={config.steps_per_call} keeps the train split on device; a "
      f"generated source ({config.data.source}) needs steps_per_call=1"
    )
  model = models.create_model(
    config.model, num_classes=dataset.num_classes, axis_name=strategy.axis_name
  )
  tx, schedule = optim.create_optimizer(config.optimizer, config.schedule, config.num_train_steps)
  init_key, train_key, eval_key = jax.random.split(jax.random.key(config.seed), 3)
  example = jnp.zeros((1, *dataset.input_shape), jnp.float32)
  sampler = data_lib.BatchSampler(len(dataset.train), config.data.batch_size, config.seed)
  evaluators = evaluators_lib.from_config(
    config.evaluators,
    evaluators_lib.Context(
      predict_fns={"predict": predict},
      dataset=dataset,
      strategy=strategy,
      workdir=workdir,
      key=eval_key,
      compiler_options=xla.compiler_options(config.xla),
      batch_size=config.data.eval_batch_size,
    ),
  )

  run = loop.Run(config, workdir, strategy, options)
  state = run.restore_or_create(lambda: create_train_state(model, tx, example, init_key))
  print(
    f"{dataset.description}: {len(dataset.train)} train / {len(dataset.eval)} eval; "
    f"{config.model.name}: {num_params(strategy.global_state(state).params):,} params; "
    f"{strategy.num_devices} devices ({strategy.name})",
    flush=True,
  )

  step_kwargs = dict(
    learning_rate_fn=schedule,
    max_shift=config.augment.max_shift,
    time_axes=dataset.info.get("time_axes", 0),
    label_smoothing=config.label_smoothing,
    axis_name=strategy.axis_name,
  )
  options_xla = xla.compiler_options(config.xla)
  compile_ = functools.partial(strategy.compile, donate_state=True, compiler_options=options_xla)
  p_train_step = compile_(functools.partial(train_step, **step_kwargs))
  if config.steps_per_call > 1:
    p_train_steps = compile_(
      functools.partial(train_steps, **step_kwargs), state_args=(0, 1), batch_args=(2,)
    )
    device_data = strategy.place_state(dict(dataset.train.arrays))

  def advance(state, step, k):
    if k == 1:
      return p_train_step(
        state, strategy.place_batch(sampler.batch(dataset.train, step)), train_key
      )
    indices = np.stack([sampler.indices(s) for s in range(step, step + k)])  # [K, B]
    return p_train_steps(state, device_data, strategy.place_batch(indices, 1), train_key)

  return loop.train(
    run,
    state,
    advance,
    evaluators,
    steps_per_call=config.steps_per_call,
    results=lambda state: {
      "dataset": dataset.description,
      "num_params": num_params(strategy.global_state(state).params),
      "model": models.describe(config.model),
    },
  )
