"""Members: K models of one family trained by one compiled program (`config.members`).

`config.members` names the members as sweep axes do: "seed=0:5", or
"optimizer.learning_rate=1e-3,3e-3;seed=0,1" (axes separated by ";", crossed). Each member is
the experiment with its values set, exactly the config a standalone run with those values has,
and is written as its own run in `<workdir>/member=<name>/` (config.json, metrics, checkpoints,
results.json): `load_run`, the report and the sweep treat it as an ordinary point.

Members may differ in their seed (initialisation, data order and every per-step key) and in an
optimizer block's `learning_rate` or `weight_decay` (the step rebuilds the Task's optimizers from
the member's values, so one program serves all). The Task's step runs for every member inside
one compiled function: `jax.vmap`ped over a leading members axis of the state, the batches and
the keys ("vmap"), or written out once per member ("unroll"; XLA:CPU turns vmapped convolutions
into grouped ones); `config.members_impl` chooses, "auto" picking per backend.

A member whose metrics or state turn non-finite is frozen: from that step on its state no longer
changes and its metrics read NaN; its run records the step and reason in results.json (status
"frozen") and keeps its last good checkpoint, and the others go on.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxvision import parallel
from jaxvision.config_dict import ConfigError
from jaxvision.tools import sweep

IMPLS = ("auto", "vmap", "unroll")
HYPERPARAMETERS = ("learning_rate", "weight_decay")


@dataclasses.dataclass(frozen=True)
class Member:
  """One member: its name (its run is `<workdir>/member=<name>`), values and whole config."""

  name: str
  overrides: dict
  config: ml_collections.ConfigDict

  def workdir(self, parent: str) -> str:
    return f"{parent}/member={self.name}"


@flax.struct.dataclass
class MembersState:
  """The members' train states, stacked.

  Attributes:
    members: the Task's state, each leaf with a leading [K] axis.
    frozen_at: [K] int32, the step at which a member froze (-1 while it trains).
    step: steps done by the members that train.
  """

  members: Any
  frozen_at: jax.Array
  step: jax.Array


def parse(config) -> list[Member]:
  """The members `config.members` declares (none when it is empty).

  Raises:
    ConfigError: a malformed axis, or a key members cannot differ in, in one line.
  """
  text = config.get("members", "")
  if not text:
    return []
  where = f"config.members={text!r}"
  try:
    axes = [sweep.parse_axis(axis) for axis in text.split(";") if axis.strip()]
  except sweep.SweepError as e:
    raise ConfigError(f"{where}: {e}") from None
  keys = [key for key, _ in axes]
  if len(set(keys)) != len(keys):
    raise ConfigError(f"{where}: a key appears twice")
  for key in keys:
    _check_key(config, key, where)
  if config.get("members_impl", "auto") not in IMPLS:
    raise ConfigError(f"config.members_impl={config.members_impl!r}: expected one of {IMPLS}")
  members = []
  for point in sweep.product(**dict(axes)):
    member = copy.deepcopy(config)  # locked as the original
    with member.unlocked():
      member.members = ""
    try:
      for key, value in point.items():
        sweep.set_dotted(member, key, value, where)
    except sweep.SweepError as e:
      raise ConfigError(str(e)) from None
    members.append(Member(sweep.point_name(point), point, member))
  return members


def _check_key(config, key: str, where: str) -> None:
  *block, leaf = key.split(".")
  node = config
  for part in block:
    node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
  is_optimizer = isinstance(node, ml_collections.ConfigDict) and "learning_rate" in node
  if key != "seed" and not (block and leaf in HYPERPARAMETERS and is_optimizer and leaf in node):
    raise ConfigError(
      f"{where}: members may differ in seed or an optimizer's learning_rate or weight_decay, "
      f"not {key!r} (sweep it instead: python -m jaxvision.tools.sweep --axis={key}=...)"
    )


def hyperparameters(members: list[Member]) -> dict[str, np.ndarray]:
  """The optimizer values that differ between members: dotted key -> [K] float32."""
  keys = [k for k in members[0].overrides if k != "seed"]
  return {
    k: np.asarray([_get(m.config, k) for m in members], np.float32)
    for k in keys
    if len({_get(m.config, k) for m in members}) > 1
  }


def _get(config, key: str):
  for part in key.split("."):
    config = config[part]
  return config


def resolve_impl(impl: str) -> str:
  """ "auto": "unroll" on CPU (XLA:CPU runs vmapped convolutions as slower grouped ones),
  "vmap" elsewhere."""
  if impl != "auto":
    return impl
  return "unroll" if jax.default_backend() == "cpu" else "vmap"


def stack(states: list):
  """One tree of the states' leaves stacked on a new leading axis (the first state's static
  fields, e.g. its optimizer, kept)."""
  treedef = jax.tree.structure(states[0])
  leaves = [jax.tree.leaves(s) for s in states]
  return jax.tree.unflatten(treedef, [jnp.stack(xs) for xs in zip(*leaves, strict=True)])


def index(tree, k: int):
  return jax.tree.map(lambda x: x[k], tree)


def _all_finite(tree, count: int) -> jax.Array:
  """[K] bool: whether each member's floating-point values in `tree` are all finite."""
  ok = jnp.ones((count,), bool)
  for x in jax.tree.leaves(tree):
    if jnp.issubdtype(x.dtype, jnp.inexact):
      ok &= jnp.all(jnp.isfinite(x.reshape(count, -1)), axis=1)
  return ok


