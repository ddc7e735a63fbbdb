"""Two processes x 4 CPU devices train exactly as one process x 8 devices, through the real CLI:
started by `launch.sh -n 2`, and by `srun -n 2` on a real single-node SLURM (no arguments to
`jax.distributed.initialize()`). Checkpoints are written jointly and restore anywhere."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxvision.workdir import restore_latest
from tests.cluster import slurm_cluster  # noqa: F401 (the fixture)
from tests.conftest import REPO
from tests.reliability import record
from tests.test_distributed import free_port, jax_env

# Minutes of CLI runs and trainings on 2 cores: CI runs them after the default suite.
pytestmark = pytest.mark.slow

ARGS = [
  "--config=experiments/digits_cnn.py",
  "--config.num_train_steps=12",
  "--config.log_every_steps=4",
  "--config.eval_every_steps=8",
  "--config.checkpoint.every_steps=4",
  "--config.schedule.warmup_steps=2",
]


def _env(devices: int, **extra) -> dict:
  return jax_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)


def _params(workdir):
  state, meta = restore_latest(str(workdir))
  return meta["step"], [np.asarray(x) for x in jax.tree.leaves(state["params"])]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("one") / "run"
  out = subprocess.run(
    [sys.executable, "-m", "jaxvision.main", *ARGS, f"--workdir={workdir}"],
    cwd=REPO, env=_env(8), capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert out.returncode == 0, out.stderr
  return workdir


def _check_same(one, two):
  (step_a, a), (step_b, b) = _params(one), _params(two)
  assert step_a == step_b == 12
  for x, y in zip(a, b, strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  results = json.loads((two / "results.json").read_text())
  assert (results["processes"], results["devices"]) == (2, 8)
  assert sorted(os.listdir(two)).count("tb") == 1  # one writer (process 0)
  rows = [json.loads(r) for r in (two / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if "train_loss" in r] == [4, 8, 12]  # written once, not twice


def test_launch_sh_two_processes_equal_one(one_process, tmp_path):
  workdir = tmp_path / "two"
  out = subprocess.run(
    ["./launch.sh", "-n", "2", "experiments/digits_cnn.py", *ARGS[1:]],
    cwd=REPO, env=_env(4, WORKDIR=str(workdir), PYTHON=sys.executable),
    capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert out.returncode == 0, out.stderr[-2000:]
  _check_same(one_process, workdir)
  record(
    "multi-host: one writer, joint checkpoints",
    "`./launch.sh -n 2` (2 processes x 4 CPU devices) against 1 process x 8 devices",
    "same parameters; one TensorBoard writer and one set of metrics rows (process 0); the "
    "checkpoint written jointly restores on 1 process",
    "-",
  )


def test_srun_two_processes_equal_one(one_process, slurm_cluster, tmp_path):  # noqa: F811
  workdir = tmp_path / "two"
  port = free_port()
  env = _env(4, JAX_COORDINATOR_PORT=str(port), JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}")
  command = [sys.executable, "-m", "jaxvision.main", *ARGS, f"--workdir={workdir}"]
  out = slurm_cluster.srun(
    ["-n", "2", "--kill-on-bad-exit=1", f"--chdir={REPO}", *command, "--jax_distributed"],
    timeout=300,
    env=env,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  _check_same(one_process, workdir)


def _start_two(args: list[str], *flags: str) -> list[subprocess.Popen]:
  """Two `--jax_distributed` processes x 4 CPU devices with an explicit coordinator (no
  launcher), their output piped."""
  port = free_port()
  return [
    subprocess.Popen(
      [
        sys.executable,
        "-u",
        "-m",
        "jaxvision.main",
        *args,
        "--jax_distributed",
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
        *flags,
      ],
      cwd=REPO,
      env=_env(4),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )  # fmt: skip
    for i in range(2)
  ]


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
  """A preemption notice reaching one host stops every host at the same step, with one joint
  checkpoint, and both exit 75; the rerun finishes."""
  workdir = tmp_path / "run"
  args = [
    *ARGS,
    "--config.num_train_steps=60",
    "--config.log_every_steps=1",
    f"--workdir={workdir}",
  ]
  procs = _start_two(args)
  try:
    for line in procs[0].stdout:  # process 0 writes the progress lines
      if line.startswith("step 3/"):
        break
    procs[1].send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=120) for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert codes == [75, 75], [p.stderr.read()[-1500:] for p in procs]
  step, _ = _params(workdir)
  assert 3 <= step < 60
  out = subprocess.run(
    [sys.executable, "-m", "jaxvision.main", *args], cwd=REPO, env=_env(8),
    capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert out.returncode == 0 and f"at step {step}" in out.stdout, out.stderr[-1500:]
  record(
    "multi-host: SIGTERM to one of two processes",
    "`SIGTERM` to process 1 of 2 (2 x 4 CPU devices, gloo over 127.0.0.1) after step 3",
    f"both stop at step {step} with one joint checkpoint and exit 75; the rerun (1 process x 8 "
    "devices) resumes from it and finishes",
    "0",
  )


def test_sigterm_to_launch_sh_checkpoints_and_exits_75(tmp_path):
  """A TERM to the launcher reaches every process, which checkpoints and exits 75; so does the
  launcher, as one process would."""
  workdir = tmp_path / "run"
  proc = subprocess.Popen(
    ["./launch.sh", "-n", "2", "experiments/digits_cnn.py", *ARGS[1:],
     "--config.num_train_steps=200", "--config.log_every_steps=1"],
    cwd=REPO, env=_env(4, WORKDIR=str(workdir), PYTHON=sys.executable),
    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
  )  # fmt: skip
  try:
    for line in proc.stdout:
      if line.startswith("step 3/"):
        break
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=300)
  finally:
    proc.kill()
  assert code == 75, proc.stderr.read()[-2000:]
  step, _ = _params(workdir)
  assert 3 <= step < 200
  record(
    "SIGTERM to launch.sh",
    "`SIGTERM` to `./launch.sh -n 2` after step 3",
    f"both processes save one joint checkpoint (step {step}) and exit 75; launch.sh exits 75",
    "0",
  )


@pytest.mark.parametrize("killed", [1, 0], ids=["process_1", "process_0"])
def test_a_killed_process_stops_the_other_within_the_heartbeat_with_one_line(killed, tmp_path):
  """No launcher to stop the others: the survivor notices the lost process through the
  coordination service's heartbeats (--heartbeat_timeout_s) and ends with one line, exit 1, also
  when the lost one is process 0 (the service runs in a helper process of its own); the rerun
  resumes from the last checkpoint."""
  workdir = tmp_path / "run"
  args = [*ARGS, "--config.num_train_steps=400", "--config.log_every_steps=1",
          "--config.checkpoint.every_steps=2", f"--workdir={workdir}"]  # fmt: skip
  procs = _start_two(args, "--heartbeat_timeout_s=5")
  survivor = procs[1 - killed]
  try:
    for line in procs[0].stdout:
      if line.startswith("step 5/"):
        break
    procs[killed].kill()
    lost = time.monotonic()
    code = survivor.wait(timeout=120)
    seconds = time.monotonic() - lost
  finally:
    for p in procs:
      p.kill()
  stderr = survivor.stderr.read()
  errors = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert code == 1 and seconds < 30, (code, seconds, stderr[-2000:])
  assert len(errors) == 1 and f"lost a process (process {killed} " in errors[0], stderr[-2000:]
  assert not any(s in stderr for s in ("Traceback", "Check failure", "Fatal")), stderr[-2000:]
  step, _ = _params(workdir)
  assert step >= 4
  record(
    f"multi-host: process {killed} killed, no launcher",
    f"`kill -9` to process {killed} of 2 `--jax_distributed` processes (explicit coordinator, "
    "`--heartbeat_timeout_s=5`) after step 5",
    f"process {1 - killed} stops {seconds:.0f} s later with one line naming the lost process, "
    f"exit 1 (JAX's default: an abort with a C++ stack trace); checkpoint step {step} stays the "
    "newest, to resume from",
    "since the last checkpoint (every 2 here)",
  )
