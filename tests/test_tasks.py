"""Tasks see whole batches: per-example fields beyond the inputs (sequence lengths) reach the
model in the train step and in the prediction functions; the registry names every family."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxvision import config_lib, data, models, optim, tasks
from jaxvision.config_dict import ConfigError
from jaxvision.tasks import classification
from jaxvision.tasks.base import DataInfo, Task


def _lstm_task():
  config = config_lib.base_config()
  config.model = models.model_config("lstm", hidden_size=8)
  config.data = data.data_config("mnist1d", batch_size=2)
  config.optimizer = optim.optimizer_config(learning_rate=1e-2)
  return classification.Task(config, DataInfo((10, 1), {"num_classes": 3}))


def test_lengths_reach_the_model_in_predict_and_in_the_train_step():
  task = _lstm_task()
  state = task.init_state(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (2, 10, 1))
  padded = x.at[1, 6:].set(100.0)  # garbage after the second sequence's 6 valid steps
  batch = {"inputs": padded, "targets": jnp.array([0, 2]), "lengths": jnp.array([10, 6])}
  predict = jax.jit(task.predict_fns()["predict"])
  logits = predict(state, batch)
  alone = predict(state, {"inputs": x[1:2, :6]})  # the second sequence, unpadded
  np.testing.assert_allclose(logits[1], alone[0], rtol=1e-5, atol=1e-6)
  ignored = predict(state, {"inputs": padded})  # without lengths the garbage is read
  assert not np.allclose(ignored[1], alone[0], atol=1e-3)
  # The train step masks the same way: the padding changes nothing.
  step = jax.jit(task.train_step)
  clean = {**batch, "inputs": padded.at[1, 6:].set(0.0)}
  a, metrics_a = step(state, batch, jax.random.key(2))
  b, metrics_b = step(state, clean, jax.random.key(2))
  assert float(metrics_a["train_loss"]) == pytest.approx(float(metrics_b["train_loss"]), rel=1e-6)
  for x_, y_ in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
    np.testing.assert_allclose(x_, y_, rtol=1e-5, atol=1e-7)


def test_every_family_is_registered_and_an_unknown_one_is_a_config_error():
  for name in tasks.TASKS:
    assert issubclass(tasks.get(name), Task), name
  with pytest.raises(ConfigError, match="config.trainer='nope' unknown"):
    tasks.get("nope")


def test_data_info_round_trips_through_a_checkpoint_meta():
  info = DataInfo((8, 8, 1), {"num_classes": 10, "time_axes": 0})
  assert DataInfo.from_dict(ml_collections.ConfigDict(info.as_dict()).to_dict()) == info
  assert info.num_classes == 10
  with pytest.raises(ValueError, match="no classes"):
    DataInfo((3,), {}).num_classes  # noqa: B018
