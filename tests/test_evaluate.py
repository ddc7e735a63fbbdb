"""The eval-only entry and `load_run`: a finished run of each family re-evaluated from its
checkpoint gives the numbers its training run recorded; overrides and errors are one line."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from jaxvision import runs
from jaxvision.tools import evaluate
from jaxvision.train import trainer
from tests.test_inpaint import tiny_digits_gan_config
from tests.train.test_classifier import small_digits_config
from tests.train.test_gan_training import generated_probs
from tests.train.test_video_training import tiny_config as tiny_video_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def _cli(*args):
  return subprocess.run(
    [sys.executable, "-m", "jaxvision.tools.evaluate", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("clf")
  outcome = trainer.train_and_evaluate(small_digits_config(steps=10), str(workdir))
  return workdir, outcome.final


def test_a_classifier_run_reevaluates_to_its_recorded_numbers(classifier_run):
  workdir, final = classifier_run
  record = evaluate.evaluate(str(workdir))
  assert record["step"] == 10
  assert record["final"]["eval_accuracy"] == pytest.approx(final["eval_accuracy"], abs=1e-6)
  assert record["final"]["eval_loss"] == pytest.approx(final["eval_loss"], rel=1e-5)
  written = json.loads((workdir / "evaluations" / "step_10.json").read_text())
  assert written["final"] == record["final"] and written["metrics"][0]["name"] == "eval_accuracy"


def test_load_run_predicts_what_the_evaluator_scored(classifier_run):
  workdir, final = classifier_run
  run = runs.load_run(str(workdir))
  assert run.step == 10 and run.config.trainer == "classifier"
  eval_ = run.dataset().eval
  batch = eval_.get(np.arange(len(eval_)))
  logits = run.predict("predict")({"inputs": batch["inputs"]})
  accuracy = float(np.mean(np.argmax(logits, -1) == batch["targets"]))
  assert accuracy == pytest.approx(final["eval_accuracy"], abs=1e-6)
  with pytest.raises(ValueError, match="no prediction function 'generate'"):
    run.predict("generate")


@pytest.mark.slow  # 20-30 s; the classifier case runs by default
def test_a_gan_run_is_scored_by_an_evaluator_given_on_the_command_line(classifier_run, tmp_path):
  clf, _ = classifier_run
  config = tiny_digits_gan_config()
  trainer.train_and_evaluate(config, str(tmp_path))  # no classifier: samples only
  assert json.loads((tmp_path / "results.json").read_text())["final"] == {}
  done = _cli(
    f"--workdir={tmp_path}",
    f"--config.evaluators.eval.classifier_workdir={clf}",
    "--config.evaluators.eval.num_samples=64",
    "--config.evaluators.eval.batch_size=32",
  )
  assert done.returncode == 0, done.stderr
  record = json.loads((tmp_path / "evaluations" / "step_2.json").read_text())
  final = record["final"]
  assert final["eval_fid"] > final["eval_real_fid"] >= 0
  # the class shares of the 64 samples asked for on the command line, recomputed here
  shares = np.bincount(generated_probs(tmp_path, clf, 64).argmax(1), minlength=10) / 64
  assert final["eval_min_class_share"] == min(shares), shares
  assert final["eval_max_class_share"] == max(shares), shares
  assert record["evaluators"]["eval"]["classifier_workdir"] == str(clf)
  assert (tmp_path / "samples" / "step_2.png").is_file()


@pytest.mark.slow  # 20-30 s; the classifier case runs by default
def test_a_video_run_reevaluates_to_its_recorded_numbers(tmp_path, mnist_path):
  del mnist_path  # skips without the offline digits
  outcome = trainer.train_and_evaluate(tiny_video_config(steps=4), str(tmp_path))
  record = evaluate.evaluate(str(tmp_path))
  for key, value in outcome.final.items():
    assert record["final"][key] == pytest.approx(value, rel=1e-5), key


def test_bad_arguments_are_one_line(classifier_run, tmp_path):
  workdir, _ = classifier_run
  for args, code, text in [
    ((), 2, "--workdir=W is required"),
    ((f"--workdir={workdir}", "--config.optimizer.learning_rate=1"), 2, "only how a run"),
    ((f"--workdir={workdir}", "--config.evaluators.nope.x=1"), 2, "no 'nope'"),
    ((f"--workdir={tmp_path / 'missing'}",), 1, "not a jaxvision workdir"),
  ]:
    done = _cli(*args)
    assert done.returncode == code, (args, done.stderr)
    assert done.stderr.strip().count("\n") == 0 and text in done.stderr, done.stderr
