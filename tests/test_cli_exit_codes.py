"""`python -m jaxvision.main`'s exit statuses as documented: usage and config errors are one line
and status 2 before anything is written; a signal during start-up is one line and status 75."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DIGITS = "--config=experiments/digits_cnn.py"


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
