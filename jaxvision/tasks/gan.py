"""DCGAN training: one compiled step updates the discriminator and then the generator.

Each network has its own Optax optimizer; batch-norm statistics are threaded through explicitly
(the generator's from its training forward pass, the discriminator's from its own update only);
an exponential moving average of the generator's weights (warmed up, so that early on it is not
mostly the random initialisation) is what evaluation samples from. Everything lives in one
`GANState`, which the shared loop checkpoints whole, so a run resumes exactly as a classifier does.

Small-data options (config keys): `augment` (DiffAugment policy applied alike to real and generated
images the discriminator sees, e.g. "translation,cutout"), `r1_gamma` (R1 gradient penalty on real
images; `r1_every` > 1 makes it lazy), spectral normalisation and dropout of D
(`discriminator.spectral_norm`, `discriminator.dropout_rate`), `conditional` (labels into G
and a projection D) and, for a conditional GAN, `class_loss_weight` (AC-GAN: D also learns to
classify real images, and G is trained to make images D classifies as the labels it was given).
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from jaxvision import models, optim, parallel
from jaxvision.config_dict import ConfigError
from jaxvision.evaluators import gan_metrics
from jaxvision.tasks import base, diffaugment, gan_losses
from jaxvision.tasks.gan_losses import LOSSES, d_loss_fn, g_loss_fn
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
  `num_classes` > 0 makes both class-conditional, and `config.class_loss_weight` > 0 gives the
  discriminator a class head."""
  shape = tuple(image_shape)
  g = models.create_model(
    config.generator, output_shape=shape, axis_name=axis_name, num_classes=num_classes
  )
  head = {"class_head": True} if config.get("class_loss_weight", 0.0) > 0 else {}
  d = models.create_model(
    config.discriminator, axis_name=axis_name, num_classes=num_classes, **head
  )
  return g, d


def _split_logits(out) -> tuple:
  """(real-vs-fake logits [B], class logits [B, K] or None) of a discriminator's output."""
  return out if isinstance(out, tuple) else (out, None)


