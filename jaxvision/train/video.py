"""Next-frame prediction (trainer "video"): `train_step`, `predict`, `train_and_evaluate`.

A clip batch is {"inputs": the whole clip [B, T, H, W, C] in [0, 1], "targets": its last P frames
[B, P, H, W, C]} (`jaxvision.data.moving_mnist`, task "predict"). Training is teacher-forced: the
predictor reads the true previous frame at every step and one pass gives every predicted frame;
evaluation rolls the model out freely from the T - P context frames (`predict`), so it never sees
the frames it is scored on. The loss is a per-frame mean ("bce": binary cross-entropy of the
logits, pixels as soft targets; "mse": squared error of the sigmoid pixels) over the P target
frames and the batch.

Video *classification* needs no trainer of its own: its batches are {"inputs", "targets"} class
ids, so `jaxvision.train.classifier` trains the registry's `video_classifier` on them unchanged.

Config keys read beyond the shared ones (`loop.validate`): `loss` ("bce" | "mse"), `model`
(a `FramePredictor` preset, e.g. "convlstm_predictor"), `optimizer`, `schedule`, `data` (a
"moving_mnist" source with task "predict"), `evaluators` (e.g. type "video_prediction"), `xla`.
"""

from __future__ import annotations

import functools

import jax
import ml_collections
import optax

from jaxvision import data as data_lib
from jaxvision import models, optim, parallel, video_metrics, xla
from jaxvision.evaluators import common as evaluators_lib
from jaxvision.train import loop
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
  axis_name: str | None = None,
):
  """One teacher-forced optimizer step on a clip batch.

  Args:
    state: the train state (donated by the caller's compiled step).
    batch: {"inputs": clips [B, T, H, W, C], "targets": their last P frames [B, P, H, W, C]}
      (under pmap: this device's rows).
    key: the run's base PRNG key. Unused: the predictor has no dropout or noise; kept so that
      every trainer's step has the same signature (and a stochastic variant needs no new plumbing).
    learning_rate_fn: the schedule, logged as `learning_rate`.
    loss: "bce" or "mse" (see `frame_loss`), averaged over frames and clips.
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
      {"params": params}, clips, train=True, num_predict=num_predict, teacher_forcing=True
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


def predict(state: TrainState, clips: jax.Array, *, num_predict: int) -> jax.Array:
  """Free-running rollout: logits [B, P, H, W, C] of the last P = `num_predict` frames of clips
  [B, T, H, W, C], predicted from the first T - P alone (the evaluators' "predict")."""
  return state.apply_fn(
    {"params": state.params}, clips, train=False, num_predict=num_predict, teacher_forcing=False
  )


def validate(config, strategy) -> None:
  """Checks the keys this trainer reads; raises ValueError naming the key and the fix."""
  loop.validate(config)
  strategy.check_batch_size(config.data.batch_size, "data.batch_size")
  strategy.check_batch_size(config.data.eval_batch_size, "data.eval_batch_size")
  if config.loss not in LOSSES:
    raise ValueError(f"config.loss={config.loss!r} unknown; expected one of {LOSSES}")
  if config.data.source != "moving_mnist" or config.data.task != "predict":
    raise ValueError(
      "the video trainer needs config.data.source='moving_mnist' with task='predict' "
      f"(got {config.data.source!r}); video classification runs with trainer='classifier'"
    )
  if config.get("steps_per_call", 1) != 1:
    # Clips are generated on the host for every step (no on-device copy of the data to gather
    # from), so a multi-step call would only stack host batches: one step per call.
    raise ValueError(f"config.steps_per_call={config.steps_per_call}: the video trainer runs 1")


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, options: loop.Options | None = None
) -> loop.Outcome:
  """Trains `config.model` to predict frames of `config.data`, resuming from `<workdir>` if
  possible.

  Args:
    config: the experiment config (see `experiments/moving_mnist_convlstm.py`).
    workdir: where checkpoints, metrics, samples and results go.
    options: halt_after_steps, allow_config_change and the invocation recorded in results.json.

  Returns:
    How the run ended, with the final eval metrics when it finished.
  """
  strategy = parallel.create_strategy(config.parallel)
  validate(config, strategy)
  dataset = data_lib.load_dataset(config.data)
  model = models.create_model(config.model, axis_name=strategy.axis_name)
  tx, schedule = optim.create_optimizer(config.optimizer, config.schedule, config.num_train_steps)
  init_key, train_key, eval_key = jax.random.split(jax.random.key(config.seed), 3)
  example = dataset.example["inputs"]  # [1, T, H, W, C]
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
    f"{dataset.description}: {config.model.name}: "
    f"{num_params(strategy.global_state(state).params):,} params; "
    f"{strategy.num_devices} devices ({strategy.name})",
    flush=True,
  )

  p_train_step = strategy.compile(
    functools.partial(
      train_step, learning_rate_fn=schedule, loss=config.loss, axis_name=strategy.axis_name
    ),
    donate_state=True,
    compiler_options=xla.compiler_options(config.xla),
  )

  def advance(state, step, k):
    del k  # one step per call (validate)
    batch = sampler.batch(dataset.train, step)
    return p_train_step(state, strategy.place_batch(batch), train_key)

  return loop.train(
    run,
    state,
    advance,
    evaluators,
    results=lambda state: {
      "dataset": dataset.description,
      "num_params": num_params(strategy.global_state(state).params),
      "model": models.describe(config.model),
    },
  )
