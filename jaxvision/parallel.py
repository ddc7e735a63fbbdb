"""Device placement: the only module that knows how many devices (and hosts) there are.

Data parallelism with sharded `jit`: a 1-D mesh over the devices with axis "data"; train state is
replicated, batches are split along their first axis. Step functions are written for one global
batch and never see the device count; XLA inserts the gradient all-reduce.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def create_mesh(num_devices: int = 0) -> Mesh:
  """A data-parallel mesh over the first `num_devices` devices (0: all of them, every host)."""
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices) or jax.process_count() > 1:
      raise ValueError(
        f"num_devices={num_devices} but {len(devices)} devices on {jax.process_count()} hosts"
      )
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
  return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
  if batch_size % mesh.size:
    raise ValueError(f"{what} {batch_size} is not divisible by the {mesh.size} devices")


def replicate(tree, mesh: Mesh):
  """Places every leaf of `tree` on every device of `mesh`."""
  return jax.device_put(tree, replicated(mesh))


def shard_batch(batch, mesh: Mesh, batch_axis: int = 0):
  """Splits a global batch (the same numpy arrays on every host) along `batch_axis` over `mesh`.

  Each host contributes only its own slice, so this also works across hosts.
  """
  sharding = data_sharded(mesh, batch_axis)
  n, i = jax.process_count(), jax.process_index()

  def put(x):
    rows = x.shape[batch_axis] // n
    local = np.take(x, np.arange(i * rows, (i + 1) * rows), axis=batch_axis) if n > 1 else x
    return jax.make_array_from_process_local_data(sharding, local, x.shape)

  return jax.tree.map(put, batch)