def _class_loss(class_logits, labels) -> jax.Array:
  """Mean cross-entropy of class logits [B, K] against labels [B]."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(class_logits, labels))


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
  r1_every: int = 1,
  with_r1: bool | None = None,
  conditional: bool = False,
  num_classes: int = 0,
  class_loss_weight: float = 0.0,
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
    r1_every: lazy R1 (StyleGAN2): the penalty, weighted by r1_every, only on the steps that are
      multiples of it (1: every step); between them the discriminator step skips the double
      backward. The "r1" metric is the penalty times r1_every on those steps and 0 between, so
      its mean over a log window is the mean penalty.
    with_r1: with r1_every > 1, whether this step is one of those, chosen by the caller (the
      Task's `step_options`: one compiled program each). None: decided inside from the step
      with `lax.cond`, the same numbers but ~4x slower than R1 on every step on XLA:CPU.
    conditional: labels [B] (batch["targets"]) condition D on real images; generated images get
      labels drawn uniformly from `num_classes`.
    num_classes: the number of classes (conditional only).
    class_loss_weight: AC-GAN (conditional, a discriminator with a class head): the weight of
      the class cross-entropy of D on real images (its labels) in D's loss and of D's class head
      on generated images (the labels asked for) in G's loss; 0: off.
    axis_name: the device axis under pmap (gradients, metrics, batch statistics averaged over
      it); None under sharded jit.

  Returns:
    (new state, {"d_loss", "g_loss", "d_real", "d_fake"}), d_real/d_fake the mean probability
    the discriminator gives real and generated images; with a class loss also "d_class_loss"
    and "g_class_loss" (the cross-entropies, unweighted).
  """
  if class_loss_weight > 0 and not conditional:
    raise ValueError("class_loss_weight > 0 needs a conditional GAN (labels to classify)")
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

  # The generator runs forward once: its images feed the discriminator's update, and its VJP
  # takes the generator's gradient back from the updated discriminator's verdict on them. Its
  # batch statistics are those of this forward pass.
  fake, g_vjp, g_stats = jax.vjp(
    lambda g_params: _apply(
      state.g_apply, g_params, state.g_batch_stats, z, *fake_labels, train=True
    ),
    state.g_params,
    has_aux=True,
  )

  # Discriminator: real and generated batches pass separately (own batch statistics).

  with_class = class_loss_weight > 0
  no_class_loss = jnp.zeros((), jnp.float32)

  def d_objective(d_params, with_r1):
    def d_real(x):  # -> (logits, (stats, class logits or None))
      out, stats = _apply(
        state.d_apply, d_params, state.d_batch_stats, x, *real_labels, train=True, rng=d_drop
      )
      logits, class_logits = _split_logits(out)
      return logits, (stats, class_logits)

    real_in = aug(aug_keys[0], real)
    if with_r1:
      r1, (real_logits, (stats, real_class)) = gan_losses.r1_penalty(d_real, real_in, has_aux=True)
      r1 = r1 * r1_every
    else:
      (real_logits, (stats, real_class)), r1 = d_real(real_in), jnp.zeros((), jnp.float32)
    fake_in = aug(aug_keys[1], jax.lax.stop_gradient(fake))
    fake_out, stats = _apply(
      state.d_apply, d_params, stats, fake_in, *fake_labels, train=True, rng=d_drop
    )
    fake_logits, _ = _split_logits(fake_out)
    d_loss = d_loss_fn(real_logits, fake_logits, loss)
    class_loss = _class_loss(real_class, real_labels[0]) if with_class else no_class_loss
    total = d_loss + 0.5 * r1_gamma * r1 + class_loss_weight * class_loss
    return total, (stats, real_logits, fake_logits, d_loss, r1, class_loss)

  def d_grad(with_r1):
    return lambda d_params: jax.value_and_grad(
      functools.partial(d_objective, with_r1=with_r1), has_aux=True
    )(d_params)

  if r1_gamma > 0 and r1_every > 1 and with_r1 is None:  # lazy R1, decided on device
    d_out = jax.lax.cond(state.step % r1_every == 0, d_grad(True), d_grad(False), state.d_params)
  else:  # lazy R1 decided by the caller, or R1 on every step (or never)
    d_out = d_grad(r1_gamma > 0 and with_r1 is not False)(state.d_params)
  (_, (d_stats, real_logits, fake_logits, d_loss, r1, d_class_loss)), d_grads = d_out
  d_grads = parallel.pmean(d_grads, axis_name)
  d_updates, d_opt_state = state.d_tx.update(d_grads, state.d_opt_state, state.d_params)
  d_params = optax.apply_updates(state.d_params, d_updates)

  # Generator: through the updated discriminator (whose statistic updates from judging the
  # generator's batch are not kept), back to the images, then through the generator's VJP.
  def g_objective(images):
    out, _ = _apply(
      state.d_apply,
      d_params,
      d_stats,
      aug(aug_keys[2], images),
      *fake_labels,
      train=True,
      rng=g_drop,
    )
    logits, class_logits = _split_logits(out)
    g_loss = g_loss_fn(logits, loss)
    class_loss = _class_loss(class_logits, fake_labels[0]) if with_class else no_class_loss
    return g_loss + class_loss_weight * class_loss, (g_loss, class_loss)

  (_, (g_loss, g_class_loss)), image_grads = jax.value_and_grad(g_objective, has_aux=True)(fake)
  (g_grads,) = g_vjp(image_grads)
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
    **({"d_class_loss": d_class_loss, "g_class_loss": g_class_loss} if with_class else {}),
  }
  return new_state, parallel.pmean(step_metrics, axis_name)


def generate(state: GANState, batch: dict, *, use_ema: bool, num_classes: int = 0) -> jax.Array:
  """Images [N, H, W, C] in [-1, 1] from a batch {"z": latents [N, z_dim]}, batch norm in
  inference mode; a conditional generator makes the batch's "labels" [N] if it has them, else
  the classes 0, 1, ..., K-1 in turn (balanced)."""
  z = batch["z"]
  params = state.ema_params if use_ema else state.g_params
  labels = ()
  if num_classes:
    labels = (batch["labels"] if "labels" in batch else jnp.arange(z.shape[0]) % num_classes,)
  return _apply(state.g_apply, params, state.g_batch_stats, z, *labels, train=False)[0]


