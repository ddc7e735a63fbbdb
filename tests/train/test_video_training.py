"""The video trainer and evaluator on generated Moving MNIST (offline digits), and video
classification through the unchanged classifier trainer: loss goes down, resume is exact, 1 and 8
devices agree, the evaluator's numbers match direct computation, GIFs and rollouts are written.

Tiny sizes throughout: 32x32 frames (the smallest above the 28-pixel digit that the encoder's
stride 4 divides), 6 frames, 1 digit, batch 8, a predictor of 4/8 encoder and 8 ConvLSTM channels.
"""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from experiments import moving_mnist_classify, moving_mnist_convlstm
from jaxvision import data, models, optim, parallel, runs, video_metrics
from jaxvision.evaluators import common as evaluators_lib
from jaxvision.evaluators import video as video_evaluator
from jaxvision.tasks import video
from jaxvision.train import loop, trainer
from jaxvision.workdir import restore_latest
from tests.conftest import MNIST_FILES, REPO, mnist_dir
from tests.train.test_classifier import read_jsonl

# Two minutes of ConvLSTM trainings on 2 cores: CI runs them after the default suite. The
# default suite has the evaluator under pmap and the config errors here, and a tiny video run
# stopped by Ctrl-C in tests/train/test_loop_contract.py.
slow = pytest.mark.slow

FRAMES, OBSERVED, SIZE = 6, 3, 32


def tiny_config(steps: int = 8, num_devices: int = 1, strategy: str = "jit"):
  """The predict experiment, shrunk: 8 clips of 6 frames of 32x32 per step."""
  config = moving_mnist_convlstm.get_config()
  config.data.update(
    data_dir=str(mnist_dir()),
    size=SIZE,
    frames=FRAMES,
    observed=OBSERVED,
    digits_per_clip=1,
    batch_size=8,
    eval_batch_size=16,
    num_train=256,
    num_eval=24,  # one full eval batch and one padded with 8 empty clips
  )
  config.model.encoder, config.model.hidden = (4, 8), (8,)
  config.optimizer.learning_rate = 1e-2
  config.schedule.warmup_steps = 1
  config.num_train_steps = steps
  config.log_every_steps = 2
  config.eval_every_steps = config.checkpoint.every_steps = 4
  config.checkpoint.keep = 10
  config.evaluators.eval.update(gif_clips=3, gif_scale=1)
  config.parallel.update(num_devices=num_devices, strategy=strategy)
  return config


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  """An uninterrupted 8-step run (evaluated at steps 4 and 8), shared by the tests below."""
  if not all((mnist_dir() / f).is_file() for f in MNIST_FILES):
    pytest.skip(f"offline MNIST IDX files not found in {mnist_dir()} (set JAXVISION_MNIST_DIR)")
  workdir = tmp_path_factory.mktemp("video") / "straight"
  outcome = trainer.train_and_evaluate(tiny_config(steps=8), str(workdir))
  return workdir, outcome


@slow
def test_training_reduces_the_loss_and_writes_results_and_gifs(straight_run):
  workdir, outcome = straight_run
  assert (outcome.status, outcome.step) == ("finished", 8)
  rows = read_jsonl(workdir / "metrics.jsonl")
  losses = [r["train_loss"] for r in rows if "train_loss" in r]
  assert len(losses) == 4 and np.isfinite(losses).all()
  # the BCE falls at every logged step, towards the dark background
  assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
  assert losses[-1] < 0.85 * losses[0], losses
  evals = [r["eval_mse"] for r in rows if "eval_mse" in r]
  assert len(evals) == 2 and evals[1] < 0.9 * evals[0], evals  # the rollout improves too
  final = outcome.final
  assert final["eval_mse_ratio"] == pytest.approx(final["eval_copy_last_mse"] / final["eval_mse"])
  # The copy-last-frame baseline, computed here from the 24 eval clips (no padding counted).
  clips = data.load_dataset(tiny_config().data).eval.get(np.arange(24))["inputs"]  # [24, T, ...]
  copy_last_mse = np.mean((clips[:, OBSERVED - 1 : OBSERVED] - clips[:, OBSERVED:]) ** 2)
  assert final["eval_copy_last_mse"] == pytest.approx(float(copy_last_mse), rel=1e-5)
  results = json.loads((workdir / "results.json").read_text())
  assert results["final"] == final
  declared = {m["name"]: m["better"] for m in results["metrics"]}
  assert declared["eval_mse"] == "lower" and declared["eval_ssim"] == "higher"
  assert declared["eval_mse_ratio"] == "higher" and results["model"]["name"] == "convlstm_cdna"
  samples = workdir / "samples"
  assert sorted(p.name for p in samples.iterdir()) == ["step_4.gif", "step_8.gif"]
  gif = Image.open(samples / "step_8.gif")
  # 3 rows (clips) x 3 panels (observed | predicted | true) of 32x32 with a 2-pixel border
  assert gif.size == (3 * (SIZE + 2) + 2, 3 * (SIZE + 2) + 2) and gif.n_frames <= FRAMES


