"""Supervised classification: `train_step`, `eval_step` and `train_and_evaluate`.

Steps are pure functions of explicit pytrees, compiled once with `jax.jit` (train state donated)
and run data-parallel over the mesh from `jaxvision.parallel`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxvision import data as data_lib
from jaxvision import metrics, models, optim, parallel, xla
from jaxvision.data import augment
from jaxvision.train.common import Run, TrainState, num_params, steps_this_call


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


def train_step(
  state: TrainState,
  batch: dict,
  key: jax.Array,
  *,
  learning_rate_fn,
  max_shift: int = 0,
  label_smoothing: float = 0.0,
):
  """One optimizer step on a batch {"inputs": [B, ...], "labels": [B]}.

  Args:
    state: the train state (donated by the caller's `jit`).
    batch: the global batch.
    key: the run's base PRNG key; this step's keys derive from it by `fold_in(key, step)`.
    learning_rate_fn: the schedule, logged as `learning_rate`.
    max_shift: random-shift augmentation (0: none).
    label_smoothing: cross-entropy label smoothing.

  Returns:
    (new state, {"train_loss", "train_accuracy", "learning_rate", "grad_norm"}).
  """
  aug_key, dropout_key = jax.random.split(jax.random.fold_in(key, state.step))
  inputs = augment.random_shift(aug_key, batch["inputs"], max_shift)
  labels = batch["labels"]
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
  new_state = state.apply_gradients(
    grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats)
  )
  step_metrics = {
    "train_loss": loss,
    "train_accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
    "learning_rate": learning_rate_fn(state.step),
    "grad_norm": optax.global_norm(grads),
  }
  return new_state, step_metrics


def train_steps(state: TrainState, data: dict, indices: jax.Array, key: jax.Array, **kwargs):
  """`len(indices)` train steps in one compiled loop, gathering batches from on-device data.

  Args:
    state: the train state (donated by the caller's `jit`).
    data: the whole train split on device, {"inputs": [N, ...], "labels": [N]}.
    indices: [K, B] example indices of K consecutive global batches.
    key: the run's base PRNG key, as for `train_step`.
    **kwargs: `train_step`'s keyword arguments.

  Returns:
    (new state, metrics with a leading [K] axis): the same as K calls of `train_step`.
  """

  def body(state, batch_indices):
    batch = jax.tree.map(lambda x: x[batch_indices], data)  # [B, ...]
    return train_step(state, batch, key, **kwargs)

  return jax.lax.scan(body, state, indices)


def eval_step(state: TrainState, batch: dict) -> dict:
  """Sums of loss and correct predictions over the real (mask == 1) examples of a batch."""
  logits = state.apply_fn(_variables(state, state.params), batch["inputs"], train=False)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
  correct = jnp.argmax(logits, -1) == batch["labels"]
  mask = batch["mask"]
  return {"loss": jnp.sum(loss * mask), "correct": jnp.sum(correct * mask), "count": jnp.sum(mask)}


def evaluate(eval_fn, state, split: data_lib.Split, batch_size: int, mesh) -> dict:
  """Loss and accuracy over the whole split; sums stay on device until the end."""
  totals = None
  for batch in data_lib.eval_batches(split, batch_size):
    sums = eval_fn(state, parallel.shard_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  return {
    "eval_loss": float(totals["loss"] / totals["count"]),
    "eval_accuracy": float(totals["correct"] / totals["count"]),
  }


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  halt_after_steps: int | None = None,
  invocation: dict | None = None,
) -> dict:
  """Trains `config.model` on `config.data`, resuming from `<workdir>/checkpoints` if present.

  Args:
    config: the experiment config (see `experiments/`).
    workdir: where checkpoints, metrics and results go.
    halt_after_steps: stop, with a checkpoint, once this many steps are done (a time-limited job
      slot); rerunning the same command continues. None runs to `config.num_train_steps`.
    invocation: how the run was launched (command, config file), recorded in results.json.

  Returns:
    The final eval metrics (empty when halted early).
  """
  mesh = parallel.create_mesh(config.parallel.num_devices)
  parallel.check_batch_size(config.data.batch_size, mesh)
  parallel.check_batch_size(config.data.eval_batch_size, mesh, "eval_batch_size")
  dataset = data_lib.load_dataset(config.data)
  model = models.create_model(config.model, num_classes=dataset.num_classes)
  tx, schedule = optim.create_optimizer(config.optimizer, config.schedule, config.num_train_steps)
  init_key, train_key = jax.random.split(jax.random.key(config.seed))
  example = jnp.zeros((1, *dataset.input_shape), jnp.float32)

  run = Run(config, workdir)
  state = run.restore_or_create(
    lambda: create_train_state(model, tx, example, init_key), parallel.replicated(mesh)
  )
  start_step = int(state.step)
  print(
    f"{dataset.description}: {len(dataset.train)} train / {len(dataset.eval)} eval; "
    f"{config.model.name}: {num_params(state.params):,} params; {mesh.size} devices",
    flush=True,
  )

  step_kwargs = dict(
    learning_rate_fn=schedule,
    max_shift=config.augment.max_shift,
    label_smoothing=config.label_smoothing,
  )
  compiler_options = xla.compiler_options(config.xla)
  p_train_step = jax.jit(
    functools.partial(train_step, **step_kwargs),
    donate_argnums=0,
    compiler_options=compiler_options,
  )
  p_eval_step = jax.jit(eval_step, compiler_options=compiler_options)
  if config.steps_per_call > 1:
    p_train_steps = jax.jit(
      functools.partial(train_steps, **step_kwargs),
      donate_argnums=0,
      compiler_options=compiler_options,
    )
    device_data = parallel.replicate(
      {"inputs": dataset.train.inputs, "labels": dataset.train.labels}, mesh
    )
  sampler = data_lib.BatchSampler(len(dataset.train), config.data.batch_size, config.seed)
  last_step = config.num_train_steps
  if halt_after_steps is not None:
    last_step = min(last_step, halt_after_steps)
  intervals = (config.log_every_steps, config.eval_every_steps, config.checkpoint.every_steps)

  step, window, window_start = start_step, [], start_step + 1
  while step < last_step:
    k = steps_this_call(step, config.steps_per_call, intervals, last_step)
    if k > 1:
      indices = np.stack([sampler.indices(s) for s in range(step, step + k)])  # [K, B]
      indices = parallel.shard_batch(indices, mesh, batch_axis=1)
      state, step_metrics = p_train_steps(state, device_data, indices, train_key)
    else:
      batch = parallel.shard_batch(sampler.batch(dataset.train, step), mesh)
      state, step_metrics = p_train_step(state, batch, train_key)
    window.append(step_metrics)
    step += k
    if step % config.log_every_steps == 0 or step == last_step:
      run.writer.write(step, metrics.summarize(window, window_start))
      window, window_start = [], step + 1
    if step % config.eval_every_steps == 0 and step != config.num_train_steps:
      run.writer.write(
        step, evaluate(p_eval_step, state, dataset.eval, config.data.eval_batch_size, mesh)
      )
    if run.save_and_maybe_stop(step, state, last_step):
      break

  if int(state.step) < config.num_train_steps:
    return run.halt(int(state.step))
  final = evaluate(p_eval_step, state, dataset.eval, config.data.eval_batch_size, mesh)
  return run.finish(
    config,
    final,
    {
      **(invocation or {}),
      "dataset": dataset.description,
      "num_params": num_params(state.params),
    },
  )
