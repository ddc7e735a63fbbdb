"""A real single-node SLURM cluster on this machine, for tests that run `srun` and `sbatch`.

Debian's `slurm-wlm` and `munge` packages provide the daemons (`.ci/install_slurm.sh` installs
them). `start_slurm_cluster()` writes a slurm.conf under a temporary directory, starts munged,
slurmctld and slurmd in the foreground as children of this process, and waits until the node is
idle; `SlurmCluster.stop()` cancels the jobs and stops the daemons. Nothing outside the temporary
directory is written, the ports are free ones and the daemons talk over 127.0.0.1, so several
clusters (test sessions of several people on one machine) can run side by side. (slurmd and the
clients bind to 127.0.0.1; slurmctld always listens on every interface, Slurm has no option.)

Tests use the session-scoped `slurm_cluster` fixture (import it into the test module):

  from tests.cluster import slurm_cluster  # noqa: F401

  def test_x(slurm_cluster):
    result = slurm_cluster.srun(["-n", "2", "hostname"], timeout=30)
    assert result.returncode == 0, result.stderr

It skips, with the reason, when the daemons are not installed (or the user is not root).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
NODE = "localhost"  # the node's name: what SLURM_STEP_NODELIST (and so JAX's coordinator) says


class ClusterError(RuntimeError):
  """A daemon failed to start or the node never became idle (the message holds its log tail)."""


@dataclasses.dataclass
class SlurmCluster:
  """A running local SLURM cluster.

  Attributes:
    root: The temporary directory holding the config, state, spool, logs and munge socket.
    conf: The slurm.conf path (what SLURM_CONF names in `env`).
    env: The environment for `srun`/`sbatch`/`squeue`: this process's, without any outer
      SLURM_* variables, with SLURM_CONF set.
    cpus: How many CPUs the node declares (more than the machine has: tasks may share cores).
  """

  root: pathlib.Path
  conf: pathlib.Path
  env: dict[str, str]
  cpus: int
  processes: dict[str, subprocess.Popen] = dataclasses.field(default_factory=dict)

  def run(
    self, command: Sequence[str], timeout: float = 60, env: dict[str, str] | None = None, **kwargs
  ) -> subprocess.CompletedProcess:
    """Runs a SLURM client command (or anything) in the cluster's environment.

    Args:
      command: The command and its arguments, e.g. ["sbatch", "--wait", "job.sh"].
      timeout: Seconds before subprocess.TimeoutExpired.
      env: Extra environment variables, added to `self.env`.
      **kwargs: More subprocess.run arguments (cwd=...).

    Returns:
      The completed process, with text stdout and stderr captured.
    """
    full_env = {**self.env, **(env or {})}
    return subprocess.run(
      list(command),
      env=full_env,
      capture_output=True,
      text=True,
      timeout=timeout,
      check=False,
      **kwargs,
    )

  def srun(
    self, args: Sequence[str], timeout: float = 60, env: dict[str, str] | None = None, **kwargs
  ) -> subprocess.CompletedProcess:
    """Runs `srun ARGS` (a job step in a new allocation) and waits for it.

    Args:
      args: srun's arguments, e.g. ["-n", "2", "python", "prog.py"].
      timeout: Seconds before subprocess.TimeoutExpired (srun's own --time is set from it too,
        so that a hanging step is cancelled by SLURM as well).
      env: Extra environment variables for the tasks (srun exports the whole environment).
      **kwargs: More subprocess.run arguments (cwd=...).

    Returns:
      The completed process; stdout holds every task's output.
    """
    minutes = max(1, int(timeout + 59) // 60)
    return self.run(["srun", f"--time={minutes}", *args], timeout=timeout, env=env, **kwargs)

  def log(self, daemon: str, lines: int = 30) -> str:
    """The last lines of a daemon's log ("munged", "slurmctld" or "slurmd").

    Args:
      daemon: Which daemon.
      lines: How many lines from the end.

    Returns:
      The lines joined with newlines ('' when there is no log yet).
    """
    path = self.root / "log" / f"{daemon}.log"
    if not path.exists():
      return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

  def stop(self) -> None:
    """Cancels the cluster's jobs, stops the daemons and deletes the temporary directory."""
    if self.processes.get("slurmctld") and self.processes["slurmctld"].poll() is None:
      # Job steps run under slurmstepd, which slurmd does not own: cancel them through SLURM
      # so that no task outlives the cluster.
      with contextlib.suppress(subprocess.SubprocessError, OSError):
        self.run(["scancel", f"--user={os.geteuid()}", "--full"], timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
          jobs = self.run(["squeue", "--noheader", "--format=%i"], timeout=10).stdout
          if not jobs.strip():
            break
          time.sleep(0.5)
    for name in reversed(DAEMONS):  # slurmd, then slurmctld, then munged (which they need)
      process = self.processes.pop(name, None)
      if process is None or process.poll() is not None:
        continue
      process.send_signal(signal.SIGTERM)
      try:
        process.wait(timeout=10)
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    shutil.rmtree(self.root, ignore_errors=True)


def missing_reason() -> str:
  """Why a local SLURM cluster cannot be started here, or '' when it can be tried.

  Returns:
    One line naming the missing piece and the fix, or ''.
  """
  names = (*DAEMONS, "srun", "sinfo", "scancel", "squeue")
  missing = [n for n in names if shutil.which(n) is None and not os.path.exists(f"/usr/sbin/{n}")]
  if missing:
    return (
      f"SLURM not installed ({', '.join(missing)} missing): run .ci/install_slurm.sh "
      "(apt-get install slurm-wlm munge)"
    )
  if os.geteuid() != 0:
    return "a local SLURM cluster needs root (slurmd starts tasks as the submitting user)"
  return ""


def _which(name: str) -> str:
  """A daemon's path: on PATH, else in /usr/sbin (not on a plain user's PATH)."""
  return shutil.which(name) or f"/usr/sbin/{name}"


def _free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _die_with_parent() -> None:
  """Runs in the daemon's child process: SIGTERM it when the test process dies (Linux).

  A killed pytest then leaves no daemons behind; harmless where prctl is missing.
  """
  with contextlib.suppress(Exception):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def slurm_conf(root: pathlib.Path, user: str, cpus: int, ctld_port: int, slurmd_port: int) -> str:
  """The slurm.conf text of a one-node cluster whose state lives under `root`.

  Args:
    root: The cluster's temporary directory (state/, spool/, log/, run/ and munge/ inside).
    user: The user that the daemons run as (SlurmUser and SlurmdUser).
    cpus: CPUs to declare for the node (SlurmdParameters=config_overrides lets it exceed the
      machine's, so `srun -n 2` fits a 1- or 2-core machine).
    ctld_port: slurmctld's port.
    slurmd_port: slurmd's port.

  Returns:
    The config text.
  """
  return f"""\
ClusterName=jaxvision-test
SlurmctldHost={NODE}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
CommunicationParameters=NoInAddrAny
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=5
NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={NODE} CPUs={cpus} RealMemory=1024 State=UNKNOWN
PartitionName=test Nodes={NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


def start_slurm_cluster(cpus: int = 8, timeout: float = 60) -> SlurmCluster:
  """Starts munged, slurmctld and slurmd under a new temporary directory.

  Args:
    cpus: CPUs that the node declares (tasks beyond the machine's cores share them).
    timeout: Seconds to wait for the node to become idle.

  Returns:
    The running cluster; call its stop() when done.

  Raises:
    ClusterError: A daemon exited or the node did not become idle in time (with log tails).
  """
  root = pathlib.Path(tempfile.mkdtemp(prefix="jaxvision-slurm-"))
  for sub in ("state", "spool", "log", "run", "munge"):
    (root / sub).mkdir(mode=0o700)
  user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
  conf = root / "slurm.conf"
  conf.write_text(slurm_conf(root, user, cpus, _free_port(), _free_port()))
  # Outer SLURM_* variables (tests run inside a SLURM job) would point the clients elsewhere.
  env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  env["SLURM_CONF"] = str(conf)
  cluster = SlurmCluster(root=root, conf=conf, env=env, cpus=cpus)

  # A fresh key: the system's /etc/munge/munge.key is readable by the munge user only, and
  # sharing it would let this test cluster talk to a real one.
  key = root / "munge" / "munge.key"
  key.write_bytes(os.urandom(1024))
  key.chmod(0o400)
  logs = root / "log"
  commands = {
    "munged": [
      _which("munged"),
      "--foreground",
      "--force",  # munged refuses some checks (running as root, /tmp permissions) without it
      f"--socket={root}/munge/munge.socket",
      f"--key-file={key}",
      f"--log-file={logs}/munged.log",
      f"--pid-file={root}/run/munged.pid",
      f"--seed-file={root}/munge/munged.seed",
    ],
    "slurmctld": [_which("slurmctld"), "-D", "-i", "-f", str(conf)],
    "slurmd": [_which("slurmd"), "-D", "-N", NODE, "-f", str(conf)],
  }
  try:
    for name in DAEMONS:
      out = open(logs / f"{name}.out", "wb")  # noqa: SIM115 (the daemon keeps it open)
      cluster.processes[name] = subprocess.Popen(
        commands[name],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
      )
      out.close()
      if name == "munged":
        _wait_for(lambda: (root / "munge" / "munge.socket").exists(), cluster, 10, "munged")
    _wait_for(lambda: _node_state(cluster) == "idle", cluster, timeout, "the node to be idle")
  except BaseException:
    cluster.stop()
    raise
  return cluster


def _node_state(cluster: SlurmCluster) -> str:
  """The node's state as sinfo prints it ('idle', 'unk*', ...), or '' when sinfo fails."""
  try:
    result = cluster.run(["sinfo", "--noheader", "--format=%t"], timeout=10)
  except subprocess.TimeoutExpired:
    return ""
  return result.stdout.strip() if result.returncode == 0 else ""


def _wait_for(ready, cluster: SlurmCluster, timeout: float, what: str) -> None:
  """Polls `ready()` until it is true; raises ClusterError with the logs on timeout or a crash."""
  deadline = time.monotonic() + timeout
  while not ready():
    dead = [n for n, p in cluster.processes.items() if p.poll() is not None]
    if dead or time.monotonic() > deadline:
      why = f"{', '.join(dead)} exited" if dead else f"timed out after {timeout:.0f} s"
      logs = "\n".join(
        f"--- {n} ---\n{cluster.log(n, 15)}\n{_tail(cluster.root / 'log' / f'{n}.out')}"
        for n in cluster.processes
      )
      raise ClusterError(f"waiting for {what}: {why}\n{logs}")
    time.sleep(0.2)


def _tail(path: pathlib.Path, lines: int = 10) -> str:
  """The last lines of a file, '' when it is missing."""
  if not path.exists():
    return ""
  return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
  """A running one-node SLURM cluster for the whole session (skips when not installed).

  Yields:
    The SlurmCluster: `.srun(args, timeout, env)`, `.run(command, ...)`, `.env` (with
    SLURM_CONF) for sbatch/squeue, `.log(daemon)`.
  """
  reason = missing_reason()
  if reason:
    pytest.skip(reason)
  # Installed but failing to start is an error, not a skip: CI installed it to run these tests.
  cluster = start_slurm_cluster()
  try:
    yield cluster
  finally:
    cluster.stop()


def main() -> int:
  """`python -m tests.cluster`: starts the same single-node SLURM the tests use and keeps it up
  until Ctrl-C, printing what another shell exports to submit to it."""
  reason = missing_reason()
  if reason:
    print(f"error: {reason}", file=sys.stderr)
    return 1
  cluster = start_slurm_cluster(cpus=os.cpu_count() or 1)
  print(
    f"A single-node SLURM ({cluster.cpus} CPUs) is up. In another shell:\n"
    f"  export SLURM_CONF={cluster.conf}\n"
    "  sinfo\n"
    "  python -m jaxvision.tools.sweep --config=experiments/digits_cnn.py --slurm\n"
    "Ctrl-C here stops it.",
    flush=True,
  )
  try:
    signal.pause()
  except KeyboardInterrupt:
    pass
  finally:
    cluster.stop()
  return 0


if __name__ == "__main__":
  sys.exit(main())
