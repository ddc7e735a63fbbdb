"""Distillation: a student trained on a teacher run's soft targets matches them (far better than
the same student trained on the labels); a teacher of other classes is a one-line error."""

import jax
import numpy as np
import pytest

from experiments import digits_cnn, mnist1d_baselines
from jaxvision import runs
from jaxvision.config_dict import ConfigError
from jaxvision.train import trainer


def _config(steps=200, **distill):
  config = digits_cnn.get_config()
  config.num_train_steps = config.eval_every_steps = config.checkpoint.every_steps = steps
  config.schedule.warmup_steps = 5
  config.distill.update(distill)
  return config


def _soft(workdir, x, temperature):
  run = runs.load_run(str(workdir))
  return np.asarray(jax.nn.softmax(run.predict("predict")({"inputs": x}) / temperature))


def test_a_student_matches_its_teachers_soft_targets(tmp_path):
  trainer.train_and_evaluate(_config(), str(tmp_path / "teacher"))
  student = _config(teacher=str(tmp_path / "teacher"), temperature=4.0)
  student.seed = 1  # another initialisation of the same network
  trainer.train_and_evaluate(student, str(tmp_path / "student"))
  alone = _config()
  alone.seed = 1
  trainer.train_and_evaluate(alone, str(tmp_path / "alone"))
  x = runs.load_run(str(tmp_path / "teacher")).dataset().eval.get(np.arange(200))["inputs"]
  teacher = _soft(tmp_path / "teacher", x, 4.0)
  kl = lambda p, q: float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))
  distilled = kl(teacher, _soft(tmp_path / "student", x, 4.0))
  labels_only = kl(teacher, _soft(tmp_path / "alone", x, 4.0))
  assert distilled < 0.5 * labels_only, (distilled, labels_only)


def test_a_teacher_of_other_inputs_is_a_config_error(tmp_path):
  other = mnist1d_baselines.get_config("logistic")
  other.num_train_steps = other.eval_every_steps = other.checkpoint.every_steps = 2
  other.schedule.warmup_steps = 0
  trainer.train_and_evaluate(other, str(tmp_path / "teacher"))
  config = _config(steps=6, teacher=str(tmp_path / "teacher"))
  with pytest.raises(ConfigError, match=r"must be a classifier of the same inputs \(8, 8, 1\)"):
    trainer.train_and_evaluate(config, str(tmp_path / "student"))
