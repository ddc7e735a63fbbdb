"""Faults injected through the real CLI, one test per row of docs/reliability.md.

`python -m tests.reliability` reruns this file and writes the table from what the tests record.
The CLI runs here use 2 virtual CPU devices (fast, still data-parallel).

The default suite runs the cheapest forms (kill -9 once and SIGTERM in a 12-step run, a truncated
newest checkpoint); the rest are minutes of CLI runs on 2 cores, marked slow.
"""

import gzip
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxvision.workdir import restore_latest
from tests.conftest import REPO
from tests.reliability import record

# Minutes of CLI runs and trainings on 2 cores: CI runs them after the default suite.
slow = pytest.mark.slow

DIGITS = [
  "--config=experiments/digits_cnn.py",
  "--config.log_every_steps=4",
  "--config.eval_every_steps=1000",
  "--config.checkpoint.every_steps=4",
  "--config.schedule.warmup_steps=2",
]


def env(devices: int = 2) -> dict:
  out = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_COORDINATOR"))}
  out["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return out


def cli(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", "jaxvision.main", *args],
    cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout, **kwargs,
  )  # fmt: skip


def start(*args) -> subprocess.Popen:
  return subprocess.Popen(
    [sys.executable, "-u", "-m", "jaxvision.main", *args],
    cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
  )  # fmt: skip


def wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 120) -> None:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    line = proc.stdout.readline()
    if text in line:
      return
    if not line and proc.poll() is not None:
      raise AssertionError(f"exited {proc.returncode} before {text!r}: {proc.stderr.read()}")
  raise AssertionError(f"no {text!r} within {timeout} s")


def one_line_error(out: subprocess.CompletedProcess) -> str:
  """The one `error: ` line on stderr (and nothing else but JAX's own warnings)."""
  lines = [line for line in out.stderr.splitlines() if line.strip() and not line.startswith("W")]
  assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-1500:]
  return lines[0]


def params(workdir) -> list:
  state, _ = restore_latest(str(workdir))
  return [np.asarray(x) for x in jax.tree.leaves(state["params"])]


def steps_saved(workdir) -> list[int]:
  return sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())


def rows(workdir) -> list[dict]:
  return [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """`straight(steps)`: the workdir of an uninterrupted run of that many steps (run once) that
  the interrupted ones must equal."""
  workdirs = {}

  def run(steps: int):
    if steps not in workdirs:
      workdir = tmp_path_factory.mktemp("straight") / "run"
      out = cli(*DIGITS, f"--config.num_train_steps={steps}", f"--workdir={workdir}")
      assert out.returncode == 0, out.stderr
      workdirs[steps] = workdir
    return workdirs[steps]

  return run


def assert_same_run(a, b):
  for x, y in zip(params(a), params(b), strict=True):
    np.testing.assert_array_equal(x, y)
  assert rows(a) == [r for r in rows(b)]


@pytest.mark.parametrize(
  "name,steps",
  [
    ("SIGTERM", 12),
    pytest.param("SIGTERM", 40, marks=slow),
    pytest.param("SIGINT", 40, marks=slow),
  ],
  ids=["SIGTERM-12", "SIGTERM", "SIGINT"],
)
def test_signal_saves_exits_75_and_the_rerun_matches(name, steps, straight, tmp_path):
  workdir = tmp_path / "run"
  args = [*DIGITS, f"--config.num_train_steps={steps}", f"--workdir={workdir}"]
  proc = start(*args, "--config.log_every_steps=1")
  wait_for_line(proc, "step 3/")
  proc.send_signal(signal.Signals[name])
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 75, err[-1500:]
  stopped = steps_saved(workdir)[-1]
  assert 3 <= stopped < steps
  assert cli(*args).returncode == 0
  for x, y in zip(params(straight(steps)), params(workdir), strict=True):
    np.testing.assert_array_equal(x, y)
  record(
    f"{name} ({'scheduler preemption' if name == 'SIGTERM' else 'Ctrl-C'})",
    f"`{name}` to the CLI process after step 3 of {steps}",
    f"checkpoint at the next step ({stopped}), exit 75; the rerun is bit-identical to an "
    "uninterrupted run",
    "0",
  )


@pytest.mark.parametrize(
  "steps,kill_after", [(12, (8,)), pytest.param(40, (12, 28), marks=slow)], ids=["once", "twice"]
)
def test_kill_9_then_resume_is_bit_identical_and_logs_are_clean(
  steps, kill_after, straight, tmp_path
):
  workdir = tmp_path / "run"
  args = [*DIGITS, f"--config.num_train_steps={steps}", f"--workdir={workdir}"]
  for step in kill_after:
    proc = start(*args)
    wait_for_line(proc, f"step {step}/")
    proc.kill()
    proc.wait()
  last = steps_saved(workdir)[-1]
  assert last < steps
  assert cli(*args).returncode == 0
  assert_same_run(straight(steps), workdir)
  record(
    f"`kill -9` mid-run, {'twice' if len(kill_after) == 2 else 'once'}",
    f"SIGKILL after the log rows of steps {' and '.join(map(str, kill_after))} of {steps}",
    "rerun resumes from the newest checkpoint; parameters and metrics.jsonl identical to an "
    "uninterrupted run (rows after the checkpoint are rewritten, not repeated)",
    f"the steps since the last checkpoint (here {kill_after[-1] - last} of 4 at most), recomputed",
  )


@slow
def test_halt_off_a_log_step_and_a_finished_rerun_add_no_rows(straight, tmp_path):
  workdir = tmp_path / "run"
  args = [*DIGITS, "--config.num_train_steps=40", f"--workdir={workdir}"]
  assert cli(*args, "--halt_after_steps=6").returncode == 0
  assert cli(*args).returncode == 0
  again = cli(*args)
  assert again.returncode == 0 and "Already finished" in again.stdout
  assert_same_run(straight(40), workdir)
  record(
    "halt off a log step; rerun of a finished run",
    "`--halt_after_steps=6` with logs every 4 steps, then the same command twice",
    "the log window is saved with the checkpoint: rows identical to an uninterrupted run; a "
    "finished workdir only reports where its results are",
    "0",
  )


@slow
def test_non_finite_loss_is_never_saved(tmp_path):
  workdir = tmp_path / "run"
  args = [*DIGITS, "--config.num_train_steps=40", f"--workdir={workdir}"]
  out = cli(*args, "--config.optimizer.learning_rate=1e8", "--config.checkpoint.every_steps=1")
  line = one_line_error(out)
  # Adam's first step at this rate already diverges: caught as a non-finite metric, or (finite
  # yet) as a state whose norm grew more than checkpoint.max_norm_growth since the last save.
  assert out.returncode == 1 and ("non-finite" in line or "norm grew" in line), line
  bad_step = int(line.split(" at step ")[-1].split(",")[0].split(";")[0])
  saved = steps_saved(workdir)
  assert all(step < bad_step for step in saved)
  expected = f"the newest checkpoint is step {saved[-1]}" if saved else "no checkpoint was saved"
  assert expected in line, line
  if saved:
    state, _ = restore_latest(str(workdir))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))
  record(
    "divergence (non-finite loss)",
    "`--config.optimizer.learning_rate=1e8`, checkpoints every step",
    f"stops at step {bad_step} with one line naming what diverged (a non-finite metric, or a "
    "state norm jump) and what was saved; only finite states within the norm bound are saved, "
    "so no good checkpoint is rotated out",
    "the diverged steps (by design)",
  )


