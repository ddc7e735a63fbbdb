"""Multi-process JAX: one call before any computation joins this process to the others.

On a cluster (SLURM `srun`, a Cloud TPU pod) JAX finds the coordinator, the process count and
this process's id in the environment, so `initialize()` takes no arguments there. Elsewhere the
three are given explicitly; `./launch.sh -n N` starts N local processes that way.

A process that dies (killed, its host lost) stops the others within `heartbeat_timeout_s`
seconds (JAX's default: 100) with one line on stderr and exit status 1, instead of JAX's abort
with a C++ stack trace: processes are started "recoverable", so the coordinator does not abort
the survivors, and a watch thread polls it for live processes. With an explicit coordinator
(`./launch.sh`, or the three values given), the service runs in a helper process of its own
(`jaxvision.coordinator`) rather than inside process 0, so that losing process 0 is a lost process
like any other; on a detected cluster JAX hosts it in process 0, whose loss still aborts the
others with JAX's own log. Every process then reruns the same command to resume from the newest
checkpoint.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import threading
import time

import jax

NO_CLUSTER = (
  "--jax_distributed needs a cluster (SLURM srun, a TPU pod) or "
  "--coordinator_address/--num_processes/--process_id; ./launch.sh -n N starts N local processes"
)
# Coordinator hosts that only local processes can reach: the coordinator listens there only.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
EXIT_PEER_LOST = 1
EXIT_BARRIER_TIMEOUT_MS = 5 * 60 * 1000  # as JAX's shutdown barrier: process 0's last writes
PEER_LOST = (
  "error: this multi-host run lost a process ({why}); stopping this one too. Rerun every "
  "process with the same command to resume from the newest checkpoint"
)


def _stop_on_peer_loss(why: str) -> None:
  """One line, then exit at once: collectives with the lost process would block forever, and
  interpreter shutdown would wait for it."""
  why = (why.strip().splitlines() or ["no heartbeat"])[0][:160]
  print(PEER_LOST.format(why=why), file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(EXIT_PEER_LOST)


def initialize(
  coordinator_address: str = "",
  num_processes: int = 0,
  process_id: int = -1,
  heartbeat_timeout_s: int = 10,
) -> None:
  """Calls jax.distributed.initialize(); must come before anything touches a JAX device.

  Cross-process collectives on CPU use gloo (TCP) unless another implementation was chosen
  (JAX_CPU_COLLECTIVES_IMPLEMENTATION): without one, a multi-process CPU program cannot run any
  computation that spans processes. GPU and TPU backends are unaffected.

  Args:
    coordinator_address: "host:port" of process 0's coordinator; "" to detect it (or to take
      JAX_COORDINATOR_ADDRESS).
    num_processes: How many processes take part; 0 to detect it.
    process_id: This process's index in [0, num_processes); -1 to detect it.
    heartbeat_timeout_s: A process silent this long counts as lost, and every other one stops.

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
  if heartbeat_timeout_s <= 0:
    raise ValueError(f"heartbeat_timeout_s={heartbeat_timeout_s} must be positive")
  kwargs["heartbeat_timeout_seconds"] = heartbeat_timeout_s
  # Recoverable: a lost process is reported to _watch_peers, not turned into an abort of all.
  # (JAX internals: where a version lacks them, JAX's own handling of a lost process stays.)
  watch = hasattr(jax.config, "jax_enable_recoverability")
  if watch:
    jax.config.update("jax_enable_recoverability", True)
  serve_elsewhere = bool(coordinator_address) and num_processes > 1 and process_id == 0
  try:
    if serve_elsewhere:  # the service in its own process: losing process 0 is like any other
      with _service_in_helper(
        kwargs.get("coordinator_bind_address", coordinator_address),
        num_processes,
        heartbeat_timeout_s,
      ):
        jax.distributed.initialize(**kwargs)
    else:
      jax.distributed.initialize(**kwargs)
  except ValueError as e:
    # JAX names the first value that neither the arguments nor a detected cluster supplied
    # ("coordinator_address should be defined."); other ValueErrors are about given values.
    if "defined" in str(e):
      raise ValueError(NO_CLUSTER) from e
    raise
  from jax._src import distributed as jax_distributed

  client = getattr(getattr(jax_distributed, "global_state", None), "client", None)
  if not watch or client is None:
    return
  closing = threading.Event()
  threading.Thread(
    target=_watch_peers,
    args=(client, jax.process_count(), closing),
    name="jaxvision-peer-watch",
    daemon=True,
  ).start()
  # Runs before JAX's own exit handler (registered earlier, at import).
  atexit.register(_leave_together, client, closing)


