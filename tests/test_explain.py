"""The explain CLI on a trained classifier: a picture, and faithfulness against a random order."""

import json
import re
import subprocess
import sys

import numpy as np
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
  # the record, by default in the run's workdir: the areas alone (no randomization test ran)
  made = json.loads((digits_run / "explain" / "method=ig" / "results.json").read_text())
  assert set(made["final"]) == {
    "deletion_auc", "random_deletion_auc", "insertion_auc", "random_insertion_auc",
    "deletion_ratio", "num_faithfulness",
  }  # fmt: skip
  assert made["final"]["num_faithfulness"] == 40 and made["maps"] == {}


def test_integrated_gradients_delete_faster_than_a_random_order(digits_run):
  explainer = explain.Explainer(str(digits_run), "ig")
  areas = explain.faithfulness(explainer, 100, steps=8, batch_size=50, seed=0)
  assert len(areas["method_deletion"]) == 100
  assert areas["method_deletion"].mean() < areas["random_deletion"].mean()
  assert areas["method_insertion"].mean() > areas["random_insertion"].mean()


@pytest.fixture(scope="module")
def sequence_run(tmp_path_factory):
  """MNIST-1D's logistic regression, 2 steps: a classifier of sequences [40, 1] with no conv."""
  workdir = tmp_path_factory.mktemp("explain") / "seq"
  config = mnist1d_baselines.get_config("logistic")
  config.num_train_steps = config.eval_every_steps = config.checkpoint.every_steps = 2
  config.schedule.warmup_steps = 0
  trainer.train_and_evaluate(config, str(workdir))
  return workdir


