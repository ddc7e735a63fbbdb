"""`--config.model.name=cnn_b` on the CNN A experiment trains CNN B (225,034 parameters)."""

import json
import subprocess
import sys

from tests.conftest import REPO


def test_model_name_override_trains_that_model(tmp_path, mnist_path):
  workdir = tmp_path / "run"
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "jaxvision.main",
      "--config=experiments/mnist_cnn.py:idx",
      f"--workdir={workdir}",
      "--config.model.name=cnn_b",
      f"--config.data.data_dir={mnist_path}",
      "--config.num_train_steps=2",
      "--config.log_every_steps=1",
      "--config.eval_every_steps=2",
      "--config.checkpoint.every_steps=2",
      "--config.schedule.warmup_steps=1",
      "--config.data.eval_batch_size=400",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr
  results = json.loads((workdir / "results.json").read_text())
  assert results["num_params"] == 225_034
  assert results["model"]["features"] == [32, 64] and results["model"]["dense"] == [128]
