"""Optax optimizers and learning-rate schedules from `config.optimizer` and `config.schedule`."""

from __future__ import annotations

import ml_collections
import optax

from jaxvision.config_dict import ConfigError, block

OPTIMIZER_DEFAULTS = dict(
  name="adam",  # adam | adamw | sgd
  learning_rate=1e-3,  # peak learning rate of the schedule
  b1=0.9,
  b2=0.999,
  eps=1e-8,
  weight_decay=0.0,  # decoupled (adamw only)
  momentum=0.9,  # sgd only; 0 disables momentum
  nesterov=False,  # sgd only
  grad_clip_norm=0.0,  # clip gradients to this global norm; 0 disables clipping
  # Magnitude pruning (jaxvision.pruning): the final fraction of kernel weights at zero; 0: off.
  sparsity=0.0,
  prune_per_layer=False,  # each kernel to the sparsity (else one global threshold)
  prune_begin_step=0,  # pruning starts here ...
  prune_end_step=0,  # ... and reaches the sparsity here; 0: at 3/4 of num_train_steps
  prune_every_steps=0,  # steps between mask updates; 0: 1/20 of the pruning span (at least 1)
)
SCHEDULE_DEFAULTS = dict(
  name="constant",  # constant | warmup_cosine
  warmup_steps=0,  # linear warm-up from 0 to the peak learning rate
  end_factor=0.0,  # warmup_cosine: final learning rate as a fraction of the peak
)


def optimizer_config(**overrides) -> ml_collections.ConfigDict:
  return block(OPTIMIZER_DEFAULTS, **overrides)


def schedule_config(**overrides) -> ml_collections.ConfigDict:
  return block(SCHEDULE_DEFAULTS, **overrides)


def validate(opt: ml_collections.ConfigDict, where: str = "optimizer") -> None:
  """Checks an optimizer block (`config.<where>`); raises ConfigError naming the key."""
  if not opt.learning_rate > 0:
    raise ConfigError(f"config.{where}.learning_rate={opt.learning_rate} must be > 0")


def create_schedule(config, learning_rate, total_steps: int) -> optax.Schedule:
  """The learning rate at each step, from `config.schedule`: `learning_rate` times the
  schedule's shape (its value at a peak of 1), so the peak may be a traced value (members that
  differ in learning rate share one program) and is exactly the same computation when not."""
  if config.warmup_steps < 0 or config.warmup_steps > total_steps:
    raise ConfigError(
      f"config.schedule.warmup_steps={config.warmup_steps} not in [0, {total_steps}] "
      "(config.num_train_steps): lower the warm-up or train longer"
    )
  shape = _schedule_shape(config, total_steps)
  return lambda count: learning_rate * shape(count)


def _schedule_shape(config, total_steps: int) -> optax.Schedule:
  if config.name == "constant":
    if not config.warmup_steps:
      return optax.constant_schedule(1.0)
    return optax.join_schedules(
      [optax.linear_schedule(0.0, 1.0, config.warmup_steps), optax.constant_schedule(1.0)],
      [config.warmup_steps],
    )
  if config.name == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=1.0,
      warmup_steps=config.warmup_steps,
      decay_steps=total_steps,
      end_value=config.end_factor,
    )
  raise ConfigError(f"unknown schedule {config.name!r}; expected constant or warmup_cosine")


def create_optimizer(
  opt: ml_collections.ConfigDict, sched: ml_collections.ConfigDict, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (optimizer, schedule) for `total_steps` training steps."""
  schedule = create_schedule(sched, opt.learning_rate, total_steps)
  if opt.name == "adam":
    tx = optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps)
  elif opt.name == "adamw":
    tx = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay)
  elif opt.name == "sgd":
    tx = optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov)
  else:
    raise ConfigError(f"unknown optimizer {opt.name!r}; expected adam, adamw or sgd")
  if opt.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
  if opt.get("sparsity", 0.0):
    tx = optax.chain(tx, _pruning(opt, total_steps))
  return tx, schedule


def _pruning(opt, total_steps: int) -> optax.GradientTransformation:
  from jaxvision import pruning

  if not 0.0 < opt.sparsity < 1.0:
    raise ConfigError(f"config.optimizer.sparsity={opt.sparsity} must be in [0, 1)")
  begin = opt.prune_begin_step
  end = opt.prune_end_step or max(begin, (3 * total_steps) // 4)
  if not 0 <= begin <= end <= total_steps:
    raise ConfigError(
      f"config.optimizer.prune_begin_step={begin}, prune_end_step={end}: need 0 <= begin <= end"
      f" <= num_train_steps={total_steps}"
    )
  every = opt.prune_every_steps or max(1, (end - begin) // 20)
  return pruning.magnitude_pruning(opt.sparsity, begin, end, every, opt.prune_per_layer)
