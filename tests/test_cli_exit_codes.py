"""`python -m jaxvision.main`'s exit statuses as documented: usage and config errors are one line
and status 2 before anything is written; a signal during start-up is one line and status 75."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from tests.reliability import record

REPO = pathlib.Path(__file__).resolve().parents[1]
DIGITS = "--config=experiments/digits_cnn.py"
# Rows of docs/reliability.md (issue #21's table): the needle's case -> (fault, injection).
ROWS = {
  "--config and --workdir are required": ("usage: no --workdir", "`--config=...` alone"),
  "unexpected arguments: stray": ("usage: a stray argument", "`... --workdir=w stray`"),
  "learning_rate=-0.1": (
    "config: an out-of-range value",
    "`--config.optimizer.learning_rate=-0.1`",
  ),
  "warmup_steps=5000": (
    "config: fewer steps than the warm-up",
    "`--config.schedule.warmup_steps=5000` (1,000 steps)",
  ),
}


def cli(*args, **kwargs):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.run(
    [sys.executable, "-m", "jaxvision.main", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    **kwargs,
  )


@pytest.mark.parametrize(
  "args, needle",
  [
    ((DIGITS,), "--config and --workdir are required"),
    (("--workdir=w",), "--config and --workdir are required"),
    ((DIGITS, "--workdir=w", "stray"), "unexpected arguments: stray"),
    ((DIGITS, "--workdir="), "--workdir is empty"),
    ((DIGITS, "--workdir=/etc/hostname/x"), "which is a file"),
    ((DIGITS, "--workdir=w", "--halt_after_steps=-1"), "--halt_after_steps=-1 must be >= 0"),
    ((DIGITS, "--workdir=w", "--config.optimizer.learning_rate=-0.1"), "learning_rate=-0.1"),
    ((DIGITS, "--workdir=w", "--config.schedule.warmup_steps=5000"), "warmup_steps=5000"),
    ((DIGITS, "--workdir=w", "--config.parallel.strategy=tpu"), "parallel.strategy"),
    ((DIGITS, "--workdir=w", "--config.trainer=nope"), "config.trainer='nope' unknown"),
  ],
)
def test_usage_and_config_errors_exit_2_in_one_line(args, needle, tmp_path):
  args = [a.replace("--workdir=w", f"--workdir={tmp_path / 'w'}") for a in args]
  out = cli(*args)
  assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
  assert not (tmp_path / "w").exists()
  if needle in ROWS and args[0] == DIGITS:
    fault, injection = ROWS[needle]
    record(fault, injection, f"exit 2 with one line, nothing written: `{lines[0][:120]}`", "-")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_exits_75_in_one_line(signum, tmp_path):
  proc = subprocess.Popen(
    [sys.executable, "-m", "jaxvision.main", DIGITS, f"--workdir={tmp_path / 'w'}"],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  time.sleep(1.0)  # importing jax and loading the config: long before the first step
  proc.send_signal(signum)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 75, (proc.returncode, err[-2000:])
  lines = err.strip().splitlines()
  assert lines == [
    f"{signal.Signals(signum).name}: stopped during start-up, before any step; nothing to save. "
    "Rerun the same command to start."
  ]
  assert "step 1" not in out
  name = signal.Signals(signum).name
  record(
    f"{name} during start-up",
    f"`{name}` 1 s after the command starts (importing JAX, loading the config)",
    "exit 75 with one line: stopped before any step, nothing to save; rerun to start",
    "-",
  )


def test_the_default_mnist_folder_is_the_repository_s_from_any_directory(tmp_path):
  """Run from elsewhere with no $JAXVISION_MNIST_DIR: the offline MNIST is still found beside
  the repository (`../shared/data/mnist`), not beside the current directory."""
  mnist = REPO.parent / "shared" / "data" / "mnist"
  if not (mnist / "t10k-images-idx3-ubyte.gz").is_file():
    pytest.skip(f"offline MNIST IDX files not found in {mnist}")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXVISION_MNIST_DIR")}
  out = subprocess.run(
    [sys.executable, "-m", "jaxvision.main", f"--config={REPO}/experiments/mnist_cnn.py:idx",
     f"--workdir={tmp_path / 'w'}", "--halt_after_steps=0"],
    cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert out.returncode == 0, out.stderr[-2000:]
  assert "mnist (idx) t10k fold 4/5" in out.stdout and "Halted at step 0" in out.stdout
  record(
    "running from another directory",
    "`python -m jaxvision.main --config=<repo>/experiments/mnist_cnn.py:idx` from a temporary "
    "directory, no $JAXVISION_MNIST_DIR",
    "reads the offline MNIST beside the repository (`../shared/data/mnist`), as documented",
    "-",
  )
