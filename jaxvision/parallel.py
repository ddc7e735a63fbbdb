"""Devices: the only module that knows how many devices (and hosts) there are.

A `Strategy` compiles step functions and places state and batches; trainers call its methods and
never branch on which strategy runs. Two strategies, chosen by `config.parallel.strategy`:

- "jit" (default): sharded `jax.jit` over a 1-D mesh with axis "data". The train state is
  replicated, batches are split along their batch axis, and step functions see the global batch;
  XLA inserts the gradient all-reduce. `axis_name` is None.
- "pmap": the same step function in `jax.pmap` with axis name "data" (flax's imagenet form).
  State carries a leading device axis, each device sees its rows of the global batch, and step
  functions average gradients, metrics and batch-norm statistics with `pmean(x, axis_name)`.

Step functions are written once for both: they call `pmean`/`psum`/`local_rows` below, which are
no-ops when `axis_name` is None. Checkpoints always hold the global (unreplicated) state, so they
restore under either strategy and on any device or process count.
"""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxvision.config_dict import ConfigError, block

DATA_AXIS = "data"
STRATEGIES = ("jit", "pmap")
PARALLEL_DEFAULTS = dict(
  strategy="jit",  # jit (sharded jit over a data mesh) | pmap
  num_devices=0,  # 0: every device of every host; > 0 only on one host
)


def parallel_config(**overrides) -> ml_collections.ConfigDict:
  return block(PARALLEL_DEFAULTS, **overrides)


# Collectives for step functions: no-ops under jit, where the step sees the global batch.
def pmean(tree, axis_name: str | None):
  return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def psum(tree, axis_name: str | None):
  return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def global_batch_size(local_batch_size: int, axis_name: str | None) -> int:
  """The batch size over every device, from inside a step function."""
  if axis_name is None:
    return local_batch_size
  return local_batch_size * jax.lax.psum(1, axis_name)


def local_rows(x: jax.Array, axis_name: str | None) -> jax.Array:
  """This device's rows of a per-example array made for the global batch [B_global, ...].

  Per-example randomness (augmentation shifts, GAN latents) is drawn for the global batch and
  then sliced, so that every strategy and device count sees the same numbers for each example.
  """
  if axis_name is None:
    return x
  rows = x.shape[0] // jax.lax.psum(1, axis_name)
  return jax.lax.dynamic_slice_in_dim(x, jax.lax.axis_index(axis_name) * rows, rows)


def ensure_cpu_threads(environ=os.environ) -> None:
  """Gives XLA:CPU's client enough threads for virtual CPU devices; call before JAX's backend
  starts (reading `jax.devices()` starts it).

  With `--xla_force_host_platform_device_count=N` every virtual device runs its share of a step
  on the client's thread pool, which is sized by the core count. A collective waits until all N
  devices reach it; with N > cores a device's program can stay queued behind the ones blocked
  in the rendezvous, and after 40 s XLA aborts the process ("Termination timeout for all reduce").
  PJRT_NPROC sizes the pool instead: 2 N threads leave room for every device. A value the user
  set is kept.
  """
  match = re.search(r"xla_force_host_platform_device_count=(\d+)", environ.get("XLA_FLAGS", ""))
  if match and "PJRT_NPROC" not in environ:
    environ["PJRT_NPROC"] = str(max(2 * int(match.group(1)), os.cpu_count() or 1))


def create_mesh(num_devices: int = 0) -> Mesh:
  """A data-parallel mesh over the first `num_devices` devices (0: all of them, every host)."""
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices) or jax.process_count() > 1:
      raise ValueError(
        f"parallel.num_devices={num_devices} but {len(devices)} devices on "
        f"{jax.process_count()} hosts (0 uses every device)"
      )
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,))


