"""`train_and_evaluate`, written once for every Task: the wiring around a family's step.

The Task (`jaxvision.tasks`, named by `config.trainer`) says what its family knows; this module
does the rest identically for all of them: the parallel strategy, the data, the PRNG keys (one
base key split into init, train and eval keys), the evaluators, the run's workdir (restore or
create), compiling the step (and `config.steps_per_call` steps in one `lax.scan` over data kept
on device), the batches, and the loop (`jaxvision.train.loop`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxvision import data as data_lib
from jaxvision import parallel, tasks, xla
from jaxvision import workdir as workdir_lib
from jaxvision.config_dict import ConfigError
from jaxvision.evaluators import common as evaluators_lib
from jaxvision.tasks.base import DataInfo
from jaxvision.train import loop
from jaxvision.train import members as members_lib
from jaxvision.train.run import Options, Run


def validate(config, strategy) -> None:
  """Checks the keys every Task's config has; raises ConfigError naming the key and the fix."""
  positive = {
    "num_train_steps": config.num_train_steps,
    "log_every_steps": config.log_every_steps,
    "eval_every_steps": config.eval_every_steps,
    "checkpoint.every_steps": config.checkpoint.every_steps,
    "checkpoint.keep": config.checkpoint.keep,
    "data.batch_size": config.data.batch_size,
    "data.eval_batch_size": config.data.eval_batch_size,
  }
  for key, value in positive.items():
    if not isinstance(value, int) or value <= 0:
      raise ConfigError(f"config.{key}={value!r} must be a positive integer")
  if config.get("steps_per_call", 1) < 1:
    raise ConfigError(f"config.steps_per_call={config.steps_per_call} must be >= 1")
  try:
    strategy.check_batch_size(config.data.batch_size, "config.data.batch_size")
    strategy.check_batch_size(config.data.eval_batch_size, "config.data.eval_batch_size")
  except ValueError as e:
    raise ConfigError(str(e)) from None


def train_steps(step_fn, state, data: dict, indices: jax.Array, *args):
  """`len(indices)` steps of `step_fn` in one compiled loop, gathering batches on device.

  Args:
    step_fn: `(state, batch, *args) -> (state, metrics)`.
    state: the train state (donated by the caller's compiled step).
    data: the whole train split on device, {"inputs": [N, ...], "targets": [N], ...}.
    indices: [K, B] example indices of K consecutive global batches (under pmap: this device's
      columns), or [K, M, B] for M members' batches.
    *args: the step's other arguments (the run's base PRNG key; members add theirs).

  Returns:
    (new state, metrics with a leading [K] axis): the same as K calls of `step_fn`.
  """

  def body(state, batch_indices):
    batch = jax.tree.map(lambda x: x[batch_indices], data)  # [B, ...] (members: [M, B, ...])
    return step_fn(state, batch, *args)

  return jax.lax.scan(body, state, indices)


def prefetch_depth(prefetch: int, steps_per_call: int) -> int:
  """How many train batches to build ahead: `data.prefetch`, where -1 (the default) is 2 on an
  accelerator and 0 on CPU, where the prefetch thread only competes with XLA's compute for the
  same cores (measured 1-4% fewer steps/s for MNIST-1D on 2 cores); 0 when steps_per_call > 1
  (the train split is on device and batches are gathered there)."""
  if steps_per_call > 1:
    return 0
  if prefetch < 0:
    return 0 if jax.default_backend() == "cpu" else 2
  return prefetch


def host_batches(source, sampler, strategy) -> Callable[[int], dict]:
  """`step -> the global train batch of step`, of which this process reads and places only its
  own rows (`parallel.host_rows`): no host builds another's share."""
  rows = parallel.host_rows(sampler.batch_size)
  return lambda step: strategy.place_local_batch(source.get(sampler.indices(step)[rows]))


def compiled_per_option(compile_, step_fn, step_options):
  """`step -> the compiled step for that step`: `step_fn` with the Task's `step_options(step)`,
  compiled once per distinct set of options."""
  cache = {}

  def get(step: int):
    options = step_options(step)
    key = tuple(sorted(options.items()))
    if key not in cache:
      cache[key] = compile_(functools.partial(step_fn, **options))
    return cache[key]

  return get