def validate(config, strategy) -> None:
  """Checks the keys this family reads; raises ConfigError naming the key and the fix."""
  del strategy
  optim.validate(config.g_optimizer, "g_optimizer")
  optim.validate(config.d_optimizer, "d_optimizer")
  if config.loss not in LOSSES:
    raise ConfigError(f"config.loss={config.loss!r} unknown; expected one of {LOSSES}")
  if config.data.get("normalize") != "symmetric":
    raise ConfigError("a tanh generator needs config.data.normalize='symmetric' ([-1, 1] images)")
  if not 0.0 <= config.ema_decay < 1.0:
    raise ConfigError(f"config.ema_decay={config.ema_decay} must be in [0, 1)")
  if config.z_dim <= 0:
    raise ConfigError(f"config.z_dim={config.z_dim} must be positive")
  if config.r1_gamma < 0:
    raise ConfigError(f"config.r1_gamma={config.r1_gamma} must be >= 0")
  if config.r1_every < 1:
    raise ConfigError(f"config.r1_every={config.r1_every} must be >= 1 (1: R1 on every step)")
  if config.class_loss_weight < 0:
    raise ConfigError(f"config.class_loss_weight={config.class_loss_weight} must be >= 0")
  if config.class_loss_weight > 0 and not config.conditional:
    raise ConfigError(
      f"config.class_loss_weight={config.class_loss_weight} needs config.conditional=True "
      "(the class loss asks the generator for labels)"
    )
  try:
    diffaugment.diff_augment(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), config.augment)
  except ValueError as e:
    raise ConfigError(f"config.augment={config.augment!r}: {e}") from None


class Task(base.Task):
  """A DCGAN: generator and discriminator from the registry, one optimizer each (see the
  module). Predict functions: "generate" (the EMA generator when the run keeps one) and
  "generate_raw" (the generator's own weights)."""

  def __init__(self, config, data: base.DataInfo, axis_name: str | None = None):
    super().__init__(config, data, axis_name)
    self.num_classes = data.num_classes if config.conditional else 0
    self.generator, self.discriminator = create_models(
      config, data.input_shape, axis_name, self.num_classes
    )
    self.g_tx, _ = optim.create_optimizer(
      config.g_optimizer, config.schedule, config.num_train_steps
    )
    self.d_tx, _ = optim.create_optimizer(
      config.d_optimizer, config.schedule, config.num_train_steps
    )

  validate = staticmethod(validate)

  def init_state(self, key) -> GANState:
    return create_gan_state(
      self.generator,
      self.discriminator,
      self.g_tx,
      self.d_tx,
      self.config.z_dim,
      self.data.input_shape,
      key,
    )

  def step_options(self, step: int) -> dict:
    """Lazy R1: whether this step computes the penalty, so that each kind of step is its own
    compiled program (a `lax.cond` inside one program ran ~4x slower on XLA:CPU)."""
    if self.config.r1_gamma > 0 and self.config.r1_every > 1:
      return {"with_r1": step % self.config.r1_every == 0}
    return {}

  def train_step(self, state, batch, key, *, axis_name=None, with_r1=None):
    config = self.config
    return train_step(
      state,
      batch,
      key,
      z_dim=config.z_dim,
      loss=config.loss,
      ema_decay=config.ema_decay,
      ema_start_step=config.ema_start_step,
      augment=config.augment,
      r1_gamma=config.r1_gamma,
      r1_every=config.r1_every,
      with_r1=with_r1,
      conditional=config.conditional,
      num_classes=self.num_classes,
      class_loss_weight=config.class_loss_weight,
      axis_name=axis_name,
    )

  def with_optimizers(self, state):
    return state.replace(g_tx=self.g_tx, d_tx=self.d_tx)

  def predict_fns(self) -> dict:
    def make(use_ema):
      return lambda state, batch: generate(
        state, batch, use_ema=use_ema, num_classes=self.num_classes
      )

    return {"generate": make(self.config.ema_decay > 0), "generate_raw": make(False)}

  def evaluator_info(self) -> dict:
    return {"z_dim": self.config.z_dim, "num_classes": self.num_classes}

  def summary(self, state) -> str:
    return (
      f"generator {num_params(state.g_params):,} params, "
      f"discriminator {num_params(state.d_params):,}"
    )

  def results(self, state) -> dict:
    return {
      "num_params": num_params(state.g_params) + num_params(state.d_params),
      "metrics_caveat": gan_metrics.CAVEAT,
    }