class Strategy:
  """Compiles step functions and places data on a data-parallel mesh; see the module docstring.

  Attributes:
    name: "jit" or "pmap".
    mesh: the 1-D device mesh, axis "data".
    axis_name: what step functions pass to the collectives (None under jit).
  """

  name = "jit"
  axis_name: str | None = None

  def __init__(self, num_devices: int = 0):
    self.mesh = create_mesh(num_devices)
    self._replicated = NamedSharding(self.mesh, P())

  @property
  def num_devices(self) -> int:
    return self.mesh.size

  def check_batch_size(self, batch_size: int, what: str = "batch_size") -> None:
    if batch_size <= 0 or batch_size % self.num_devices:
      raise ValueError(
        f"{what}={batch_size} must be a positive multiple of the {self.num_devices} devices"
      )

  def compile(
    self,
    fn,
    *,
    donate_state: bool = False,
    state_args=(0,),
    batch_args=(1,),
    compiler_options=None,
  ):
    """Compiles `fn(state, ...)` for arguments placed by this strategy.

    Args:
      fn: the step function; its first argument is the state (donated if `donate_state`).
      donate_state: donate the first argument's buffers (a train step's state).
      state_args: positions of arguments placed with `place_state` (replicated).
      batch_args: positions of arguments placed with `place_batch` (split over devices). Other
        arguments (PRNG keys, scalars) are the same on every device.
      compiler_options: XLA options (see `jaxvision.xla`).

    Returns:
      A function of the placed arguments; outputs are placed like its inputs (state
      replicated, per-example outputs split like batches, reductions replicated).
    """
    del state_args, batch_args  # sharded jit reads the layout from the arguments' shardings
    return jax.jit(
      fn, donate_argnums=(0,) if donate_state else (), compiler_options=compiler_options
    )

  def place_state(self, tree):
    """Places a global tree (host arrays or global replicated arrays) for compiled steps."""
    return jax.device_put(tree, self._replicated)

  def abstract_state(self, abstract_tree):
    """`jax.ShapeDtypeStruct`s of the global state, with the sharding a checkpoint restores to."""
    return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self._replicated), abstract_tree
    )

  def global_state(self, state):
    """The placed state as global replicated arrays: what checkpoints save and evaluators read."""
    return state

  def place_batch(self, batch, batch_axis: int = 0):
    """Splits a global batch (the same numpy arrays on every host) along `batch_axis`: each
    host contributes only its own rows (`host_rows`), so this also works across hosts."""
    local = jax.tree.map(lambda x: _process_rows(x, batch_axis), batch)
    return self.place_local_batch(local, batch_axis)

  def place_local_batch(self, local_batch, batch_axis: int = 0):
    """Places this host's rows of a global batch (`host_rows` of it, built by this host alone)
    as one global array sharded along `batch_axis`."""
    spec = P(*([None] * batch_axis), DATA_AXIS)
    sharding = NamedSharding(self.mesh, spec)
    return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x, _global_shape(x, batch_axis)),
      local_batch,
    )

  def fetch(self, tree):
    """Replicated outputs (metrics, sums) as numpy, in one transfer."""
    return jax.device_get(tree)

  def fetch_rows(self, tree):
    """Per-example outputs [B, ...] (split like a batch) as whole numpy arrays on every host."""
    if jax.process_count() == 1:
      return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)

  def member(self, tree, index: int):
    """Member `index` of a placed tree with a leading members axis (`train.members`), placed
    as a state of one member."""
    return jax.tree.map(lambda x: x[index], tree)

  def step(self, state) -> int:
    """`state.step` as a Python int (one device-to-host transfer)."""
    return int(jax.device_get(self.global_state_step(state)))

  def global_state_step(self, state):
    return state.step