@slow
def test_config_drift_is_refused_before_anything_is_written(tmp_path):
  workdir = tmp_path / "run"
  args = [*DIGITS, "--config.num_train_steps=8", f"--workdir={workdir}"]
  assert cli(*args).returncode == 0
  before = {p: (workdir / p).read_bytes() for p in ("config.json", "results.json")}
  for extra, key in (
    (["--config.seed=1"], "seed: 0 -> 1"),
    (["--config.num_train_steps=12"], "num_train_steps: 8 -> 12"),
    (["--config.optimizer.learning_rate=0.5"], "optimizer.learning_rate"),
  ):
    out = cli(*args, *extra)
    assert out.returncode == 1 and key in one_line_error(out)
  other = cli("--config=experiments/mnist1d_rnn.py:gru", f"--workdir={workdir}")
  assert other.returncode == 1 and "model.name: 'convnet' -> 'gru'" in one_line_error(other)
  assert {p: (workdir / p).read_bytes() for p in before} == before
  allowed = cli(*args, "--config.num_train_steps=12", "--allow_config_change")
  assert allowed.returncode == 0
  assert json.loads((workdir / "results.json").read_text())["num_train_steps"] == 12
  record(
    "config drift on resume",
    "rerun a finished workdir with another seed, step count or learning rate; another "
    "experiment (GRU) into a CNN workdir",
    "refused with one line naming each changed key before anything is written; "
    "`--allow_config_change` continues deliberately",
    "0",
  )


# How the newest checkpoint's files are damaged, and the reliability table's words for it.
DAMAGE = {
  "truncated": "cut every file of the newest checkpoint (step 8) to half its length",
  "garbage": "overwrite every file of the newest checkpoint (step 8) with garbage",
}


