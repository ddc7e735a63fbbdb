"""DCGAN training: one compiled step updates the discriminator and then the generator.

Each network has its own Optax optimizer; batch-norm statistics are threaded through explicitly
(the generator's from its training forward pass, the discriminator's from its own update only);
an exponential moving average of the generator's weights (warmed up, so that early on it is not
mostly the random initialisation) is what evaluation samples from. Everything lives in one
`GANState`, which the shared loop checkpoints whole, so a run resumes exactly as a classifier does.

Small-data options (config keys): `augment` (DiffAugment policy applied alike to real and generated
images the discriminator sees, e.g. "translation,cutout"), `r1_gamma` (R1 gradient penalty on real
images), spectral normalisation and dropout of D (`discriminator.spectral_norm`,
`discriminator.dropout_rate`), and `conditional` (labels into G and a projection D).
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxvision import data as data_lib
from jaxvision import diffaugment, gan_losses, models, optim, parallel, xla
from jaxvision.evaluators import common as evaluators_lib
from jaxvision.evaluators import gan_metrics
from jaxvision.gan_losses import LOSSES, d_loss_fn, g_loss_fn
from jaxvision.train import loop
from jaxvision.train.common import num_params


class GANState(flax.struct.PyTreeNode):
  step: jax.Array
  g_params: Any
  g_batch_stats: Any
  d_params: Any
  d_batch_stats: Any
  g_opt_state: Any
  d_opt_state: Any
  ema_params: Any  # the generator's EMA weights (a copy of g_params when EMA is off)
  g_apply: Any = flax.struct.field(pytree_node=False)
  d_apply: Any = flax.struct.field(pytree_node=False)
  g_tx: Any = flax.struct.field(pytree_node=False)
  d_tx: Any = flax.struct.field(pytree_node=False)


def create_models(config, image_shape, axis_name: str | None = None, num_classes: int = 0):
  """(generator, discriminator) from `config.generator` / `config.discriminator` (the registry);
  `num_classes` > 0 makes both class-conditional."""
  shape = tuple(image_shape)
  g = models.create_model(
    config.generator, output_shape=shape, axis_name=axis_name, num_classes=num_classes
  )
  d = models.create_model(config.discriminator, axis_name=axis_name, num_classes=num_classes)
  return g, d


def _labels_arg(module, batch: int) -> tuple:
  """Dummy labels for `init` of a conditional network; none for an unconditional one."""
  return (jnp.zeros((batch,), jnp.int32),) if getattr(module, "num_classes", 0) else ()


def create_gan_state(generator, discriminator, g_tx, d_tx, z_dim, image_shape, key) -> GANState:
  g_key, d_key = jax.random.split(key)
  g_vars = generator.init(g_key, jnp.zeros((1, z_dim)), *_labels_arg(generator, 1), train=False)
  d_vars = discriminator.init(
    d_key, jnp.zeros((1, *image_shape)), *_labels_arg(discriminator, 1), train=False
  )
  return GANState(
    step=jnp.zeros((), jnp.int32),
    g_params=g_vars["params"],
    g_batch_stats=g_vars.get("batch_stats", {}),
    d_params=d_vars["params"],
    d_batch_stats=d_vars.get("batch_stats", {}),
    g_opt_state=g_tx.init(g_vars["params"]),
    d_opt_state=d_tx.init(d_vars["params"]),
    ema_params=jax.tree.map(jnp.copy, g_vars["params"]),  # own buffers: the state is donated
    g_apply=generator.apply,
    d_apply=discriminator.apply,
    g_tx=g_tx,
    d_tx=d_tx,
  )


def _apply(apply_fn, params, batch_stats, *inputs, train: bool, rng=None):
  """Runs a network on `inputs` (x, and labels when conditional); returns (output, new batch
  stats, which hold batch norm's and spectral norm's statistics) whether or not it has any."""
  variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
  rngs = {"dropout": rng} if rng is not None else {}
  if not batch_stats or not train:
    return apply_fn(variables, *inputs, train=train, rngs=rngs), batch_stats
  out, updates = apply_fn(variables, *inputs, train=True, mutable=["batch_stats"], rngs=rngs)
  return out, updates["batch_stats"]


def ema_decay_at(step: jax.Array, decay: float, start_step: int) -> jax.Array:
  """The EMA decay after `step` updates: 0 (a copy) before `start_step`, then warmed up as
  min(decay, (1 + t) / (10 + t)) with t the steps since the start, so that the average is not
  dominated by the weights it started from (at t = 1,000 a fixed 0.999 still holds 37% of them)."""
  t = jnp.maximum(step - start_step, 0).astype(jnp.float32)
  warm = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
  return jnp.where(step < start_step, 0.0, warm)


def train_step(
  state: GANState,
  batch: dict,
  key: jax.Array,
  *,
  z_dim: int,
  loss: str,
  ema_decay: float,
  ema_start_step: int = 0,
  augment: str = "",
  r1_gamma: float = 0.0,
  conditional: bool = False,
  num_classes: int = 0,
  axis_name: str | None = None,
):
  """One discriminator update, then one generator update against the updated discriminator.

  Args:
    state: the GAN state (donated by the caller's compiled step).
    batch: {"inputs": real images [B, H, W, C] in [-1, 1]} (under pmap: this device's rows).
    key: the run's base key; this step's latents come from `fold_in(key, step)`, drawn for the
      global batch so every strategy and device count sees the same latents.
    z_dim: latent size.
    loss: "non_saturating" (D: -log D(x) - log(1 - D(G(z))); G: -log D(G(z))) or "hinge".
    ema_decay: generator EMA decay (0: the EMA is the current generator).
    ema_start_step: the EMA copies the generator until this step.
    augment: DiffAugment policy ("" none), applied to every image the discriminator sees, real
      or generated, in both updates (the generator learns through it: it is differentiable).
    r1_gamma: weight of the R1 penalty (gamma / 2 * E||grad_x D(x)||^2 on real images); 0: off.
    conditional: labels [B] (batch["targets"]) condition D on real images; generated images get
      labels drawn uniformly from `num_classes`.
    num_classes: the number of classes (conditional only).
    axis_name: the device axis under pmap (gradients, metrics, batch statistics averaged over
      it); None under sharded jit.

  Returns:
    (new state, {"d_loss", "g_loss", "d_real", "d_fake"}), d_real/d_fake the mean probability
    the discriminator gives real and generated images.
  """
  real = batch["inputs"]
  batch_size = parallel.global_batch_size(real.shape[0], axis_name)
  step_key = jax.random.fold_in(key, state.step)
  z_key, label_key, aug_key, drop_key = jax.random.split(step_key, 4)
  z = parallel.local_rows(jax.random.normal(z_key, (batch_size, z_dim)), axis_name)  # [B, z_dim]
  if axis_name is not None:  # augmentation and dropout draw per device
    device = jax.lax.axis_index(axis_name)
    aug_key, drop_key = jax.random.fold_in(aug_key, device), jax.random.fold_in(drop_key, device)
  real_labels, fake_labels = (), ()
  if conditional:
    drawn = jax.random.randint(label_key, (batch_size,), 0, num_classes)
    real_labels, fake_labels = (batch["targets"],), (parallel.local_rows(drawn, axis_name),)
  aug = lambda k, x: diffaugment.diff_augment(k, x, augment) if augment else x
  aug_keys = jax.random.split(aug_key, 3)  # real, fake for D, fake for G
  d_drop, g_drop = jax.random.split(drop_key)

  # Discriminator: real and generated batches pass separately (own batch statistics).
  fake, _ = _apply(state.g_apply, state.g_params, state.g_batch_stats, z, *fake_labels, train=True)

  def d_objective(d_params):
    def d_real(x):
      return _apply(
        state.d_apply, d_params, state.d_batch_stats, x, *real_labels, train=True, rng=d_drop
      )

    real_in = aug(aug_keys[0], real)
    if r1_gamma > 0:
      r1, (real_logits, stats) = gan_losses.r1_penalty(d_real, real_in, has_aux=True)
    else:
      (real_logits, stats), r1 = d_real(real_in), 0.0
    fake_in = aug(aug_keys[1], jax.lax.stop_gradient(fake))
    fake_logits, stats = _apply(
      state.d_apply, d_params, stats, fake_in, *fake_labels, train=True, rng=d_drop
    )
    d_loss = d_loss_fn(real_logits, fake_logits, loss)
    return d_loss + 0.5 * r1_gamma * r1, (stats, real_logits, fake_logits, d_loss, r1)

  (_, (d_stats, real_logits, fake_logits, d_loss, r1)), d_grads = jax.value_and_grad(
    d_objective, has_aux=True
  )(state.d_params)
  d_grads = parallel.pmean(d_grads, axis_name)
  d_updates, d_opt_state = state.d_tx.update(d_grads, state.d_opt_state, state.d_params)
  d_params = optax.apply_updates(state.d_params, d_updates)

  # Generator: its batch statistics come from this forward pass; the discriminator's statistic
  # updates from judging the generator's batch are not kept.
  def g_objective(g_params):
    fake, g_stats = _apply(
      state.g_apply, g_params, state.g_batch_stats, z, *fake_labels, train=True
    )
    fake_in = aug(aug_keys[2], fake)
    logits, _ = _apply(
      state.d_apply, d_params, d_stats, fake_in, *fake_labels, train=True, rng=g_drop
    )
    return g_loss_fn(logits, loss), g_stats

  (g_loss, g_stats), g_grads = jax.value_and_grad(g_objective, has_aux=True)(state.g_params)
  g_grads = parallel.pmean(g_grads, axis_name)
  g_updates, g_opt_state = state.g_tx.update(g_grads, state.g_opt_state, state.g_params)
  g_params = optax.apply_updates(state.g_params, g_updates)
  decay = ema_decay_at(state.step + 1, ema_decay, ema_start_step) if ema_decay > 0 else 0.0
  ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema_params, g_params)

  new_state = state.replace(
    step=state.step + 1,
    g_params=g_params,
    g_batch_stats=g_stats,
    d_params=d_params,
    d_batch_stats=d_stats,
    g_opt_state=g_opt_state,
    d_opt_state=d_opt_state,
    ema_params=ema,
  )
  step_metrics = {
    "d_loss": d_loss,
    "g_loss": g_loss,
    "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
    "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
    **({"r1": r1} if r1_gamma > 0 else {}),
  }
  return new_state, parallel.pmean(step_metrics, axis_name)


def generate(state: GANState, z: jax.Array, *, use_ema: bool, num_classes: int = 0) -> jax.Array:
  """Images [N, H, W, C] in [-1, 1] from latents [N, z_dim], batch norm in inference mode; a
  conditional generator makes the classes 0, 1, ..., K-1 in turn (balanced)."""
  params = state.ema_params if use_ema else state.g_params
  labels = (jnp.arange(z.shape[0]) % num_classes,) if num_classes else ()
  return _apply(state.g_apply, params, state.g_batch_stats, z, *labels, train=False)[0]


def generate_class(state: GANState, z: jax.Array, labels: jax.Array, *, use_ema: bool):
  """Images [N, H, W, C] of the asked classes [N] from a conditional generator."""
  params = state.ema_params if use_ema else state.g_params
  return _apply(state.g_apply, params, state.g_batch_stats, z, labels, train=False)[0]


def validate(config, strategy) -> None:
  loop.validate(config)
  strategy.check_batch_size(config.data.batch_size, "data.batch_size")
  if config.loss not in LOSSES:
    raise ValueError(f"config.loss={config.loss!r} unknown; expected one of {LOSSES}")
  if config.data.get("normalize") != "symmetric":
    raise ValueError("a tanh generator needs config.data.normalize='symmetric' ([-1, 1] images)")
  if not 0.0 <= config.ema_decay < 1.0:
    raise ValueError(f"config.ema_decay={config.ema_decay} must be in [0, 1)")
  if config.z_dim <= 0:
    raise ValueError(f"config.z_dim={config.z_dim} must be positive")
  if config.r1_gamma < 0:
    raise ValueError(f"config.r1_gamma={config.r1_gamma} must be >= 0")
  diffaugment.diff_augment(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), config.augment)  # names


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, options: loop.Options | None = None
) -> loop.Outcome:
  """Trains a DCGAN on `config.data`'s train images; same workdir contract as the classifier."""
  strategy = parallel.create_strategy(config.parallel)
  validate(config, strategy)
  dataset = data_lib.load_dataset(config.data)
  image_shape = dataset.input_shape
  num_classes = dataset.num_classes if config.conditional else 0
  generator, discriminator = create_models(config, image_shape, strategy.axis_name, num_classes)
  g_tx, _ = optim.create_optimizer(config.g_optimizer, config.schedule, config.num_train_steps)
  d_tx, _ = optim.create_optimizer(config.d_optimizer, config.schedule, config.num_train_steps)
  init_key, train_key, eval_key = jax.random.split(jax.random.key(config.seed), 3)
  evaluators = evaluators_lib.from_config(
    config.evaluators,
    evaluators_lib.Context(
      predict_fns={
        "generate": functools.partial(
          generate, use_ema=config.ema_decay > 0, num_classes=num_classes
        )
      },
      dataset=dataset,
      strategy=strategy,
      workdir=workdir,
      key=eval_key,
      compiler_options=xla.compiler_options(config.xla),
      batch_size=config.data.eval_batch_size,
      info={"z_dim": config.z_dim},
    ),
  )

  meta = {"image_shape": list(image_shape), "num_classes": num_classes}
  run = loop.Run(config, workdir, strategy, options, meta=meta)
  state = run.restore_or_create(
    lambda: create_gan_state(
      generator, discriminator, g_tx, d_tx, config.z_dim, image_shape, init_key
    )
  )
  host = strategy.global_state(state)
  print(
    f"{dataset.description}: {len(dataset.train)} train images; generator "
    f"{num_params(host.g_params):,} params, discriminator {num_params(host.d_params):,}; "
    f"{strategy.num_devices} devices ({strategy.name})",
    flush=True,
  )

  p_train_step = strategy.compile(
    functools.partial(
      train_step,
      z_dim=config.z_dim,
      loss=config.loss,
      ema_decay=config.ema_decay,
      ema_start_step=config.ema_start_step,
      augment=config.augment,
      r1_gamma=config.r1_gamma,
      conditional=config.conditional,
      num_classes=num_classes,
      axis_name=strategy.axis_name,
    ),
    donate_state=True,
    compiler_options=xla.compiler_options(config.xla),
  )
  sampler = data_lib.BatchSampler(len(dataset.train), config.data.batch_size, config.seed)

  def advance(state, step, k):
    del k  # one step per call
    batch = sampler.batch(dataset.train, step)
    return p_train_step(state, strategy.place_batch(batch), train_key)

  def results(state):
    host = strategy.global_state(state)
    gan_eval = next((e for e in evaluators if getattr(e, "features", None)), None)
    return {
      "dataset": dataset.description,
      "num_params": num_params(host.g_params) + num_params(host.d_params),
      "metrics_caveat": gan_metrics.CAVEAT,
      "classifier": gan_eval.features.description if gan_eval else None,
    }

  return loop.train(run, state, advance, evaluators, results=results)