class PmapStrategy(Strategy):
  """`jax.pmap` over the mesh's devices with axis name "data"; see the module docstring."""

  name = "pmap"
  axis_name = DATA_AXIS

  def __init__(self, num_devices: int = 0):
    super().__init__(num_devices)
    self._stacked = NamedSharding(self.mesh, P(DATA_AXIS))
    self._to_global = jax.jit(lambda x: x[0], out_shardings=self._replicated)
    self._from_global = jax.jit(
      lambda x: jnp.broadcast_to(x, (self.num_devices, *x.shape)), out_shardings=self._stacked
    )

  def compile(
    self,
    fn,
    *,
    donate_state: bool = False,
    state_args=(0,),
    batch_args=(1,),
    compiler_options=None,
  ):
    def in_axes(num_args):
      return tuple(0 if i in state_args or i in batch_args else None for i in range(num_args))

    cache = {}

    def call(*args):
      # pmap fixes in_axes per arity. XLA options reach only an explicitly compiled executable,
      # which is specific to its arguments' shapes: then one per arity and batch shapes.
      signature = len(args)
      if compiler_options:  # the state's and keys' shapes are fixed: the batches' decide
        batches = [a for i, a in enumerate(args) if i in batch_args]
        leaves, tree = jax.tree.flatten(batches)
        signature = (signature, tree, tuple(map(_shape, leaves)))
      if signature not in cache:
        mapped = jax.pmap(
          fn,
          axis_name=DATA_AXIS,
          in_axes=in_axes(len(args)),
          donate_argnums=(0,) if donate_state else (),
          devices=list(self.mesh.devices.reshape(-1)),
        )
        cache[signature] = (
          mapped.lower(*args).compile(compiler_options) if compiler_options else mapped
        )
      return cache[signature](*args)

    return call

  def place_state(self, tree):
    return jax.tree.map(self._from_global, jax.device_put(tree, self._replicated))

  def global_state(self, state):
    return jax.tree.map(self._to_global, state)

  def place_local_batch(self, local_batch, batch_axis: int = 0):
    n = self.num_devices

    def put(local):  # this host's [..., B / hosts, ...] -> [devices, ..., B / devices, ...]
      local = np.asarray(local)
      n_local = n // jax.process_count()
      shape = local.shape
      split = (*shape[:batch_axis], n_local, shape[batch_axis] // n_local, *shape[batch_axis + 1 :])
      local = np.moveaxis(local.reshape(split), batch_axis, 0)
      return jax.make_array_from_process_local_data(self._stacked, local, (n, *local.shape[1:]))

    return jax.tree.map(put, local_batch)

  def fetch(self, tree):
    return jax.tree.map(lambda x: np.asarray(jax.device_get(self._to_global(x))), tree)

  def member(self, tree, index: int):
    return jax.tree.map(lambda x: x[:, index], tree)  # [devices, K, ...] -> [devices, ...]

  def fetch_rows(self, tree):
    rows = super().fetch_rows(tree)  # [n, B / n, ...] -> [B, ...]
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), rows)

  def global_state_step(self, state):
    return self._to_global(state.step)


def _shape(x) -> tuple:
  return (getattr(x, "shape", ()), str(getattr(x, "dtype", type(x).__name__)))


def host_rows(batch_size: int) -> slice:
  """This process's contiguous share of the rows of a global batch of `batch_size` (all of them
  on one process): what it builds and places of every batch."""
  n, i = jax.process_count(), jax.process_index()
  rows = batch_size // n
  return slice(i * rows, (i + 1) * rows)


def _process_rows(x: np.ndarray, batch_axis: int) -> np.ndarray:
  """This host's share (`host_rows`) of a global batch's `batch_axis`."""
  x = np.asarray(x)
  if jax.process_count() == 1:
    return x
  index = [slice(None)] * x.ndim
  index[batch_axis] = host_rows(x.shape[batch_axis])
  return x[tuple(index)]


def _global_shape(local: np.ndarray, batch_axis: int) -> tuple:
  shape = list(np.shape(local))
  shape[batch_axis] *= jax.process_count()
  return tuple(shape)


def create_strategy(config) -> Strategy:
  """The strategy `config` (the experiment's `config.parallel`) names."""
  if config.strategy not in STRATEGIES:
    raise ConfigError(
      f"unknown config.parallel.strategy {config.strategy!r}; expected one of {STRATEGIES}"
    )
  return (PmapStrategy if config.strategy == "pmap" else Strategy)(config.num_devices)