@pytest.mark.parametrize("damage", ["truncated", pytest.param("garbage", marks=slow)])
def test_corrupt_latest_checkpoint_falls_back_to_the_previous(damage, tmp_path):
  workdir = tmp_path / "run"
  args = [*DIGITS, "--config.num_train_steps=12", f"--workdir={workdir}"]
  assert cli(*args, "--halt_after_steps=8").returncode == 0
  assert steps_saved(workdir)[-2:] == [4, 8]
  damaged = 0
  for root, _, files in os.walk(workdir / "checkpoints" / "8" / "state"):
    for name in files:
      path = os.path.join(root, name)
      if damage == "truncated":
        damaged += os.path.getsize(path) > 1
        os.truncate(path, os.path.getsize(path) // 2)
      else:
        damaged += 1
        (open(path, "wb")).write(b"\x00garbage")
  assert damaged > 0
  out = cli(*args)
  assert out.returncode == 0, out.stderr[-1500:]
  assert "checkpoint step 8 is unreadable" in out.stdout and "at step 4" in out.stdout
  assert steps_saved(workdir)[-1] == 12
  record(
    "corrupt newest checkpoint" if damage == "garbage" else "truncated newest checkpoint",
    DAMAGE[damage],
    "one warning line; resumes from the newest readable one (step 4) and finishes",
    "4 (recomputed)",
  )


@slow
def test_failing_checkpoint_write_is_one_line_and_keeps_the_last_good(tmp_path):
  workdir = tmp_path / "run"
  args = [*DIGITS, "--config.num_train_steps=12", f"--workdir={workdir}"]
  assert cli(*args, "--halt_after_steps=4").returncode == 0

  def small_files():  # writes beyond 4 KiB fail with EFBIG, as on a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

  out = cli(*args, preexec_fn=small_files)
  line = one_line_error(out)
  assert out.returncode == 1 and "newest complete checkpoint is step 4" in line
  assert cli(*args).returncode == 0 and steps_saved(workdir)[-1] == 12
  record(
    "checkpoint write fails (disk full)",
    "file-size limit of 4 KiB on the process (writes fail with EFBIG)",
    "stops at the failing save with one line naming the newest complete checkpoint; a rerun "
    "with room resumes from it",
    "the steps since that checkpoint",
  )


def _corrupt_mnist(tmp_path):
  folder = tmp_path / "mnist"
  folder.mkdir()
  shutil.copy(REPO.parent / "shared/data/mnist/t10k-labels-idx1-ubyte.gz", folder)
  with gzip.open(REPO.parent / "shared/data/mnist/t10k-images-idx3-ubyte.gz") as f:
    data = gzip.compress(f.read())
  (folder / "t10k-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])  # truncated
  return folder


BAD_INPUT = {
  "negative learning rate": (["--config.optimizer.learning_rate=-0.1"], "learning_rate"),
  "eval batch size 0": (["--config.data.eval_batch_size=0"], "eval_batch_size"),
  "log interval 0": (["--config.log_every_steps=0"], "log_every_steps"),
  "batch size 0": (["--config.data.batch_size=0"], "batch_size"),
  "checkpoint interval 0": (["--config.checkpoint.every_steps=0"], "every_steps"),
  "batch not divisible by devices": (["--config.data.batch_size=63"], "multiple of the 2"),
  "unknown strategy": (["--config.parallel.strategy=tpu"], "parallel.strategy"),
  "halt after -1 steps": (["--halt_after_steps=-1"], "halt_after_steps"),
}


@slow
@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_values_are_one_line_before_the_workdir_exists(case, tmp_path):
  extra, key = BAD_INPUT[case]
  workdir = tmp_path / "run"
  out = cli(*DIGITS, f"--workdir={workdir}", *extra)
  assert out.returncode == 2 and key in one_line_error(out)
  assert not workdir.exists()
  record(f"bad value: {case}", f"`{' '.join(extra)}`", f"exit 2, one line naming `{key}`", "-")


@slow
def test_bad_paths_and_corrupt_data_are_one_line(tmp_path, mnist_path):
  for workdir, needle in (("", "--workdir is empty"), ("/etc/hostname/x", "which is a file")):
    out = cli(*DIGITS, f"--workdir={workdir}")
    assert out.returncode == 2 and needle in one_line_error(out)
  folder = _corrupt_mnist(tmp_path)
  workdir = tmp_path / "run"
  out = cli("--config=experiments/mnist_cnn.py:idx", f"--config.data.data_dir={folder}",
            f"--workdir={workdir}")  # fmt: skip
  line = one_line_error(out)
  assert out.returncode == 1 and "t10k-images-idx3-ubyte.gz is corrupt or truncated" in line
  assert not workdir.exists()
  record(
    "bad paths and corrupt data",
    "`--workdir=`, a workdir under a file, a truncated .gz IDX file",
    "one line naming the path or file, before any directory is made: exit 2 for the bad "
    "arguments, 1 for the corrupt file",
    "-",
  )


@slow
def test_help_exits_zero_and_distributed_without_a_cluster_is_one_line(tmp_path):
  out = cli("--help")
  assert out.returncode == 0 and "--allow_config_change" in out.stdout
  out = cli(*DIGITS, f"--workdir={tmp_path / 'run'}", "--jax_distributed")
  assert out.returncode == 1 and "needs a cluster" in one_line_error(out)
  record(
    "friction: --help; --jax_distributed outside a cluster",
    "`--help`; `--jax_distributed` with no SLURM/TPU environment or coordinator flags",
    "exit 0 with the usage; exit 1 with one line saying how to start processes",
    "-",
  )
