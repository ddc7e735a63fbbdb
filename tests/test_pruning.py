"""Magnitude pruning as an Optax transformation: the schedule, exact masks, exact zeros through
training, and masks that come back with the checkpoint."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import digits_cnn
from jaxvision import optim, pruning
from jaxvision.config_dict import ConfigError
from jaxvision.train import loop, trainer
from jaxvision.workdir import restore_latest


def test_gradual_schedule():
  at = lambda t: float(pruning.sparsity_at(t, 0.9, 10, 110))
  assert at(0) == at(10) == 0.0
  assert at(60) == pytest.approx(0.9 * (1 - 0.5**3))
  assert at(110) == at(500) == pytest.approx(0.9)


def test_masks_keep_the_largest_weights_globally_or_per_layer():
  params = {
    "a": jnp.arange(1.0, 11.0).reshape(2, 5),  # 1..10
    "b": -jnp.arange(11.0, 21.0).reshape(5, 2),  # -11..-20
    "bias": jnp.zeros(3),
  }
  globally = pruning.masks_for(params, 0.5, per_layer=False)
  assert int(globally["a"].sum()) == 0 and int(globally["b"].sum()) == 10  # the 10 smallest: a
  assert globally["bias"].shape == () and bool(globally["bias"])  # vectors are never pruned
  each = pruning.masks_for(params, 0.5, per_layer=True)
  np.testing.assert_array_equal(each["a"].ravel(), np.arange(1, 11) > 5)
  np.testing.assert_array_equal(each["b"].ravel(), np.arange(11, 21) > 15)


def test_pruned_weights_stay_exactly_zero_under_updates():
  params = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(8, 8)), jnp.float32)}
  tx = optax.chain(optax.sgd(0.1), pruning.magnitude_pruning(0.75, begin=1, end=4, every=1))
  state = tx.init(params)
  grads = {"w": jnp.ones((8, 8))}  # would move every weight
  for step in range(1, 8):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    zeros = int((params["w"] == 0).sum())
    expected = int(np.floor(float(pruning.sparsity_at(min(step, 4), 0.75, 1, 4)) * 64))
    assert zeros == expected, step
  assert zeros == 48
  np.testing.assert_array_equal(params["w"] != 0, state[1].masks["w"])


def test_bad_pruning_settings_are_config_errors():
  sched = optim.schedule_config()
  with pytest.raises(ConfigError, match="sparsity=1.0 must be in"):
    optim.create_optimizer(optim.optimizer_config(sparsity=1.0), sched, 100)
  with pytest.raises(ConfigError, match="prune_end_step=200"):
    optim.create_optimizer(optim.optimizer_config(sparsity=0.5, prune_end_step=200), sched, 100)


def _config():
  config = digits_cnn.get_config()
  config.num_train_steps = 40
  config.eval_every_steps = config.checkpoint.every_steps = 20
  config.log_every_steps = 10
  config.schedule.warmup_steps = 5
  config.optimizer.sparsity = 0.9
  config.optimizer.prune_end_step = 30
  config.optimizer.prune_every_steps = 5
  return config


def test_a_pruned_run_holds_its_sparsity_and_resumes_with_its_masks(tmp_path):
  straight = trainer.train_and_evaluate(_config(), str(tmp_path / "straight"))
  state, _ = restore_latest(str(tmp_path / "straight"))
  kernels = [p for p in jax.tree.leaves(state["params"]) if p.ndim >= 2]
  total = sum(p.size for p in kernels)
  assert sum(int((p == 0).sum()) for p in kernels) == int(np.floor(0.9 * total))
  assert straight.final["eval_accuracy"] > 0  # it still classifies
  # halted at step 20 (mid-schedule) and resumed: the same masks, the same parameters
  options = loop.Options(halt_after_steps=20)
  trainer.train_and_evaluate(_config(), str(tmp_path / "resumed"), options)
  trainer.train_and_evaluate(_config(), str(tmp_path / "resumed"))
  resumed, _ = restore_latest(str(tmp_path / "resumed"))
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)