class _ServiceElsewhere:
  """What JAX keeps as process 0's service when `jaxvision.coordinator` runs it."""

  def shutdown(self) -> None:
    pass


@contextlib.contextmanager
def _service_in_helper(address: str, num_processes: int, heartbeat_timeout_s: int):
  """Starts `jaxvision.coordinator` serving `address`, and while JAX initializes, has process 0
  use it instead of starting the service in-process. The helper learns that this process has
  ended when the pipe whose write end only this process holds closes. (JAX internals: where
  the service cannot be swapped, JAX's own in-process service stays.)"""
  from jax._src import distributed as jax_distributed

  runtime = getattr(jax_distributed, "_jax", None)
  if not hasattr(runtime, "get_distributed_runtime_service"):
    yield
    return
  parent_read, parent_write = os.pipe()  # parent_write stays open until this process ends
  ready_read, ready_write = os.pipe()
  command = [
    sys.executable, "-m", "jaxvision.coordinator", f"--address={address}",
    f"--num_processes={num_processes}", f"--heartbeat_timeout_s={heartbeat_timeout_s}",
    f"--parent_fd={parent_read}", f"--ready_fd={ready_write}",
  ]  # fmt: skip
  subprocess.Popen(
    command,
    pass_fds=(parent_read, ready_write),
    stdin=subprocess.DEVNULL,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,  # (a start-up error comes back through the pipe)
    start_new_session=True,  # a terminal's Ctrl-C is for the training processes
  )
  os.close(parent_read)
  os.close(ready_write)
  _HELD.append(parent_write)
  answer = os.read(ready_read, 600).decode(errors="replace")
  os.close(ready_read)
  if answer != "ok":
    raise RuntimeError(f"the coordination service for {address} did not start: {answer}")
  create = runtime.get_distributed_runtime_service
  runtime.get_distributed_runtime_service = lambda *args, **kwargs: _ServiceElsewhere()
  try:
    yield
  finally:
    runtime.get_distributed_runtime_service = create


_HELD: list[int] = []  # the pipe's write end: open for as long as this process lives


def _leave_together(client, closing: threading.Event) -> None:
  """The exit order recoverable processes need (JAX's shutdown barrier skips them): all meet;
  the others disconnect while the coordinator still serves them; process 0, which hosts it,
  ends last."""
  count, me = jax.process_count(), jax.process_index()
  try:
    client.wait_at_barrier("jaxvision_exit", EXIT_BARRIER_TIMEOUT_MS)
  except Exception:  # a process is gone: the watch has said so, or will
    return
  closing.set()
  if me != 0:
    jax.distributed.shutdown()
    return
  deadline = time.monotonic() + 30
  while time.monotonic() < deadline:
    try:
      if set(client.get_live_nodes(list(range(count)))) <= {0}:
        break
    except Exception:
      break
    time.sleep(0.05)
  for fd in _HELD:  # a helper's service may stop soon: everyone has left
    os.write(fd, b"done")


def _watch_peers(client, count: int, closing: threading.Event) -> None:
  """Polls the coordinator each second for live processes; a lost one (or the coordinator)
  stops this process, until the run ends (`closing`)."""
  while not closing.wait(1.0):
    try:
      live = client.get_live_nodes(list(range(count)))
    except Exception as e:  # the coordinator itself is gone
      if closing.is_set():
        return
      _stop_on_peer_loss(f"the coordinator is unreachable: {e}")
    if len(live) < count and not closing.is_set():
      lost = sorted(set(range(count)) - set(live))
      _stop_on_peer_loss(f"process {', '.join(map(str, lost))} stopped sending heartbeats")
