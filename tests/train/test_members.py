"""Members: K models in one compiled program are K standalone runs; a diverging one is frozen."""

import json

import jax
import numpy as np
import pytest

from experiments import digits_cnn
from jaxvision import models
from jaxvision.config_dict import ConfigError
from jaxvision.train import loop, members, trainer
from jaxvision.workdir import restore_latest

STEPS = 6


def tiny_config(**overrides):
  config = digits_cnn.get_config()
  config.model = models.model_config(
    "convnet", features=(8, 16), pool=(False, True), dense=(16,), padding="SAME", dropout_rate=0.1
  )  # dropout: every member draws its own per-step keys
  config.augment.max_shift = 1
  config.num_train_steps = STEPS
  config.log_every_steps = 2
  config.eval_every_steps = config.checkpoint.every_steps = 3
  config.schedule.warmup_steps = 2
  for key, value in overrides.items():
    *block, leaf = key.split(".")
    node = config
    for part in block:
      node = node[part]
    node[leaf] = value
  return config


def train(config, workdir, halt=None):
  return trainer.train_and_evaluate(config, str(workdir), loop.Options(halt_after_steps=halt))


def params(workdir):
  state, meta = restore_latest(str(workdir))
  return meta["step"], jax.tree.leaves(state["params"])


def final(workdir):
  with open(workdir / "results.json") as f:
    return json.load(f)