def test_a_sequence_classifier_is_explained_along_time(sequence_run, tmp_path):
  out = tmp_path / "seq.png"
  done = subprocess.run(
    [sys.executable, "-m", "jaxvision.tools.explain", f"--workdir={sequence_run}",
     "--method=occlusion", "--num=3", f"--out={out}", "--faithfulness=20", "--steps=5",
     "--batch_size=10", "--scale=1", "--baseline=zero"],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert done.returncode == 0, done.stderr[-2000:]
  assert "occlusion (window 4x1) maps of" in done.stdout and "baseline: zero" in done.stdout
  lines = [line for line in done.stdout.splitlines() if "AUC over 20 eval sequences" in line]
  assert [line.split()[0] for line in lines] == ["deletion", "insertion"]
  assert Image.open(out).size == (3 * 42 + 2, 3 * 26 + 2 + 14)  # 3 line plots of 40 steps x 24


def test_gradcam_without_a_convolution_is_one_line(sequence_run):
  done = subprocess.run(
    [sys.executable, "-m", "jaxvision.tools.explain", f"--workdir={sequence_run}",
     "--method=gradcam", "--faithfulness=0"],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert done.returncode == 1 and done.stdout == ""
  assert done.stderr == (
    f"explain: error: --method=gradcam on model 'logistic' ({sequence_run}): Grad-CAM needs a "
    "model with a convolution (nn.Conv); this one has none\n"
  )


def test_inputs_of_another_rank_are_one_line():
  assert [explain.input_kind(s) for s in ((40, 1), (28, 28, 1), (8, 48, 48, 1))] == [
    "sequence",
    "image",
    "clip",
  ]
  with pytest.raises(ValueError, match=r"explain takes sequences .* not inputs of shape \(10,\)"):
    explain.input_kind((10,))


@pytest.mark.parametrize(
  "shape, size",
  [
    ((3, 40, 1), (3 * 42 + 2, 3 * 26 + 2 + 14)),  # line plots 24 high, time along x
    ((3, 6, 5), (3 * 8 + 2, 3 * 7 + 2 + 14)),  # [F, T] pictures, time along x
    ((3, 5, 6, 1), (3 * 8 + 2, 3 * 7 + 2 + 14)),  # images
    ((2, 4, 5, 6, 1), (4 * 8 + 2, 2 * (3 * 7 + 2 + 14))),  # a block of 3 x 4 frames per clip
  ],
)
def test_a_picture_for_each_rank(tmp_path, shape, size):
  """Maps that are zero on the first two time steps (rows of an image) are red only after them."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape).astype(np.float32)
  kind = explain.input_kind(shape[1:])
  later = (np.arange(shape[1]) >= 2).reshape(-1, *[1] * (len(shape) - 2))
  importance = explain.attribution.element_map(x * later)
  out = tmp_path / f"{kind}.png"
  explain.draw(x, importance, ["1/1"] * len(x), str(out), scale=1, kind=kind)
  picture = np.asarray(Image.open(out).convert("RGB")).astype(int)
  assert picture.shape[1::-1] == size
  red = picture[..., 0] - picture[..., 1]  # the overlay's map
  assert red.max() > 100
  if kind == "sequence":  # time along x: the first panel's overlay has no red in its first steps
    top = 14 + 2 + 2 * (picture.shape[0] - 14 - 2) // 3
    assert red[top : top + 3, 2:4].max() == 0 and red[top:, 4 : 2 + shape[1]].max() > 0


def test_gradients_fail_to_survive_parameter_randomization(digits_run):
  """Adebayo et al.'s check: as layers are re-initialised from the top, gradient maps decorrelate
  from the trained model's; the stages go from the output layer down."""
  explainer = explain.Explainer(str(digits_run), "gradient")
  rows, maps = explain.sanity(explainer, 30, batch_size=15, seed=0)
  assert [name for name, _ in rows] == ["Dense_1", "Dense_0", "Conv_1", "Conv_0"]
  assert maps.shape == (5, 8, 8, 8)  # trained + 4 stages, 8 images of 8x8
  for _, rho in rows:
    assert rho["abs"].shape == (30,) and (abs(rho["abs"]) <= 1 + 1e-9).all()
  assert rows[-1][1]["abs"].mean() < 0.5  # all re-initialised: little left of the trained map
  # the check can fail: the trained parameters themselves give the trained maps exactly
  reference, _ = explainer.maps(explainer.inputs[:30])
  again, _ = explainer.maps(explainer.inputs[:30], explainer.run.state.params)
  np.testing.assert_allclose(explain.attribution.spearman(abs(reference), abs(again)), 1.0)


def test_gradcam_cli_with_the_randomization_table(digits_run, tmp_path):
  out = tmp_path / "sanity.png"
  done = subprocess.run(
    [sys.executable, "-m", "jaxvision.tools.explain", f"--workdir={digits_run}",
     "--method=gradcam", "--num=4", "--faithfulness=20", "--steps=4", "--sanity=10",
     f"--sanity_out={out}", "--batch_size=10", "--scale=1", f"--record_dir={tmp_path}/rec"],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert done.returncode == 0, done.stderr[-2000:]
  table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
  assert table[0] == "| re-initialised down to | abs maps | signed maps |"
  assert [row.split(" | ")[0] for row in table[2:]] == [
    "| Dense_1",
    "| Dense_0",
    "| Conv_1",
    "| Conv_0",
  ]
  assert "deletion AUC over 20 eval images" in done.stdout
  assert Image.open(out).size == (8 * 10 + 2, 5 * 10 + 2)  # 5 rows (trained + 4) of 8 maps
  # the record: the printed means and ratio, the first and the last stage of the table
  made = json.loads((tmp_path / "rec" / "results.json").read_text())
  final = made["final"]
  number = r"(-?[0-9.]+)"
  for line in done.stdout.splitlines():
    if " AUC over " in line:
      curve = line.split()[0]
      method, random, ratio = re.search(
        rf"gradcam {number} \+- .* random order {number} \+- .* ratio {number}$", line
      ).groups()
      assert final[f"{curve}_auc"] == pytest.approx(float(method), abs=1e-4)
      assert final[f"random_{curve}_auc"] == pytest.approx(float(random), abs=1e-4)
      if curve == "deletion":
        assert final["deletion_ratio"] == pytest.approx(float(ratio), abs=5e-4)
  cells = [row.split(" | ") for row in table[2:]]
  assert final["sanity_signed_output"] == pytest.approx(float(cells[0][2].split()[0]), abs=1e-4)
  assert final["sanity_signed_all"] == pytest.approx(float(cells[-1][2].split()[0]), abs=1e-4)
  assert final["sanity_abs_all"] == pytest.approx(float(cells[-1][1].split()[0]), abs=1e-4)
  assert made["config"]["explain"] == {
    "method": "gradcam", "baseline": "min", "steps": 4, "seed": 0, "faithfulness": 20,
    "sanity": 10,
  }  # fmt: skip
  assert made["maps"] == {"layer": "Conv_1", "layer_positions": [8, 8]}
  assert "first eval examples: 20 for the areas, 10 for the randomization test" in made["dataset"]
  assert made["command"].startswith("python -m jaxvision.tools.explain --workdir=")


def test_integrated_gradients_agree_with_pair_saliency(digits_run):
  """The cross-check against PAIR's `saliency` core (framework-agnostic IntegratedGradients) on
  the same trained model, inputs, target and black baseline. saliency sums gradients at the
  points linspace(0, 1, steps) (both ends) and divides by steps, jaxvision at the midpoints: the
  two Riemann sums meet as steps grow."""
  import jax
  import saliency.core as saliency

  explainer = explain.Explainer(str(digits_run), "ig")
  x = explainer.inputs[:4]
  predicted = explainer.predict(x)
  steps = 512
  ours = explain.attribution.integrated_gradients(
    explainer._logits, x, predicted, explainer.baseline, steps=steps
  )
  logit = lambda image, k: explainer._logits(image)[:, k].sum()
  grad = jax.jit(jax.grad(logit), static_argnums=1)

  def call_model(batch, call_model_args=None, expected_keys=None):
    return {saliency.INPUT_OUTPUT_GRADIENTS: np.asarray(grad(batch, call_model_args))}

  for i in range(len(x)):
    theirs = saliency.IntegratedGradients().GetMask(
      x[i], call_model, int(predicted[i]),
      x_baseline=np.broadcast_to(explainer.baseline, x[i].shape).astype(np.float32),
      x_steps=steps, batch_size=steps,
    )  # fmt: skip
    scale = np.abs(theirs).max()
    assert scale > 0
    np.testing.assert_allclose(np.asarray(ours[i]), theirs, atol=0.003 * scale)
