"""Multi-process JAX: one call before any computation joins this process to the others.

On a cluster (SLURM `srun`, a Cloud TPU pod) JAX finds the coordinator, the process count and
this process's id in the environment, so `initialize()` takes no arguments there. Elsewhere the
three are given explicitly; `./launch.sh -n N` starts N local processes that way.
"""

from __future__ import annotations

import jax

NO_CLUSTER = (
  "--jax_distributed needs a cluster (SLURM srun, a TPU pod) or "
  "--coordinator_address/--num_processes/--process_id; ./launch.sh -n N starts N local processes"
)
# Coordinator hosts that only local processes can reach: the coordinator listens there only.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> None:
  """Calls jax.distributed.initialize(); must come before anything touches a JAX device.

  Cross-process collectives on CPU use gloo (TCP) unless another implementation was chosen
  (JAX_CPU_COLLECTIVES_IMPLEMENTATION): without one, a multi-process CPU program cannot run any
  computation that spans processes. GPU and TPU backends are unaffected.

  Args:
    coordinator_address: "host:port" of process 0's coordinator; "" to detect it (or to take
      JAX_COORDINATOR_ADDRESS).
    num_processes: How many processes take part; 0 to detect it.
    process_id: This process's index in [0, num_processes); -1 to detect it.

  Raises:
    ValueError: No cluster environment was detected and the missing values were not given
      (one line saying how to fix it), or the given values are inconsistent.
    RuntimeError: JAX's backend was already initialized, or this was called twice.
  """
  # Read when the CPU backend is created, so it must be set before then; older JAX defaults to
  # no cross-process CPU collectives at all, newer JAX to gloo.
  if jax.config.jax_cpu_collectives_implementation is None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if coordinator_address:
    kwargs["coordinator_address"] = coordinator_address
    if coordinator_address.rsplit(":", 1)[0] in LOOPBACK_HOSTS:
      # JAX's default binds the coordinator on every interface; local processes need only this.
      kwargs["coordinator_bind_address"] = coordinator_address
  if num_processes > 0:
    kwargs["num_processes"] = num_processes
  if process_id >= 0:
    kwargs["process_id"] = process_id
  try:
    jax.distributed.initialize(**kwargs)
  except ValueError as e:
    # JAX names the first value that neither the arguments nor a detected cluster supplied
    # ("coordinator_address should be defined."); other ValueErrors are about given values.
    if "defined" in str(e):
      raise ValueError(NO_CLUSTER) from e
    raise
