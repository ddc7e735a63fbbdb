"""The command-line modules define their absl flags only when run: importing them defines none."""

import json
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
