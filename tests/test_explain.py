"""The explain CLI on a trained classifier: a picture, and faithfulness against a random order."""

import subprocess
import sys

import pytest
from PIL import Image

from experiments import digits_cnn, mnist1d_baselines
from jaxvision.tools import explain
from jaxvision.train import trainer
from tests.conftest import REPO


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("explain") / "digits"
  config = digits_cnn.get_config()
  config.num_train_steps = 60
  config.eval_every_steps = config.checkpoint.every_steps = 60
  config.schedule.warmup_steps = 10
  trainer.train_and_evaluate(config, str(workdir))
  return workdir


def test_picture_and_faithfulness(digits_run, tmp_path):
  out = tmp_path / "explain.png"
  done = subprocess.run(
    [sys.executable, "-m", "jaxvision.tools.explain", f"--workdir={digits_run}", "--method=ig",
     "--num=6", f"--out={out}", "--faithfulness=40", "--steps=8", "--batch_size=20", "--scale=2"],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert done.returncode == 0, done.stderr[-2000:]
  assert "baseline: black" in done.stdout and "columns predicted/true" in done.stdout
  lines = [line for line in done.stdout.splitlines() if "AUC over 40 eval images" in line]
  assert [line.split()[0] for line in lines] == ["deletion", "insertion"]
  width, height = Image.open(out).size
  assert width == (6 * 10 + 2) * 2 and height == (3 * 10 + 2) * 2 + 14  # 3 rows of 6, header


def test_integrated_gradients_delete_faster_than_a_random_order(digits_run):
  explainer = explain.Explainer(str(digits_run), "ig")
  areas = explain.faithfulness(explainer, 100, steps=8, batch_size=50, seed=0)
  assert len(areas["method_deletion"]) == 100
  assert areas["method_deletion"].mean() < areas["random_deletion"].mean()
  assert areas["method_insertion"].mean() > areas["random_insertion"].mean()


def test_not_an_image_classifier_is_one_line(tmp_path):
  config = mnist1d_baselines.get_config("logistic")
  config.num_train_steps = config.eval_every_steps = config.checkpoint.every_steps = 2
  config.schedule.warmup_steps = 0
  trainer.train_and_evaluate(config, str(tmp_path / "seq"))
  with pytest.raises(ValueError, match=r"inputs of shape \(40, 1\); explain takes images"):
    explain.Explainer(str(tmp_path / "seq"), "gradient")
