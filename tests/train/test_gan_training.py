"""The GAN trainer on real digits: both networks learn, metrics come out, resume is exact."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from experiments import digits_cnn, mnist_dcgan
from jaxvision import data, runs
from jaxvision.evaluators.features import ClassifierFeatures
from jaxvision.tasks import gan
from jaxvision.train import loop, trainer
from jaxvision.workdir import restore_latest
from tests.conftest import REPO
from tests.train.test_classifier import read_jsonl


def digits_gan_config(classifier_workdir="", steps=10):
  config = mnist_dcgan.get_config("idx")
  config.data = data.data_config("digits", normalize="symmetric", batch_size=64)
  config.generator.features = (32, 16)  # 2x2 -> 4x4 -> 8x8
  config.discriminator.features = (16, 32)
  config.z_dim = 16
  config.ema_decay = 0.9
  config.num_train_steps = steps
  config.log_every_steps = 5
  config.eval_every_steps = 5
  config.checkpoint.every_steps = 5
  config.evaluators.eval.classifier_workdir = classifier_workdir
  config.evaluators.eval.num_samples = 360
  config.evaluators.eval.batch_size = 120
  config.evaluators.eval.grid_size = 16
  return config


def generated_probs(gan_workdir, classifier_workdir, num: int) -> np.ndarray:
  """The feature classifier's class probabilities [num, K] of the GAN run's samples from the
  latents its evaluator draws (the first `num` from the run's eval key), computed here."""
  run = runs.load_run(str(gan_workdir))
  _, _, eval_key = trainer.seed_keys(run.config.seed)
  z = jax.random.normal(jax.random.split(eval_key, 3)[1], (num, run.config.z_dim))  # [N, z_dim]
  images = run.predict("generate")({"z": np.asarray(z)})
  return ClassifierFeatures(str(classifier_workdir))(images)[1]


def test_steps_change_both_networks_and_keep_losses_finite(tmp_path):
  config = digits_gan_config()
  generator, discriminator = gan.create_models(config, (8, 8, 1))
  from jaxvision import optim

  tx, _ = optim.create_optimizer(config.g_optimizer, config.schedule, 10)
  state = gan.create_gan_state(generator, discriminator, tx, tx, 16, (8, 8, 1), jax.random.key(0))
  step = jax.jit(
    lambda s, b, k: gan.train_step(s, b, k, z_dim=16, loss="non_saturating", ema_decay=0.9)
  )
  real = {"inputs": np.random.default_rng(0).uniform(-1, 1, (64, 8, 8, 1)).astype(np.float32)}
  new, metrics = step(state, real, jax.random.key(1))
  for _ in range(3):
    new, metrics = step(new, real, jax.random.key(1))
  changed = lambda a, b: any(
    not np.allclose(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  )
  assert changed(state.g_params, new.g_params) and changed(state.d_params, new.d_params)
  assert changed(state.g_batch_stats, new.g_batch_stats)
  assert changed(state.ema_params, new.ema_params) and changed(new.ema_params, new.g_params)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert int(new.step) == 4


def test_the_class_loss_trains_the_head_on_real_labels_and_reaches_the_generator():
  """AC-GAN on the 8x8 digits: D's class cross-entropy on real images falls from chance, and
  the weight of the class loss changes the generator's update (its gradient reaches G)."""
  config = digits_gan_config()
  config.conditional, config.class_loss_weight = True, 1.0
  generator, discriminator = gan.create_models(config, (8, 8, 1), num_classes=10)
  from jaxvision import optim

  config.d_optimizer.learning_rate = 2e-3
  tx, _ = optim.create_optimizer(config.d_optimizer, config.schedule, 100)
  state = gan.create_gan_state(generator, discriminator, tx, tx, 16, (8, 8, 1), jax.random.key(0))
  assert "class_head" in state.d_params

  def step_fn(weight):
    return jax.jit(
      lambda s, b, k: gan.train_step(
        s, b, k, z_dim=16, loss="hinge", ema_decay=0.0, conditional=True, num_classes=10,
        class_loss_weight=weight,
      )
    )  # fmt: skip

  digits = data.load_dataset(config.data).train
  batch = lambda i: digits.get(np.arange(64 * i, 64 * i + 64) % len(digits))
  step = step_fn(1.0)
  s, first = step(state, batch(0), jax.random.key(1))
  assert {"d_class_loss", "g_class_loss"} <= set(first)
  assert abs(float(first["d_class_loss"]) - np.log(10)) < 0.5  # chance at the start
  for i in range(1, 40):
    s, metrics = step(s, batch(i), jax.random.key(1))
  assert float(metrics["d_class_loss"]) < 0.5 * float(first["d_class_loss"]), metrics
  light, _ = step_fn(1e-6)(state, batch(0), jax.random.key(1))
  heavy, _ = step_fn(1.0)(state, batch(0), jax.random.key(1))
  differ = [
    not np.allclose(a, b, atol=1e-7)
    for a, b in zip(jax.tree.leaves(light.g_params), jax.tree.leaves(heavy.g_params), strict=True)
  ]
  assert any(differ)
  with pytest.raises(ValueError, match="needs a conditional GAN"):
    gan.train_step(
      state, batch(0), jax.random.key(1), z_dim=16, loss="hinge", ema_decay=0.0,
      class_loss_weight=1.0,
    )  # fmt: skip


def test_a_class_loss_without_conditional_is_a_config_error():
  from jaxvision.config_dict import ConfigError

  config = digits_gan_config()
  config.class_loss_weight = 1.0
  with pytest.raises(ConfigError, match="needs config.conditional=True"):
    gan.validate(config, None)


def test_lazy_r1_is_r1_weighted_by_its_interval_on_its_steps_and_off_between():
  config = digits_gan_config()
  config.discriminator.batch_norm = False  # R1 wants a D that treats images independently
  generator, discriminator = gan.create_models(config, (8, 8, 1))
  from jaxvision import optim

  tx, _ = optim.create_optimizer(config.g_optimizer, config.schedule, 10)
  state = gan.create_gan_state(generator, discriminator, tx, tx, 16, (8, 8, 1), jax.random.key(0))
  real = {"inputs": np.random.default_rng(0).uniform(-1, 1, (64, 8, 8, 1)).astype(np.float32)}
  common = dict(z_dim=16, loss="non_saturating", ema_decay=0.9)

  def step(state, **options):
    return jax.jit(lambda s, b, k: gan.train_step(s, b, k, **common, **options))(
      state, real, jax.random.key(1)
    )

  def assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)

  lazy, lazy_metrics = step(state, r1_gamma=0.5, r1_every=4)  # step 0: R1, weight 4 x 0.5
  eager, eager_metrics = step(state, r1_gamma=2.0)
  plain, _ = step(state)
  assert_same(lazy.d_params, eager.d_params)
  np.testing.assert_allclose(lazy_metrics["r1"], 4 * eager_metrics["r1"], rtol=1e-5)
  assert any(
    not np.allclose(x, y)
    for x, y in zip(jax.tree.leaves(lazy.d_params), jax.tree.leaves(plain.d_params), strict=True)
  )
  lazy2, lazy2_metrics = step(lazy, r1_gamma=0.5, r1_every=4)  # step 1: no R1
  plain2, _ = step(lazy)
  assert_same(lazy2.d_params, plain2.d_params)
  assert float(lazy2_metrics["r1"]) == 0.0


def test_the_task_chooses_lazy_r1_steps_on_the_host_with_the_same_numbers():
  from jaxvision.tasks.base import DataInfo

  config = digits_gan_config()
  config.discriminator.batch_norm = False
  config.r1_gamma, config.r1_every = 0.5, 2
  task = gan.Task(config, DataInfo((8, 8, 1), {"num_classes": 10}))
  assert [task.step_options(s) for s in range(3)] == [
    {"with_r1": True},
    {"with_r1": False},
    {"with_r1": True},
  ]
  real = {"inputs": np.random.default_rng(0).uniform(-1, 1, (64, 8, 8, 1)).astype(np.float32)}
  on_device = host = task.init_state(jax.random.key(0))
  for s in range(3):  # lax.cond inside the step against one program per kind of step
    on_device, _ = jax.jit(task.train_step)(on_device, real, jax.random.key(1))
    options = task.step_options(s)
    host, metrics = jax.jit(lambda st, b, k, o=options: task.train_step(st, b, k, **o))(
      host, real, jax.random.key(1)
    )
    assert (float(metrics["r1"]) > 0) == (s % 2 == 0)
  for x, y in zip(jax.tree.leaves(on_device.d_params), jax.tree.leaves(host.d_params), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # ~90 s; the GAN's cheap forms: loop contract, equivalence, evaluate
def test_gan_run_metrics_samples_resume_and_sample_cli(tmp_path):
  # a quick classifier on the same data provides the features of the metrics
  clf = digits_cnn.get_config()
  clf.num_train_steps, clf.log_every_steps, clf.eval_every_steps = 60, 20, 60
  clf.schedule.warmup_steps = 5
  clf.optimizer.learning_rate = 3e-3
  trainer.train_and_evaluate(clf, str(tmp_path / "clf"))

  config = digits_gan_config(str(tmp_path / "clf"))
  outcome = trainer.train_and_evaluate(config, str(tmp_path / "straight"))
  assert (outcome.status, outcome.step) == ("finished", 10)
  final = outcome.final
  for key in (
    "eval_fid",
    "eval_kid",
    "eval_inception_score",
    "eval_min_class_share",
    "eval_real_fid",
    "eval_real_inception_score",
  ):
    assert np.isfinite(final[key]), key
  # The score is that of the final generator's 360 samples, recomputed here as
  # exp(H(mean p) - mean H(p)).
  probs = generated_probs(tmp_path / "straight", tmp_path / "clf", 360)
  entropy = lambda p: -np.sum(p * np.log(np.maximum(p, 1e-30)), -1)
  score = np.exp(entropy(probs.mean(0)) - entropy(probs).mean())
  assert final["eval_inception_score"] == pytest.approx(score, rel=1e-3)
  # real digits look varied and confident to the classifier; 10 steps of GAN training do not
  assert final["eval_real_inception_score"] > 4.0
  assert final["eval_real_inception_score"] > final["eval_inception_score"]
  assert final["eval_fid"] > final["eval_real_fid"]
  assert sorted(os.listdir(tmp_path / "straight" / "samples")) == ["step_10.png", "step_5.png"]
  results = json.loads((tmp_path / "straight" / "results.json").read_text())
  assert "not to Inception-v3" in results["metrics_caveat"]
  assert results["final"] == final
  declared = {m["name"]: m["better"] for m in results["metrics"]}
  assert declared["eval_fid"] == "lower" and declared["eval_inception_score"] == "higher"

  halted = trainer.train_and_evaluate(
    config, str(tmp_path / "resumed"), loop.Options(halt_after_steps=5)
  )
  assert (halted.status, halted.step, halted.final) == ("halted", 5, {})
  trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
  a, _ = restore_latest(str(tmp_path / "straight"))
  b, meta = restore_latest(str(tmp_path / "resumed"))
  assert meta["step"] == 10 and meta["data_info"]["input_shape"] == [8, 8, 1]
  for name in ("g_params", "d_params", "ema_params", "g_opt_state", "d_batch_stats"):
    for x, y in zip(jax.tree.leaves(a[name]), jax.tree.leaves(b[name]), strict=True):
      np.testing.assert_array_equal(x, y)
  train = lambda w: [r for r in read_jsonl(tmp_path / w / "metrics.jsonl") if "d_loss" in r]
  assert train("straight") == train("resumed")

  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "jaxvision.tools.sample",
      f"--workdir={tmp_path / 'straight'}",
      "--num=16",
      f"--out={tmp_path / 'grid.png'}",
      "--scale=1",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr
  assert Image.open(tmp_path / "grid.png").size == (4 * 10 + 2, 4 * 10 + 2)  # 8px + 2px padding
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "jaxvision.tools.sample",
      f"--workdir={tmp_path / 'straight'}",
      "--num=4",
      "--interpolate",
      "--points=3",
      "--frames_between=4",
      f"--out={tmp_path / 'walk.gif'}",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr
  assert Image.open(tmp_path / "walk.gif").n_frames == 12