@slow
def test_halt_then_resume_is_bit_identical_to_an_uninterrupted_run(straight_run, tmp_path):
  straight, outcome = straight_run
  config = tiny_config(steps=8)
  halted = trainer.train_and_evaluate(config, str(tmp_path), loop.Options(halt_after_steps=3))
  assert (halted.status, halted.step) == ("halted", 3)
  resumed = trainer.train_and_evaluate(config, str(tmp_path))
  assert (resumed.status, resumed.step) == ("finished", 8)
  a, _ = restore_latest(str(straight))
  b, meta = restore_latest(str(tmp_path))
  assert meta["step"] == 8
  for x, y in zip(_leaves(a), _leaves(b), strict=True):  # params, optimizer state, step
    np.testing.assert_array_equal(x, y)
  train = lambda w: [r for r in read_jsonl(w / "metrics.jsonl") if "train_loss" in r]
  assert train(straight) == train(tmp_path)
  assert resumed.final == outcome.final


@slow
def test_one_device_eight_devices_and_pmap_agree(tmp_path, mnist_path):
  params, finals = [], []
  for num_devices, strategy in [(1, "jit"), (0, "jit"), (0, "pmap")]:
    config = tiny_config(steps=4, num_devices=num_devices, strategy=strategy)
    config.evaluators.eval.gif_clips = 0
    workdir = tmp_path / f"{num_devices}_{strategy}"
    outcome = trainer.train_and_evaluate(config, str(workdir))
    assert outcome.status == "finished"
    params.append(_leaves(restore_latest(str(workdir))[0]["params"]))
    finals.append(outcome.final)
  for other in params[1:]:
    for x, y in zip(params[0], other, strict=True):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  for other in finals[1:]:
    for key, value in finals[0].items():
      assert other[key] == pytest.approx(value, rel=1e-5), key


@pytest.mark.parametrize("strategy", [pytest.param("jit", marks=slow), "pmap"])
def test_evaluator_matches_direct_metrics_and_writes_the_gif(strategy, tmp_path, mnist_path):
  config = tiny_config(num_devices=0, strategy=strategy)
  dataset = data.load_dataset(config.data)
  strat = parallel.create_strategy(config.parallel)
  model = models.create_model(config.model)
  tx, _ = optim.create_optimizer(config.optimizer, config.schedule, 10)
  clips = dataset.eval.get(np.arange(len(dataset.eval)))  # all 24 clips
  state = video.create_train_state(model, tx, clips["inputs"][:1], jax.random.key(0))
  context = evaluators_lib.Context(
    predict_fns={"predict": video.predict},
    dataset=dataset,
    strategy=strat,
    workdir=str(tmp_path),
    key=jax.random.key(1),
    batch_size=16,
  )
  (evaluator,) = evaluators_lib.from_config(config.evaluators, context)
  assert isinstance(evaluator, video_evaluator.Evaluator)
  out = evaluator.run(strat.place_state(state), step=7)

  num_predict = FRAMES - OBSERVED
  copy_last = video_metrics.copy_last_metrics(clips["inputs"], num_predict)  # each [24, P]
  assert out["eval_copy_last_mse"] == pytest.approx(float(copy_last["mse"].mean()), rel=1e-5)
  assert out["eval_copy_last_ssim"] == pytest.approx(float(copy_last["ssim"].mean()), rel=1e-5)
  logits = jax.jit(video.predict)(state, {"inputs": clips["inputs"], "targets": clips["targets"]})
  model_metrics = video_metrics.prediction_metrics(jax.nn.sigmoid(logits), clips["targets"])
  assert out["eval_mse"] == pytest.approx(float(model_metrics["mse"].mean()), rel=1e-5)
  assert out["eval_ssim"] == pytest.approx(float(model_metrics["ssim"].mean()), rel=1e-4)
  assert {spec.name for spec in evaluator.metrics} == set(out)

  gif = Image.open(tmp_path / "samples" / "step_7.gif")
  frames = []
  for i in range(gif.n_frames):
    gif.seek(i)
    frames.append(np.asarray(gif.convert("L"), np.float32) / 255)
  # The observed panel of the first clip (top left) plays the true context frames.
  first = frames[0][2 : 2 + SIZE, 2 : 2 + SIZE]
  np.testing.assert_allclose(first, clips["inputs"][0, 0, ..., 0], atol=1 / 255 + 1e-6)


def test_config_errors_name_the_key(tmp_path):
  config = tiny_config()
  config.loss = "l1"
  with pytest.raises(ValueError, match="config.loss='l1'"):
    trainer.train_and_evaluate(config, str(tmp_path / "a"))
  config = tiny_config()
  config.data.task = "classify"
  with pytest.raises(ValueError, match="trainer='classifier'"):
    trainer.train_and_evaluate(config, str(tmp_path / "b"))
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
  with pytest.raises(ValueError, match="takes one of"):
    moving_mnist_convlstm.get_config("huge")
  standard = moving_mnist_convlstm.get_config("standard")
  assert (standard.data.size, standard.data.frames, standard.data.digits_per_clip) == (64, 20, 2)