def create_evaluators(config, task, dataset, strategy, workdir: str, key) -> list:
  """`config.evaluators`, each given the Task's prediction functions and facts, the data, the
  strategy, the workdir, the eval key and the experiment's XLA options."""
  return evaluators_lib.from_config(
    config.evaluators,
    evaluators_lib.Context(
      predict_fns=task.predict_fns(),
      dataset=dataset,
      strategy=strategy,
      workdir=workdir,
      key=key,
      compiler_options=xla.compiler_options(config.xla),
      batch_size=config.data.eval_batch_size,
      info=task.evaluator_info(),
    ),
  )


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(init, train, eval) keys of a run: one base key, split by purpose."""
  return tuple(jax.random.split(jax.random.key(seed), 3))


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, options: Options | None = None
) -> loop.Outcome:
  """Trains `config`'s Task on `config.data`, resuming from `<workdir>/checkpoints` if present.

  Args:
    config: the experiment config (see `experiments/`); `config.trainer` names the Task.
    workdir: where checkpoints, metrics, samples and results go.
    options: halt_after_steps, allow_config_change and the invocation recorded in results.json.

  Returns:
    How the run ended, with the final eval metrics when it finished.
  """
  task_class = tasks.get(config.trainer)
  strategy = parallel.create_strategy(config.parallel)
  validate(config, strategy)
  task_class.validate(config, strategy)
  member_list = members_lib.parse(config)
  dataset = data_lib.load_dataset(config.data)
  steps_per_call = config.get("steps_per_call", 1)
  if steps_per_call > 1 and not isinstance(dataset.train, data_lib.ArraySource):
    raise ConfigError(
      f"config.steps_per_call={steps_per_call} keeps the train split on device; a source read "
      f"by index ({config.data.source}: generated, or from TFDS) needs steps_per_call=1"
    )
  data_info = DataInfo.of(dataset)
  if member_list:
    return train_members(config, workdir, options, strategy, dataset, member_list)
  task = task_class(config, data_info, strategy.axis_name)
  init_key, train_key, eval_key = seed_keys(config.seed)
  compiler_options = xla.compiler_options(config.xla)
  evaluators = create_evaluators(config, task, dataset, strategy, workdir, eval_key)

  run = Run(config, workdir, strategy, options, meta={"data_info": data_info.as_dict()})
  # One compiled initialisation (eagerly, every initializer compiles on its own: seconds).
  state = run.restore_or_create(lambda: jax.jit(task.init_state)(init_key))
  print(
    f"{dataset.description}: {len(dataset.train)} train / {len(dataset.eval)} eval; "
    f"{task.summary(strategy.global_state(state))}; {strategy.num_devices} devices "
    f"({strategy.name})",
    flush=True,
  )

  step_fn = functools.partial(task.train_step, axis_name=strategy.axis_name)
  compile_ = functools.partial(
    strategy.compile, donate_state=True, compiler_options=compiler_options
  )
  p_train_step = compiled_per_option(compile_, step_fn, task.step_options)
  sampler = data_lib.BatchSampler(len(dataset.train), config.data.batch_size, config.seed)
  depth = prefetch_depth(config.data.get("prefetch", 0), steps_per_call)
  batches = data_lib.Prefetcher(host_batches(dataset.train, sampler, strategy), depth)
  if steps_per_call > 1:
    p_train_steps = compile_(
      functools.partial(train_steps, step_fn), state_args=(0, 1), batch_args=(2,)
    )
    device_data = strategy.place_state(dict(dataset.train.arrays))

  def advance(state, step, k):
    if k == 1:
      return p_train_step(step)(state, batches.get(step), train_key)
    indices = np.stack([sampler.indices(s) for s in range(step, step + k)])  # [K, B]
    return p_train_steps(state, device_data, strategy.place_batch(indices, 1), train_key)

  def results(state):
    host = strategy.global_state(state)
    provenance = {k: v for e in evaluators for k, v in e.provenance().items()}
    return {"dataset": dataset.description, **task.results(host), **provenance}

  try:
    track = loop.Track(run, evaluators, results)
    return loop.train([track], state, advance, steps_per_call=steps_per_call)
  finally:
    batches.close()


def train_members(config, workdir, options, strategy, dataset, members) -> loop.Outcome:
  """`train_and_evaluate` for `config.members`: K runs in `<workdir>/member=<name>/`, trained
  by one compiled step (`jaxvision.train.members`); the others go on when one freezes."""
  task_class = tasks.get(config.trainer)
  data_info = DataInfo.of(dataset)
  impl = members_lib.resolve_impl(config.get("members_impl", "auto"))
  member_tasks = [task_class(m.config, data_info, strategy.axis_name) for m in members]
  keys = [seed_keys(m.config.seed) for m in members]  # (init, train, eval) of each
  tracks = []
  for k, (member, task) in enumerate(zip(members, member_tasks, strict=True)):
    task_class.validate(member.config, strategy)
    member_dir = member.workdir(workdir)
    evaluators = create_evaluators(member.config, task, dataset, strategy, member_dir, keys[k][2])
    meta = {"data_info": data_info.as_dict(), "member": member.name}
    run = Run(member.config, member_dir, strategy, options, meta=meta)

    def results(state, task=task, evaluators=evaluators, name=member.name):
      host = strategy.global_state(state)
      provenance = {k: v for e in evaluators for k, v in e.provenance().items()}
      extra = {"member": name, "members": config.members}
      return {"dataset": dataset.description, **task.results(host), **provenance, **extra}

    done = workdir_lib.read_results(member_dir)
    frozen = done is not None and done.get("status") == "frozen"
    tracks.append(loop.Track(run, evaluators, results, k, f"member={member.name}", frozen))

  state = _restore_members(tracks, member_tasks[0], [k[0] for k in keys], strategy)
  print(
    f"{dataset.description}: {len(dataset.train)} train / {len(dataset.eval)} eval; "
    f"{len(members)} members ({impl}) of "
    f"{member_tasks[0].summary(strategy.global_state(strategy.member(state.members, 0)))}; "
    f"{strategy.num_devices} devices ({strategy.name})",
    flush=True,
  )
  shared = len({m.config.seed for m in members}) == 1
  step_fn = functools.partial(
    members_lib.make_step(member_tasks, members, impl, shared), axis_name=strategy.axis_name
  )
  compile_ = functools.partial(
    strategy.compile, donate_state=True, compiler_options=xla.compiler_options(config.xla)
  )
  p_step = compiled_per_option(compile_, step_fn, member_tasks[0].step_options)
  samplers = [
    data_lib.BatchSampler(len(dataset.train), config.data.batch_size, m.config.seed)
    for m in members
  ]
  get = members_lib.batches(dataset.train, samplers, strategy, shared)
  steps_per_call = config.get("steps_per_call", 1)
  batches = data_lib.Prefetcher(get, prefetch_depth(config.data.get("prefetch", 0), steps_per_call))
  train_keys = jnp.stack([k[1] for k in keys])  # [K]
  values = {k: jnp.asarray(v) for k, v in members_lib.hyperparameters(members).items()}
  if steps_per_call > 1:
    p_steps = compile_(functools.partial(train_steps, step_fn), state_args=(0, 1), batch_args=(2,))
    device_data = strategy.place_state(dict(dataset.train.arrays))

  def indices(step):  # [B] shared, else [K, B]
    if shared:
      return samplers[0].indices(step)
    return np.stack([s.indices(step) for s in samplers])

  def advance(state, step, k):
    if k == 1:
      return p_step(step)(state, batches.get(step), train_keys, values)
    window = np.stack([indices(s) for s in range(step, step + k)])  # [k, (K,) B]
    placed = strategy.place_batch(window, window.ndim - 1)
    return p_steps(state, device_data, placed, train_keys, values)

  reading = loop.Members(
    count=len(members),
    view=lambda state, k: strategy.member(state.members, k),
    frozen_at=members_lib.frozen_at(strategy),
    freeze=members_lib.freeze_fn(),
  )
  try:
    return loop.train(tracks, state, advance, members=reading)
  finally:
    batches.close()


def _restore_members(tracks, task, init_keys, strategy):
  """The placed members state: every member restored at the newest step all that train have a
  checkpoint of (else all start over), frozen members at their own newest; new ones from one
  compiled, vmapped initialisation."""
  live = [t.run.checkpointer.latest_step() for t in tracks if not t.frozen]
  max_step = None
  if len(set(live)) > 1:
    max_step = -1 if None in live else min(live)
  init_all = jax.jit(jax.vmap(task.init_state))  # compiled once, cheap to run again
  create = lambda k: lambda: members_lib.index(init_all(jnp.stack(init_keys)), k)

  states, frozen_at = [], []
  for k, t in enumerate(tracks):
    limit = None if t.frozen else max_step
    states.append(t.run.restore_or_create(create(k), place=False, max_step=limit))
    record = workdir_lib.read_results(t.run.workdir) if t.frozen else None
    frozen_at.append(record["frozen"]["step"] if record else -1)
  steps = {int(s.step) for s, t in zip(states, tracks, strict=True) if not t.frozen}
  state = members_lib.MembersState(
    members=members_lib.stack(states),
    frozen_at=jnp.asarray(frozen_at, jnp.int32),
    step=jnp.asarray(max(steps, default=0), jnp.int32),
  )
  return strategy.place_state(state)
