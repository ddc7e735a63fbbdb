"""The classifier trainer end to end, on real data (sklearn digits, offline MNIST) and 8 devices."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxvision import config_lib, models, optim
from jaxvision import workdir as workdir_lib
from jaxvision.tasks import classification as classifier
from jaxvision.train import loop, trainer, window
from jaxvision.train.loop import steps_this_call
from tests.conftest import REPO

sys.path.insert(0, str(REPO))
from experiments import digits_cnn, mnist_cnn  # noqa: E402


def small_digits_config(steps=20):
  config = digits_cnn.get_config()
  config.num_train_steps = steps
  config.log_every_steps = 5
  config.eval_every_steps = 10
  config.checkpoint.every_steps = 10
  config.schedule.warmup_steps = 5
  config.optimizer.learning_rate = 3e-3
  config.augment.max_shift = 1  # exercises the per-step RNG as well as dropout
  return config


def halt_after(steps):
  return loop.Options(halt_after_steps=steps)


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def final_params(workdir):
  mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  restored = mngr.restore(
    mngr.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore())
  )
  mngr.close()
  return restored.state["params"]


def assert_same_params(workdir_a, workdir_b):
  """The latest checkpoints of two runs hold bit-identical parameters."""
  a, b = final_params(workdir_a), final_params(workdir_b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def run_cli(*args, cwd=REPO):
  return subprocess.run(
    [sys.executable, "-m", "jaxvision.main", *args],
    cwd=cwd,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.mark.slow  # ~18 s; the CLI fault tests' cheap forms cover resume and SIGTERM by default
def test_cli_overrides_results_and_resume(tmp_path):
  workdir = tmp_path / "run"
  args = [
    "--config=experiments/digits_cnn.py",
    f"--workdir={workdir}",
    "--config.num_train_steps=30",
    "--config.log_every_steps=10",
    "--config.eval_every_steps=20",
    "--config.checkpoint.every_steps=10",
    "--config.optimizer.learning_rate=0.003",
    "--config.schedule.warmup_steps=5",
  ]
  out = run_cli(*args)
  assert out.returncode == 0, out.stderr
  assert "steps/s" in out.stdout and "ETA" in out.stdout
  results = json.loads((workdir / "results.json").read_text())
  assert results["strategy"] == "jit" and results["processes"] == 1
  assert results["model"]["name"] == "convnet" and results["model"]["features"] == [32, 64]
  assert {m["name"] for m in results["metrics"]} == {"eval_accuracy", "eval_loss"}
  assert results["config"]["optimizer"]["learning_rate"] == 0.003
  assert results["config_file"] == "experiments/digits_cnn.py"
  assert "--config.optimizer.learning_rate=0.003" in results["command"]
  assert 0.5 < results["final"]["eval_accuracy"] <= 1.0
  assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "20", "30"]
  # The same command again resumes from step 30: no training, same final numbers.
  again = run_cli(*args)
  assert again.returncode == 0, again.stderr
  assert "Resumed" in again.stdout and "steps/s" not in again.stdout
  assert json.loads((workdir / "results.json").read_text())["final"] == results["final"]


@pytest.mark.parametrize(
  "override, message",
  [
    ("--config.optimizer.lr=3", "unknown config key 'lr' in --config.optimizer.lr=3"),
    ("--config.num_train_steps=many", "--config.num_train_steps=many"),
  ],
)
def test_cli_bad_override_is_one_line_error_before_compute(tmp_path, override, message):
  out = run_cli("--config=experiments/digits_cnn.py", f"--workdir={tmp_path / 'w'}", override)
  assert out.returncode == 2  # usage
  assert out.stderr.strip().count("\n") == 0 and message in out.stderr
  assert not (tmp_path / "w").exists()


def test_cli_help_lists_flags():
  out = run_cli("--help")
  assert out.returncode == 0, out.stderr
  for flag in ("--config", "--workdir", "--halt_after_steps", "--allow_config_change"):
    assert flag in out.stdout


def test_loss_decreases_and_metric_files_parse(tmp_path, caplog):
  from tensorboard.backend.event_processing import event_accumulator

  config = small_digits_config(steps=40)
  with jax.log_compiles(True), caplog.at_level("WARNING"):
    outcome = trainer.train_and_evaluate(config, str(tmp_path))
  assert outcome.status == "finished" and outcome.step == 40
  final = outcome.final
  compiles = [r for r in caplog.messages if r.startswith("Compiling jit(train_step)")]
  assert len(compiles) == 1, compiles  # 40 steps, one compilation
  records = read_jsonl(tmp_path / "metrics.jsonl")
  train = [r for r in records if "train_loss" in r]
  assert [r["step"] for r in train] == [5, 10, 15, 20, 25, 30, 35, 40]
  assert train[-1]["train_loss"] < 0.5 * train[0]["train_loss"]
  assert final["eval_accuracy"] > 0.8
  assert records[-1] == {"step": 40, **final}
  acc = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
  acc.Reload()
  assert {"train_loss", "eval_accuracy", "learning_rate"} <= set(acc.Tags()["scalars"])
  tb_losses = [e.value for e in acc.Scalars("train_loss")]
  np.testing.assert_allclose(tb_losses, [r["train_loss"] for r in train], rtol=1e-6)


def test_offline_mnist_loss_decreases(tmp_path, mnist_path):
  config = mnist_cnn.get_config("idx")
  config.data.data_dir = str(mnist_path)
  config.num_train_steps = 30
  config.schedule.warmup_steps = 5
  config.log_every_steps = 10
  config.eval_every_steps = 30
  trainer.train_and_evaluate(config, str(tmp_path))
  train = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "train_loss" in r]
  assert train[-1]["train_loss"] < 0.6 * train[0]["train_loss"]


@pytest.mark.slow  # ~18 s; the CLI fault tests' cheap forms cover resume and SIGTERM by default
def test_resume_is_identical_to_uninterrupted_run(tmp_path):
  config = small_digits_config(steps=20)
  trainer.train_and_evaluate(config, str(tmp_path / "straight"))
  halted = trainer.train_and_evaluate(config, str(tmp_path / "resumed"), halt_after(10))
  assert (halted.status, halted.step, halted.final) == ("halted", 10, {})
  assert not (tmp_path / "resumed" / "results.json").exists()
  trainer.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert_same_params(tmp_path / "straight", tmp_path / "resumed")
  assert read_jsonl(tmp_path / "straight" / "metrics.jsonl") == read_jsonl(
    tmp_path / "resumed" / "metrics.jsonl"
  )


def test_one_device_and_eight_devices_agree(tmp_path):
  assert jax.device_count() == 8
  config = small_digits_config(steps=10)
  config.parallel.num_devices = 1
  one = trainer.train_and_evaluate(config, str(tmp_path / "one")).final
  config.parallel.num_devices = 0
  eight = trainer.train_and_evaluate(config, str(tmp_path / "eight")).final
  for a, b in zip(
    jax.tree.leaves(final_params(tmp_path / "one")),
    jax.tree.leaves(final_params(tmp_path / "eight")),
    strict=True,
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert abs(one["eval_accuracy"] - eight["eval_accuracy"]) < 0.01


def test_steps_per_call_matches_per_step_loop(tmp_path):
  """K steps in one scanned call over on-device data == K jitted steps (float32 tolerance)."""
  config = small_digits_config(steps=20)
  config.log_every_steps = 10
  trainer.train_and_evaluate(config, str(tmp_path / "per_step"))
  config.steps_per_call = 5
  trainer.train_and_evaluate(config, str(tmp_path / "scanned"))
  for a, b in zip(
    jax.tree.leaves(final_params(tmp_path / "per_step")),
    jax.tree.leaves(final_params(tmp_path / "scanned")),
    strict=True,
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  per_step = read_jsonl(tmp_path / "per_step" / "metrics.jsonl")
  scanned = read_jsonl(tmp_path / "scanned" / "metrics.jsonl")
  assert [r["step"] for r in per_step] == [r["step"] for r in scanned]
  for p, q in zip(per_step, scanned, strict=True):
    assert p.keys() == q.keys()
    np.testing.assert_allclose([p[k] for k in p], [q[k] for k in p], rtol=1e-4)


def test_steps_this_call_stops_at_every_event():
  intervals = (10, 25, 30)
  # from 0: the next event is step 10, so a call of 5 fits; from 8 it would cross 10
  assert steps_this_call(0, 5, intervals, 100) == 5
  assert steps_this_call(8, 5, intervals, 100) == 1
  assert steps_this_call(20, 5, intervals, 100) == 5  # 20 -> 25 lands on the eval step
  assert steps_this_call(97, 5, intervals, 100) == 1  # past the last step
  assert steps_this_call(0, 1, intervals, 100) == 1


def test_batch_not_divisible_by_devices_is_refused(tmp_path):
  config = small_digits_config()
  config.data.batch_size = 60
  with pytest.raises(
    ValueError, match="batch_size=60 must be a positive multiple of the 8 devices"
  ):
    trainer.train_and_evaluate(config, str(tmp_path))


def test_train_step_compiles_once():
  config = config_lib.base_config()
  model = models.create_model(models.model_config("cnn_a"), num_classes=10)
  tx, schedule = optim.create_optimizer(config.optimizer, config.schedule, 100)
  state = classifier.create_train_state(model, tx, jnp.zeros((1, 28, 28, 1)), jax.random.key(0))
  step = jax.jit(
    lambda s, b, k: classifier.train_step(s, b, k, learning_rate_fn=schedule), donate_argnums=0
  )
  rng = np.random.default_rng(0)
  for _ in range(3):
    batch = {
      "inputs": rng.normal(size=(8, 28, 28, 1)).astype(np.float32),
      "targets": rng.integers(0, 10, 8).astype(np.int32),
    }
    state, _ = step(state, batch, jax.random.key(1))
  assert int(state.step) == 3
  assert step._cache_size() == 1


def test_any_non_finite_metric_fails_fast_naming_the_first_step():
  def make_window(first_step, losses, grad_norms):
    w = window.Window(first_step, jax.device_get)
    for loss, norm in zip(losses, grad_norms, strict=True):
      w.append({"train_loss": jnp.float32(loss), "grad_norm": jnp.float32(norm)})
    return w

  with pytest.raises(FloatingPointError, match="non-finite train_loss .* at step 12"):
    make_window(10, (1.0, 0.5, np.nan, 0.2), (1.0, 1.0, 1.0, 1.0)).fetch()
  # every metric is checked: a gradient norm that overflows before the loss does names its step
  with pytest.raises(FloatingPointError, match=r"non-finite grad_norm \(inf\) at step 11"):
    make_window(10, (1.0, 0.5, np.nan, 0.2), (1.0, np.inf, 1.0, 1.0)).fetch()
  assert make_window(1, (1.0, 0.5), (2.0, 4.0)).summary() == {"train_loss": 0.75, "grad_norm": 3.0}
  # scanned calls append [K] arrays; the step is still the one that went bad
  scanned = window.Window(1, jax.device_get)
  scanned.append({"train_loss": jnp.array([1.0, 2.0, 3.0])})
  scanned.append({"train_loss": jnp.array([4.0, np.inf, 6.0])})
  with pytest.raises(FloatingPointError, match="at step 5"):
    scanned.fetch()


@pytest.mark.slow  # ~18 s; the CLI fault tests' cheap forms cover resume and SIGTERM by default
def test_sigterm_saves_a_checkpoint_and_the_rerun_matches(tmp_path, monkeypatch):
  """A run that gets SIGTERM mid-training (off a log step) stops with a checkpoint, status
  "preempted"; rerunning finishes it with exactly the parameters and log of an uninterrupted run.
  (The CLI's exit status 75 is tested in tests/test_faults.py.)"""
  import signal

  from jaxvision.data import pipeline

  config = small_digits_config(steps=60)
  config.log_every_steps = 20
  config.eval_every_steps = 60
  config.checkpoint.every_steps = 1000  # only the SIGTERM and the final step save
  config.data.prefetch = 0  # batches built between steps: the signal lands before step 38
  trainer.train_and_evaluate(config, str(tmp_path / "straight"))
  original = pipeline.BatchSampler.indices

  def indices(self, step):  # SIGTERM arrives while the batch of step 38 is prepared
    if step == 37:
      os.kill(os.getpid(), signal.SIGTERM)
    return original(self, step)

  with monkeypatch.context() as patch:
    patch.setattr(pipeline.BatchSampler, "indices", indices)
    preempted = trainer.train_and_evaluate(config, str(tmp_path / "preempted"))
  assert (preempted.status, preempted.step, preempted.final) == ("preempted", 38, {})
  assert not (tmp_path / "preempted" / "results.json").exists()
  assert os.listdir(tmp_path / "preempted" / "checkpoints") == ["38"]
  resumed = trainer.train_and_evaluate(config, str(tmp_path / "preempted"))
  assert (resumed.status, resumed.step) == ("finished", 60)
  assert_same_params(tmp_path / "straight", tmp_path / "preempted")
  assert read_jsonl(tmp_path / "straight" / "metrics.jsonl") == read_jsonl(
    tmp_path / "preempted" / "metrics.jsonl"
  )


def test_prefetched_input_trains_bit_identically(tmp_path):
  """Batches built ahead by the prefetch thread are the ones built between steps."""
  for depth in (0, 3):
    config = small_digits_config(steps=12)
    config.data.prefetch = depth
    trainer.train_and_evaluate(config, str(tmp_path / str(depth)))
  assert_same_params(tmp_path / "0", tmp_path / "3")
  assert read_jsonl(tmp_path / "0" / "metrics.jsonl") == read_jsonl(
    tmp_path / "3" / "metrics.jsonl"
  )
  assert trainer.prefetch_depth(-1, 1) == (0 if jax.default_backend() == "cpu" else 2)
  assert trainer.prefetch_depth(4, 25) == 0


def test_results_record_the_commit_the_run_started_from(tmp_path, monkeypatch):
  commits = iter(["commit-at-start"] + ["commit-at-end"] * 10)
  monkeypatch.setattr(workdir_lib, "git_commit", lambda: next(commits))
  trainer.train_and_evaluate(small_digits_config(steps=10), str(tmp_path))
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["git_commit"] == "commit-at-start"