def assert_same_run(member_dir, standalone_dir):
  (step_a, a), (step_b, b) = params(member_dir), params(standalone_dir)
  assert step_a == step_b == STEPS
  for x, y in zip(a, b, strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  ra, rb = final(member_dir), final(standalone_dir)
  assert ra["final"]["eval_accuracy"] == pytest.approx(rb["final"]["eval_accuracy"], abs=1e-6)
  assert ra["final"]["eval_loss"] == pytest.approx(rb["final"]["eval_loss"], rel=1e-4)


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
  """`standalone(strategy, seed)`: the workdir of a plain run of `tiny_config` (run once)."""
  done = {}

  def run(strategy, seed):
    if (strategy, seed) not in done:
      workdir = tmp_path_factory.mktemp(f"{strategy}_seed{seed}")
      config = tiny_config(seed=seed, **{"parallel.strategy": strategy})
      assert train(config, workdir).status == "finished"
      done[strategy, seed] = workdir
    return done[strategy, seed]

  return run


@pytest.mark.parametrize(
  "strategy,impl",
  [
    ("jit", "unroll"),
    ("jit", "vmap"),
    ("pmap", "vmap"),
    pytest.param("pmap", "unroll", marks=pytest.mark.slow),
  ],
)
def test_each_member_equals_the_standalone_run_with_its_seed(strategy, impl, standalone, tmp_path):
  config = tiny_config(members="seed=0:3", members_impl=impl, **{"parallel.strategy": strategy})
  outcome = train(config, tmp_path)
  assert (outcome.status, outcome.step) == ("finished", STEPS)
  assert sorted(outcome.final) == ["member=seed=0", "member=seed=1", "member=seed=2"]
  for seed in range(3):
    member_dir = tmp_path / f"member=seed={seed}"
    assert_same_run(member_dir, standalone(strategy, seed))
    record = final(member_dir)
    assert (record["member"], record["members"], record["seed"]) == (
      f"seed={seed}",
      "seed=0:3",
      seed,
    )
    assert json.loads((member_dir / "config.json").read_text())["members"] == ""
  # The members really differ (their own keys, data order and initialisation).
  assert not np.allclose(
    params(tmp_path / "member=seed=0")[1][0], params(tmp_path / "member=seed=1")[1][0]
  )


def test_members_scan_steps_per_call_to_the_same_numbers(standalone, tmp_path):
  config = tiny_config(members="seed=1,2", steps_per_call=3, log_every_steps=6)
  assert train(config, tmp_path).status == "finished"
  for seed in (1, 2):
    assert_same_run(tmp_path / f"member=seed={seed}", standalone("jit", seed))


def test_a_diverging_member_is_frozen_and_the_others_finish(standalone, tmp_path, capsys):
  config = tiny_config(members="optimizer.learning_rate=0.001,1e30", members_impl="vmap")
  outcome = train(config, tmp_path)
  assert outcome.status == "finished"
  good = tmp_path / "member=optimizer.learning_rate=0.001"
  bad = tmp_path / "member=optimizer.learning_rate=1e+30"
  assert_same_run(good, standalone("jit", 0))  # one seed: the batch is shared
  record = final(bad)
  assert record["status"] == "frozen" and record["final"] == {}
  assert 1 <= record["frozen"]["step"] <= 3 and "non-finite" in record["frozen"]["reason"]
  out = capsys.readouterr().out
  assert f"member=optimizer.learning_rate=1e+30: frozen at step {record['frozen']['step']}" in out
  rows = [json.loads(line) for line in (bad / "metrics.jsonl").read_text().splitlines()]
  assert all(row["step"] <= 2 for row in rows)  # nothing logged after the freeze was seen
  # A rerun has nothing left to do: the frozen member counts as done.
  assert train(config, tmp_path).step == STEPS


def test_an_interrupted_members_run_resumes_to_the_same_numbers(tmp_path):
  config = tiny_config(members="seed=0,1")
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  train(config, straight)
  assert train(config, resumed, halt=4).status == "halted"
  assert train(config, resumed).status == "finished"
  for seed in (0, 1):
    member = f"member=seed={seed}"
    a, b = params(straight / member)[1], params(resumed / member)[1]
    for x, y in zip(a, b, strict=True):
      np.testing.assert_array_equal(x, y)
    rows = [(d / member / "metrics.jsonl").read_text() for d in (straight, resumed)]
    assert rows[0] == rows[1]


@pytest.mark.parametrize(
  "text,message",
  [
    ("model.name=cnn_b", "members may differ in seed or an optimizer's learning_rate"),
    ("seed", "expected KEY=VALUES"),
    ("seed=0,1;seed=2", "a key appears twice"),
    ("optimizer.momentum=0.5,0.9", "not 'optimizer.momentum'"),
  ],
)
def test_bad_members_are_refused_in_one_line(text, message):
  with pytest.raises(ConfigError, match=message) as error:
    members.parse(tiny_config(members=text))
  assert "\n" not in str(error.value)


def test_members_parse_into_standalone_configs():
  parsed = members.parse(tiny_config(members="optimizer.learning_rate=1e-3,3e-3;seed=0,1"))
  assert [m.name for m in parsed] == [
    "optimizer.learning_rate=0.001,seed=0",
    "optimizer.learning_rate=0.001,seed=1",
    "optimizer.learning_rate=0.003,seed=0",
    "optimizer.learning_rate=0.003,seed=1",
  ]
  assert [(m.config.optimizer.learning_rate, m.config.seed) for m in parsed] == [
    (1e-3, 0),
    (1e-3, 1),
    (3e-3, 0),
    (3e-3, 1),
  ]
  assert all(m.config.members == "" for m in parsed)
  values = members.hyperparameters(parsed)
  assert list(values) == ["optimizer.learning_rate"]
  np.testing.assert_allclose(values["optimizer.learning_rate"], [1e-3, 1e-3, 3e-3, 3e-3])


@pytest.mark.slow
def test_five_mnist1d_cnn_members_equal_five_standalone_runs(tmp_path):
  """The acceptance form: K = 5 members of the MNIST-1D CNN experiment (shortened) against the
  five runs a user would start, one per seed."""
  from experiments import mnist1d_cnn

  def config(**overrides):
    c = mnist1d_cnn.get_config()
    c.num_train_steps = c.eval_every_steps = c.checkpoint.every_steps = 200
    c.log_every_steps = 50
    c.schedule.warmup_steps = 20
    c.update(overrides)
    return c

  assert train(config(members="seed=0:5"), tmp_path / "members").status == "finished"
  for seed in range(5):
    alone = tmp_path / f"seed={seed}"
    assert train(config(seed=seed), alone).status == "finished"
    member = tmp_path / "members" / f"member=seed={seed}"
    (step_a, a), (step_b, b) = params(member), params(alone)
    assert step_a == step_b == 200
    for x, y in zip(a, b, strict=True):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert final(member)["final"]["eval_accuracy"] == pytest.approx(
      final(alone)["final"]["eval_accuracy"], abs=1e-6
    )


@pytest.mark.slow
def test_a_diverging_mnist1d_cnn_member_is_frozen_and_the_other_four_finish(tmp_path, capsys):
  """The acceptance form of the freeze: K = 5 MNIST-1D CNN members, one at a learning rate
  that diverges at once."""
  from experiments import mnist1d_cnn

  config = mnist1d_cnn.get_config()
  config.num_train_steps = config.eval_every_steps = config.checkpoint.every_steps = 200
  config.log_every_steps = 50
  config.schedule.warmup_steps = 20
  config.members = "optimizer.learning_rate=0.001,0.002,0.003,0.005,1e30"
  assert train(config, tmp_path).status == "finished"
  bad = final(tmp_path / "member=optimizer.learning_rate=1e+30")
  assert bad["status"] == "frozen" and "non-finite" in bad["frozen"]["reason"]
  assert bad["frozen"]["step"] <= 50
  assert f"frozen at step {bad['frozen']['step']}" in capsys.readouterr().out
  for lr in ("0.001", "0.002", "0.003", "0.005"):
    good = final(tmp_path / f"member=optimizer.learning_rate={lr}")
    assert good.get("status") != "frozen" and good["final"]["eval_accuracy"] > 0.5, lr