@slow
def test_sample_cli_writes_a_rollout_gif_and_strip(straight_run, tmp_path):
  workdir, _ = straight_run
  for out in ("rollout.gif", "strip.png"):
    done = subprocess.run(
      [
        sys.executable,
        "-m",
        "jaxvision.tools.sample",
        f"--workdir={workdir}",
        "--clips=2",
        "--scale=1",
        f"--out={tmp_path / out}",
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "(step 8)" in done.stdout
  gif = Image.open(tmp_path / "rollout.gif")
  assert gif.size == (3 * (SIZE + 2) + 2, 2 * (SIZE + 2) + 2)  # 2 clips x 3 panels
  # The same checkpoint and eval clips as the run's last evaluation GIF (3 clips): its top rows.
  evaluated = Image.open(workdir / "samples" / "step_8.gif")
  for t in (FRAMES - 1, OBSERVED):  # predicted frames
    gif.seek(t)
    evaluated.seek(t)
    mine = np.asarray(gif.convert("L"), np.int32)
    theirs = np.asarray(evaluated.convert("L"), np.int32)[: mine.shape[0]]
    assert np.abs(mine - theirs).max() <= 1
  # 2 clips, each a row of the true clip and a row of its predictions; 6 frames per row
  assert Image.open(tmp_path / "strip.png").size == (6 * (SIZE + 2) + 2, 4 * (SIZE + 2) + 2)


@slow
@pytest.mark.parametrize("variant", ["clips", "single_frame"])
def test_video_classification_runs_on_the_classifier_trainer(variant, tmp_path, mnist_path):
  config = moving_mnist_classify.get_config(variant)
  config.data.update(
    data_dir=str(mnist_path),
    size=SIZE,
    frames=4,
    digits_per_clip=1,
    batch_size=8,
    eval_batch_size=16,
    num_train=256,
    num_eval=40,
  )
  config.model.encoder, config.model.hidden = (4, 8), (8,)
  config.num_train_steps = 6
  config.log_every_steps = config.eval_every_steps = config.checkpoint.every_steps = 3
  config.schedule.warmup_steps = 1
  outcome = trainer.train_and_evaluate(config, str(tmp_path))
  assert (outcome.status, outcome.step) == ("finished", 6)
  # The accuracy of the final checkpoint on the 40 eval clips (none of the padding), computed here.
  run = runs.load_run(str(tmp_path))
  clips = run.dataset().eval.get(np.arange(40))
  logits = run.predict("predict")({"inputs": clips["inputs"]})
  accuracy = float(np.mean(np.argmax(logits, -1) == clips["targets"]))
  assert outcome.final["eval_accuracy"] == pytest.approx(accuracy, abs=1e-6)
  # 6 steps from a random init: still near chance over 4 balanced classes
  assert abs(outcome.final["eval_loss"] - np.log(4)) < 0.2
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["model"]["name"] == "video_classifier" and results["model"]["hidden"] == [8]
  assert ("first frame only (control)" in results["dataset"]) == (variant == "single_frame")
  state, _ = restore_latest(str(tmp_path))
  kernel = state["params"]["encoder"]["Conv_0"]["kernel"]
  assert kernel.shape == (3, 3, 1, 4)


def test_free_running_training_is_scored_on_what_the_rollout_predicts():
  """teacher_forcing=False trains on the evaluation's own rollout: the step's loss is the loss
  of `predict`'s logits; teacher forcing gives another loss and other gradients."""
  config = tiny_config()
  model = models.create_model(config.model)
  tx = optim.create_optimizer(config.optimizer, config.schedule, 8)[0]
  clips = jax.random.uniform(jax.random.key(1), (2, FRAMES, SIZE, SIZE, 1))
  batch = {"inputs": clips, "targets": clips[:, OBSERVED:]}
  state = video.create_train_state(model, tx, clips[:1], jax.random.key(0))
  rollout_loss = video.frame_loss(video.predict(state, batch), batch["targets"], "bce").mean()
  steps = {
    forced: video.train_step(
      state, batch, jax.random.key(2), learning_rate_fn=lambda s: 0.1, teacher_forcing=forced
    )
    for forced in (False, True)
  }
  np.testing.assert_allclose(steps[False][1]["train_loss"], rollout_loss, rtol=1e-6)
  assert abs(float(steps[True][1]["train_loss"]) - float(rollout_loss)) > 1e-4
  assert not np.allclose(steps[True][1]["grad_norm"], steps[False][1]["grad_norm"])
  with config.ignore_type():
    config.teacher_forcing = "no"
  with pytest.raises(ValueError, match="config.teacher_forcing='no' must be True or False"):
    video.validate(config, None)
