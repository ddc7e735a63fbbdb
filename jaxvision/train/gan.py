"""DCGAN training: one jitted step updates the discriminator and then the generator.

Each network has its own Optax optimizer; batch-norm statistics are threaded through explicitly
(the generator's from its training forward pass, the discriminator's from its own update only);
an optional exponential moving average of the generator's weights is what evaluation samples
from. Everything (both networks, both optimizer states, the EMA) lives in one `GANState`, which
the Orbax checkpoints save whole, so a run resumes exactly as a classifier does.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxvision import data as data_lib
from jaxvision import gan_metrics, images, metrics, optim, parallel, xla
from jaxvision.models import dcgan
from jaxvision.train.common import Run, num_params

LOSSES = ("non_saturating", "hinge")


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


def create_models(config, image_shape):
  g = dcgan.Generator(output_shape=image_shape, **_attrs(config.generator))
  d = dcgan.Discriminator(**_attrs(config.discriminator))
  return g, d


def _attrs(block) -> dict:
  return {k: tuple(v) if isinstance(v, list) else v for k, v in block.items()}


def create_gan_state(generator, discriminator, g_tx, d_tx, z_dim, image_shape, key) -> GANState:
  g_key, d_key = jax.random.split(key)
  g_vars = generator.init(g_key, jnp.zeros((1, z_dim)), train=False)
  d_vars = discriminator.init(d_key, jnp.zeros((1, *image_shape)), train=False)
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


def _apply(apply_fn, params, batch_stats, x, *, train: bool):
  """Runs a network; returns (output, new batch stats) whether or not it has batch norm."""
  if not batch_stats:
    return apply_fn({"params": params}, x, train=train), batch_stats
  if not train:
    return apply_fn({"params": params, "batch_stats": batch_stats}, x, train=False), batch_stats
  out, updates = apply_fn(
    {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
  )
  return out, updates["batch_stats"]


def d_loss_fn(real_logits, fake_logits, loss: str):
  if loss == "non_saturating":
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))
  return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def g_loss_fn(fake_logits, loss: str):
  if loss == "non_saturating":
    return jnp.mean(jax.nn.softplus(-fake_logits))  # -log D(G(z))
  return -jnp.mean(fake_logits)


def train_step(
  state: GANState, batch: dict, key: jax.Array, *, z_dim: int, loss: str, ema_decay: float
):
  """One discriminator update, then one generator update against the updated discriminator.

  Args:
    state: the GAN state (donated by the caller's `jit`).
    batch: {"inputs": real images [B, H, W, C] in [-1, 1]}.
    key: the run's base key; this step's latents come from `fold_in(key, step)`.
    z_dim: latent size.
    loss: "non_saturating" (D: -log D(x) - log(1 - D(G(z))); G: -log D(G(z))) or "hinge".
    ema_decay: generator EMA decay (0: the EMA is the current generator).

  Returns:
    (new state, {"d_loss", "g_loss", "d_real", "d_fake"}), d_real/d_fake the mean probability
    the discriminator gives real and generated images.
  """
  real = batch["inputs"]
  z = jax.random.normal(jax.random.fold_in(key, state.step), (real.shape[0], z_dim))

  # Discriminator: real and generated batches pass separately (own batch statistics).
  fake, _ = _apply(state.g_apply, state.g_params, state.g_batch_stats, z, train=True)

  def d_objective(d_params):
    real_logits, stats = _apply(state.d_apply, d_params, state.d_batch_stats, real, train=True)
    fake_logits, stats = _apply(
      state.d_apply, d_params, stats, jax.lax.stop_gradient(fake), train=True
    )
    return d_loss_fn(real_logits, fake_logits, loss), (stats, real_logits, fake_logits)

  (d_loss, (d_stats, real_logits, fake_logits)), d_grads = jax.value_and_grad(
    d_objective, has_aux=True
  )(state.d_params)
  d_updates, d_opt_state = state.d_tx.update(d_grads, state.d_opt_state, state.d_params)
  d_params = optax.apply_updates(state.d_params, d_updates)

  # Generator: its batch statistics come from this forward pass; the discriminator's statistic
  # updates from judging the generator's batch are not kept.
  def g_objective(g_params):
    fake, g_stats = _apply(state.g_apply, g_params, state.g_batch_stats, z, train=True)
    logits, _ = _apply(state.d_apply, d_params, d_stats, fake, train=True)
    return g_loss_fn(logits, loss), g_stats

  (g_loss, g_stats), g_grads = jax.value_and_grad(g_objective, has_aux=True)(state.g_params)
  g_updates, g_opt_state = state.g_tx.update(g_grads, state.g_opt_state, state.g_params)
  g_params = optax.apply_updates(state.g_params, g_updates)
  ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, state.ema_params, g_params)

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
  }
  return new_state, step_metrics


def generate(state: GANState, z: jax.Array, *, use_ema: bool) -> jax.Array:
  """Images [N, H, W, C] in [-1, 1] from latents [N, z_dim], batch norm in inference mode."""
  params = state.ema_params if use_ema else state.g_params
  return _apply(state.g_apply, params, state.g_batch_stats, z, train=False)[0]


def sample_images(generate_fn, state, key, num: int, z_dim: int, batch_size: int) -> np.ndarray:
  out = []
  for start in range(0, num, batch_size):
    z = jax.random.normal(jax.random.fold_in(key, start), (min(batch_size, num - start), z_dim))
    out.append(np.asarray(generate_fn(state, z)))
  return np.concatenate(out)


class Evaluator:
  """Sample grids and metrics on a classifier's features; the real-vs-real floor computed once."""

  def __init__(self, config, dataset: data_lib.Dataset, workdir: str, z_dim: int, key):
    self._config, self._workdir, self._z_dim = config.eval, workdir, z_dim
    self._grid_z = jax.random.normal(key, (config.eval.grid_size, z_dim))
    self._key = jax.random.fold_in(key, 1)
    self.features = None
    if config.eval.classifier_workdir:
      from jaxvision.features import ClassifierFeatures

      self.features = ClassifierFeatures(config.eval.classifier_workdir)
      n = min(config.eval.num_samples, len(dataset.eval), len(dataset.train))
      eval_features, real_probs = self.features(dataset.eval.inputs)
      self._real_features = eval_features[:n]
      train_features, _ = self.features(dataset.train.inputs[:n])
      self.floor = {
        "real_fid": gan_metrics.fid(train_features, self._real_features),
        "real_kid": gan_metrics.kid(train_features, self._real_features),
        "real_inception_score": gan_metrics.inception_score(real_probs),
      }
      print(
        f"GAN metrics: {gan_metrics.CAVEAT}. Features: {self.features.description}. "
        f"Real-vs-real floor (train vs eval, {n} each): {self.floor}",
        flush=True,
      )

  def __call__(self, generate_fn, state, step: int) -> dict:
    samples = np.asarray(generate_fn(state, self._grid_z))
    images.save_grid(samples, os.path.join(self._workdir, "samples", f"step_{step}.png"))
    if self.features is None:
      return {}
    fake = sample_images(
      generate_fn, state, self._key, self._config.num_samples, self._z_dim, self._config.batch_size
    )
    fake_features, fake_probs = self.features(fake)
    shares = gan_metrics.class_shares(fake_probs)
    return {
      "eval_fid": gan_metrics.fid(fake_features[: len(self._real_features)], self._real_features),
      "eval_kid": gan_metrics.kid(fake_features, self._real_features),
      "eval_inception_score": gan_metrics.inception_score(fake_probs),
      "eval_min_class_share": float(shares.min()),
      "eval_max_class_share": float(shares.max()),
      **{f"eval_{k}": v for k, v in self.floor.items()},
    }


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  halt_after_steps: int | None = None,
  invocation: dict | None = None,
) -> dict:
  """Trains a DCGAN on `config.data`'s train images; same workdir contract as the classifier."""
  if config.loss not in LOSSES:
    raise ValueError(f"unknown GAN loss {config.loss!r}; expected one of {LOSSES}")
  if config.data.normalize != "symmetric":
    raise ValueError("a tanh generator needs data.normalize='symmetric' ([-1, 1] images)")
  mesh = parallel.create_mesh(config.parallel.num_devices)
  parallel.check_batch_size(config.data.batch_size, mesh)
  dataset = data_lib.load_dataset(config.data)
  image_shape = dataset.input_shape
  generator, discriminator = create_models(config, image_shape)
  g_tx, _ = optim.create_optimizer(config.g_optimizer, config.schedule, config.num_train_steps)
  d_tx, _ = optim.create_optimizer(config.d_optimizer, config.schedule, config.num_train_steps)
  init_key, train_key, eval_key = jax.random.split(jax.random.key(config.seed), 3)

  evaluator = Evaluator(config, dataset, workdir, config.z_dim, eval_key)  # fails fast
  run = Run(config, workdir, meta={"image_shape": list(image_shape)})
  state = run.restore_or_create(
    lambda: create_gan_state(
      generator, discriminator, g_tx, d_tx, config.z_dim, image_shape, init_key
    ),
    parallel.replicated(mesh),
  )
  start_step = int(state.step)
  print(
    f"{dataset.description}: {len(dataset.train)} train images; generator "
    f"{num_params(state.g_params):,} params, discriminator {num_params(state.d_params):,}; "
    f"{mesh.size} devices",
    flush=True,
  )

  options = xla.compiler_options(config.xla)
  p_train_step = jax.jit(
    functools.partial(train_step, z_dim=config.z_dim, loss=config.loss, ema_decay=config.ema_decay),
    donate_argnums=0,
    compiler_options=options,
  )
  p_generate = jax.jit(
    functools.partial(generate, use_ema=config.ema_decay > 0), compiler_options=options
  )
  sampler = data_lib.BatchSampler(len(dataset.train), config.data.batch_size, config.seed)
  last_step = min(config.num_train_steps, halt_after_steps or config.num_train_steps)

  window, window_start = [], start_step + 1
  for step in range(start_step + 1, last_step + 1):  # `step`: steps done after this one
    real = sampler.batch(dataset.train, step - 1)["inputs"]
    state, step_metrics = p_train_step(
      state, parallel.shard_batch({"inputs": real}, mesh), train_key
    )
    window.append(step_metrics)
    if step % config.log_every_steps == 0 or step == last_step:
      run.writer.write(step, metrics.summarize(window, window_start, loss_key="d_loss"))
      window, window_start = [], step + 1
    if step % config.eval_every_steps == 0 and step != config.num_train_steps:
      run.writer.write(step, evaluator(p_generate, state, step))
    if run.save_and_maybe_stop(step, state, last_step):
      break

  if int(state.step) < config.num_train_steps:
    return run.halt(int(state.step))
  final = evaluator(p_generate, state, config.num_train_steps)
  return run.finish(
    config,
    final,
    {
      **(invocation or {}),
      "dataset": dataset.description,
      "num_params": num_params(state.g_params) + num_params(state.d_params),
      "metrics_caveat": gan_metrics.CAVEAT,
      "classifier": evaluator.features.description if evaluator.features else None,
    },
  )