def _where(mask: jax.Array, a, b):
  """`a` where the [K] `mask` holds, else `b`, leaf by leaf."""
  expand = lambda x: mask.reshape(mask.shape + (1,) * (x.ndim - 1))
  return jax.tree.map(lambda x, y: jnp.where(expand(x), x, y), a, b)


def make_step(tasks: list, members: list[Member], impl: str, shared_batch: bool):
  """The members' train step `(members state, batch, keys [K], hyperparameters) -> (state,
  metrics [K])`, pure, with the Task step's `axis_name` keyword and its `step_options`.

  Args:
    tasks: each member's Task (the same family and model; their optimizers' values differ).
    members: the members, in order.
    impl: "vmap" or "unroll" (`resolve_impl`).
    shared_batch: every member reads the same batch (one seed): the batch has no members axis.
  """
  task = tasks[0]
  count = len(members)

  def traced_task(values: dict):
    """A Task whose optimizers use these (traced) values: one program for every member."""
    if not values:
      return task
    config = ml_collections.ConfigDict(members[0].config.to_dict(), type_safe=False)
    for key, value in values.items():
      *block, leaf = key.split(".")
      _get(config, ".".join(block))[leaf] = value
    return type(task)(config, task.data, task.axis_name)

  def one(member_task, state, batch, key, axis_name, options):
    new, metrics = member_task.train_step(
      member_task.with_optimizers(state), batch, key, axis_name=axis_name, **options
    )
    return task.with_optimizers(new), metrics  # static fields as the input's

  def step(state: MembersState, batch, keys_, values, *, axis_name=None, **options):
    if impl == "vmap":
      new, metrics = jax.vmap(
        lambda s, b, k, v: one(traced_task(v), s, b, k, axis_name, options),
        in_axes=(0, None if shared_batch else 0, 0, 0),
      )(state.members, batch, keys_, values)
    else:
      outs = [
        one(
          tasks[k],
          index(state.members, k),
          batch if shared_batch else index(batch, k),
          keys_[k],
          axis_name,
          options,
        )
        for k in range(count)
      ]
      new, metrics = stack([o[0] for o in outs]), stack([o[1] for o in outs])
    ok = _all_finite(metrics, count) & _all_finite(new, count)
    training = state.frozen_at < 0
    members_ = _where(ok & training, new, state.members)
    frozen_at = jnp.where(training & ~ok, state.step + 1, state.frozen_at)
    metrics = jax.tree.map(lambda m: jnp.where(training, m, jnp.nan), metrics)
    return MembersState(members_, frozen_at, state.step + 1), metrics

  return step


def batches(source, samplers: list, strategy, shared: bool):
  """`step -> this process's rows of every member's batch of step`, placed: [B, ...] when
  `shared` (one data order), else [K, B, ...] (the batch axis second), read in one call."""
  rows = parallel.host_rows(samplers[0].batch_size)
  if shared:
    return lambda step: strategy.place_local_batch(source.get(samplers[0].indices(step)[rows]))

  def get(step):
    indices = np.stack([s.indices(step)[rows] for s in samplers])  # [K, B_local]
    batch = source.get(indices.reshape(-1))
    stacked = jax.tree.map(lambda x: x.reshape(indices.shape + x.shape[1:]), batch)
    return strategy.place_local_batch(stacked, batch_axis=1)

  return get


def freeze_fn():
  """`(state, k, step) -> state` with member k frozen at `step` (from the host)."""
  set_ = jax.jit(lambda frozen_at, k, step: frozen_at.at[..., k].set(step))
  return lambda state, k, step: state.replace(frozen_at=set_(state.frozen_at, k, step))


def frozen_at(strategy):
  """`state -> [K] numpy` of the freezing steps (-1: training)."""
  return lambda state: np.asarray(strategy.fetch(state.frozen_at))
