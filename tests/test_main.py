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
