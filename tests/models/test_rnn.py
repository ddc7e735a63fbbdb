"""Scanned LSTM/GRU classifiers: shapes for every option, padding invariance, compile size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import models
from jaxvision.models import rnn


def _seed_lstm():
  """The seeds' 3 x LSTM(64) preset with a binary head, as the trainer builds it."""
  return models.create_model(models.model_config("seed_lstm"), num_classes=2)


def _init_apply(model, x, **kwargs):
  variables = model.init(jax.random.key(0), x, train=False, **kwargs)
  return variables, model.apply(variables, x, train=False, **kwargs)


@pytest.mark.parametrize(
  "cell, num_layers, bidirectional, pooling",
  [
    ("lstm", 1, False, "last"),
    ("lstm", 3, True, "mean"),
    ("gru", 3, False, "mean"),
    ("gru", 1, True, "last"),
  ],
)
def test_classifier_shapes(cell, num_layers, bidirectional, pooling):
  model = rnn.RNNClassifier(
    num_classes=5,
    cell=cell,
    hidden_size=8,
    num_layers=num_layers,
    bidirectional=bidirectional,
    pooling=pooling,
    dense=(16,),
  )
  variables, logits = _init_apply(model, jnp.ones((3, 12, 2)))
  assert logits.shape == (3, 5)
  layers = variables["params"]["rnn"]
  assert len(layers) == num_layers * (2 if bidirectional else 1)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_stack_returns_sequences_and_last_state(bidirectional):
  stack = rnn.RNNStack(cell="gru", hidden_size=4, num_layers=2, bidirectional=bidirectional)
  x = jax.random.normal(jax.random.key(1), (2, 7, 3))
  variables = stack.init(jax.random.key(0), x, train=False)
  outputs, last = stack.apply(variables, x, train=False)
  width = 8 if bidirectional else 4
  assert outputs.shape == (2, 7, width) and last.shape == (2, width)
  # the forward direction's last state is its output at the last step
  np.testing.assert_allclose(last[:, :4], outputs[:, -1, :4], rtol=1e-6)


def test_seed_lstm_param_count():
  # LSTM(64): 4 gates x (in*64 + 64*64 + 64); inputs 1, then 64, then 64; a 64->2 head.
  lstm = lambda n_in: 4 * (n_in * 64 + 64 * 64 + 64)
  variables, _ = _init_apply(_seed_lstm(), jnp.ones((1, 100, 1)))
  count = sum(x.size for x in jax.tree.leaves(variables["params"]))
  assert count == lstm(1) + 2 * lstm(64) + 64 * 2 + 2


@pytest.mark.parametrize(
  "cell, bidirectional, pooling",
  [("lstm", False, "last"), ("lstm", True, "mean"), ("gru", False, "mean"), ("gru", True, "last")],
)
def test_padded_sequences_match_unpadded(cell, bidirectional, pooling):
  """A sequence padded with garbage and given its length == the same sequence alone."""
  model = rnn.RNNClassifier(
    num_classes=3,
    cell=cell,
    hidden_size=6,
    num_layers=2,
    bidirectional=bidirectional,
    pooling=pooling,
  )
  key_a, key_b, key_pad = jax.random.split(jax.random.key(2), 3)
  a, b = jax.random.normal(key_a, (1, 5, 2)), jax.random.normal(key_b, (1, 9, 2))
  padded_a = jnp.concatenate([a, 100 * jax.random.normal(key_pad, (1, 4, 2))], axis=1)
  batch = jnp.concatenate([padded_a, b])  # [2, 9, 2]
  variables = model.init(jax.random.key(0), batch, train=False)
  together = model.apply(variables, batch, train=False, lengths=jnp.array([5, 9]))
  alone_a = model.apply(variables, a, train=False)
  alone_b = model.apply(variables, b, train=False)
  np.testing.assert_allclose(together[0], alone_a[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(together[1], alone_b[0], rtol=1e-5, atol=1e-6)
  # and without lengths the padding does change the result (the test can fail)
  unmasked = model.apply(variables, batch, train=False)
  assert not np.allclose(unmasked[0], alone_a[0], atol=1e-3)


def test_program_size_does_not_grow_with_length():
  """Scanned, not unrolled: the compiled program for 1,000 steps is that for 100 steps (compile
  time is not asserted: on a shared 2-core machine it measures the neighbours)."""
  model = _seed_lstm()
  variables = model.init(jax.random.key(0), jnp.ones((1, 100, 1)), train=False)

  def loss(params, x):
    return model.apply({"params": params}, x, train=False).sum()

  grad = jax.jit(jax.grad(loss))
  sizes = {}
  for length in (100, 1000):
    compiled = grad.lower(variables["params"], jnp.ones((4, length, 1))).compile()
    sizes[length] = len(compiled.as_text())
    assert compiled.as_text().count(" while(") == 6  # a loop per layer, forward and backward
  # The HLO differs only in the digits of the shapes; an unrolled loop would be ~10x larger.
  assert sizes[1000] < 1.05 * sizes[100], sizes


def test_bad_options_are_clear_errors():
  with pytest.raises(ValueError, match="unknown cell 'rnn'"):
    _init_apply(rnn.RNNClassifier(num_classes=2, cell="rnn"), jnp.ones((1, 4, 1)))
  with pytest.raises(ValueError, match="unknown pooling"):
    _init_apply(rnn.RNNClassifier(num_classes=2, pooling="max"), jnp.ones((1, 4, 1)))
  with pytest.raises(ValueError, match=r"\[batch, time, features\]"):
    _init_apply(rnn.RNNClassifier(num_classes=2), jnp.ones((1, 4)))


def test_lstm_cell_computes_flax_lstm_with_forget_bias_added():
  """Our fused cell with forget_bias=0 and flax's OptimizedLSTMCell, same weights: same outputs;
  forget_bias=b only starts the forget gate's bias at b."""
  import flax.linen as nn

  x = jax.random.normal(jax.random.key(0), (3, 7, 2))
  reference = nn.RNN(nn.OptimizedLSTMCell(5))
  ref_params = reference.init(jax.random.key(1), x)["params"]["cell"]
  gates = ("i", "f", "g", "o")  # the order of our fused columns
  params = {
    "cell": {
      "input": {"kernel": jnp.concatenate([ref_params[f"i{g}"]["kernel"] for g in gates], -1)},
      "hidden": {
        "kernel": jnp.concatenate([ref_params[f"h{g}"]["kernel"] for g in gates], -1),
        "bias": jnp.concatenate([ref_params[f"h{g}"]["bias"] for g in gates], -1),
      },
    }
  }
  ours = nn.RNN(rnn.LSTMCell(5, forget_bias=0.0))
  np.testing.assert_allclose(
    ours.apply({"params": params}, x),
    reference.apply({"params": {"cell": ref_params}}, x),
    rtol=1e-5,
    atol=1e-6,
  )
  init_bias = nn.RNN(rnn.LSTMCell(5, forget_bias=1.0)).init(jax.random.key(1), x)["params"]
  np.testing.assert_array_equal(init_bias["cell"]["hidden"]["bias"], [0] * 5 + [1] * 5 + [0] * 10)
