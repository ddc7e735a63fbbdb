"""The GAN evaluator's conditional accuracy: samples asked for each class, scored by the feature
classifier with the asked class as the truth."""

import types

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision import parallel
from jaxvision.evaluators import gan


def test_conditional_accuracy_takes_the_asked_class_as_the_truth(tmp_path):
  def generate(state, batch):  # "draws" the asked digit as a constant image, but 5 for a 3
    del state
    drawn = jnp.where(batch["labels"] == 3, 5, batch["labels"]).astype(jnp.float32)
    return jnp.broadcast_to(drawn[:, None, None, None], (len(drawn), 2, 2, 1))

  context = types.SimpleNamespace(
    strategy=parallel.Strategy(1),
    batch_size=20,
    workdir=str(tmp_path),
    info={"z_dim": 4, "num_classes": 10},
    predict_fns={"generate": generate},
    compiler_options=None,
    key=jax.random.key(0),
  )
  evaluator = gan.Evaluator("eval", context, num_samples=100, grid_size=10)

  def features(images):  # a perfect reader of the drawn digit
    digit = np.round(images[:, 0, 0, 0]).astype(int)
    return images.reshape(len(images), -1), np.eye(10)[digit]

  evaluator.features, evaluator._real_features = features, np.zeros((100, 4))
  evaluator._num_classes = 10
  out = evaluator.run(None, step=1)
  assert out["eval_conditional_accuracy"] == 0.9
  assert out["eval_min_conditional_accuracy"] == 0.0
  assert out["eval_conditional_accuracy_3"] == 0.0 and out["eval_conditional_accuracy_5"] == 1.0
  assert out["eval_max_class_share"] == 0.2 and out["eval_min_class_share"] == 0.0
