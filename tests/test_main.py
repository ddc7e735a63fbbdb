"""The command-line modules define their absl flags only when run: importing them defines none."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO

CLIS = ("jaxvision.main", "jaxvision.tools.sample", "jaxvision.tools.inpaint", "benchmarks.bench")
# One flag of each: main's and sample's `--workdir` once collided (DuplicateFlagError).
FLAG_NAMES = ("config", "workdir", "out", "clips", "mask", "models", "_memory_probe")


def test_the_clis_import_together_and_define_no_flags():
  # A fresh interpreter: no earlier import in this test process can hide a definition at import.
  code = (
    f"import importlib, json; from absl import flags\n"
    f"for name in {CLIS!r}: importlib.import_module(name)\n"
    f"print(json.dumps([n for n in {FLAG_NAMES!r} if n in flags.FLAGS]))"
  )
  done = subprocess.run(
    [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
  )
  assert done.returncode == 0, done.stderr
  assert json.loads(done.stdout.splitlines()[-1]) == []


def test_stderr_drops_only_closed_event_loop_tracebacks():
  import io

  from jaxvision import main

  out = io.StringIO()
  stderr = main._WithoutClosedLoopTracebacks(out)
  closed = [  # as Python prints one, piece by piece, from TensorStore's threads
    "Traceback (most recent call last):\n",
    '  File "/x/asyncio/base_events.py", line 806, in call_soon_threadsafe\n',
    "    self._check_closed()\n",
    '  File "/x/asyncio/base_events.py", line 519, in _check_closed\n',
    "    raise RuntimeError('Event loop is closed')\n",
    "RuntimeError: Event loop is closed\n",
  ]
  other = [
    "Traceback (most recent call last):\n",
    '  File "/repo/jaxvision/loop.py", line 3, in train\n',
    "    step()\n",
    "RuntimeError: Event loop is closed\n",  # the same error from our own code: kept
  ]
  for piece in ["warning: a\n", *closed, *closed, *other, "error: the one line\n"]:
    stderr.write(piece)
  assert out.getvalue() == "warning: a\n" + "".join(other) + "error: the one line\n"


def test_compiled_programs_are_kept_for_the_next_run_and_start_up_is_recorded(tmp_path):
  """The persistent compilation cache (`--compilation_cache_dir`): the second identical run
  compiles nothing new (its programs come from the cache); results.json records the start-up."""
  cache = tmp_path / "xla"
  args = [
    sys.executable, "-m", "jaxvision.main", "--config=experiments/digits_cnn.py",
    "--config.num_train_steps=2", "--config.log_every_steps=1", "--config.eval_every_steps=2",
    "--config.checkpoint.every_steps=2", "--config.schedule.warmup_steps=1",
    f"--compilation_cache_dir={cache}",
  ]  # fmt: skip
  env = {**os.environ, "JAX_LOG_COMPILES": "1"}
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env.pop("XLA_FLAGS", None)  # one device, as a user runs it
  first = subprocess.run([*args, f"--workdir={tmp_path / 'a'}"], env=env, capture_output=True,
                         text=True, timeout=300, cwd=REPO)  # fmt: skip
  assert first.returncode == 0, first.stderr[-2000:]
  entries = sorted(p.name for p in cache.iterdir() if p.name.startswith("jit_train_step"))
  assert entries, sorted(p.name for p in cache.iterdir())
  second = subprocess.run([*args, f"--workdir={tmp_path / 'b'}"], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)  # fmt: skip
  assert second.returncode == 0, second.stderr[-2000:]
  assert "cache hit for 'jit_train_step'" in second.stderr
  assert sorted(p.name for p in cache.iterdir() if p.name.startswith("jit_train_step")) == entries
  record = json.loads((tmp_path / "b" / "results.json").read_text())
  assert 0 < record["startup_s"] < record["wall_time_s"] + 60
  assert "First step done" in second.stdout
  off = subprocess.run([*args, f"--workdir={tmp_path / 'c'}", "--compilation_cache_dir="],
                       env=env, capture_output=True, text=True, timeout=300, cwd=REPO)  # fmt: skip
  assert off.returncode == 0 and "cache hit" not in off.stderr
