"""Int8 quantization: per-channel round trip error, calibration, quantized inference close to
float, and exported files 4x (dense) and more (sparse) smaller than float32."""

import zipfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import quantize

RNG = np.random.default_rng(0)


class Net(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(32, (3, 3), name="conv")(x))
    return nn.Dense(10, name="out")(x.reshape(len(x), -1))


X = jnp.asarray(RNG.normal(size=(16, 8, 8, 1)), jnp.float32)


def test_per_channel_round_trip_error_is_at_most_half_a_step():
  w = RNG.normal(size=(3, 3, 4, 5)) * np.array([0.01, 0.1, 1.0, 10.0, 0.0])  # a zero channel too
  q, scale = quantize.quantize_per_channel(w)
  assert q.dtype == np.int8 and scale.shape == (5,) and np.abs(q).max() <= 127
  error = np.abs(q * scale - w)
  assert (error <= scale / 2 + 1e-7 * np.abs(w)).all()
  assert (q[..., 4] == 0).all()
  # each channel uses its own range: the largest weight of each maps to +-127
  np.testing.assert_array_equal(np.abs(q[..., :4]).reshape(-1, 4).max(0), 127)


def test_fake_quant_rounds_forward_and_passes_gradients_straight_through():
  x = jnp.asarray([0.013, -0.5, 3.0])
  np.testing.assert_allclose(quantize.fake_quant(x, 0.01), [0.01, -0.5, 1.27], rtol=1e-6)
  grad = jax.grad(lambda v: quantize.fake_quant(v, 0.01).sum())(x)
  np.testing.assert_array_equal(grad, [1.0, 1.0, 1.0])


def test_int8_model_matches_float_and_exports_small(tmp_path):
  model = Net()
  params = model.init(jax.random.key(0), X)["params"]
  logits = lambda p: lambda x: model.apply({"params": p}, x)
  peaks = quantize.calibrate(logits(params), [X[:8], X[8:]])
  assert set(peaks) == {("conv",), ("out",)}
  assert peaks[("conv",)] == pytest.approx(float(jnp.abs(X).max()))
  qparams = quantize.quantize_params(params)
  int8 = quantize.quantized_logits(logits(quantize.dequantize_params(qparams)), peaks)
  reference = np.asarray(logits(params)(X))
  got = np.asarray(int8(X))
  assert np.abs(got - reference).max() < 0.05 * np.abs(reference).max()
  assert not np.array_equal(got, reference)  # it did quantize
  int8_bytes = quantize.export(qparams, peaks, str(tmp_path / "int8.npz"))
  float_bytes = quantize.export_float(params, str(tmp_path / "float.npz"))
  assert float_bytes / int8_bytes > 3.3  # 4x on the weights, less headers, scales and biases
  with zipfile.ZipFile(tmp_path / "int8.npz") as f:  # deflated; the float file as stored
    assert {i.compress_type for i in f.infolist()} == {zipfile.ZIP_DEFLATED}
  with zipfile.ZipFile(tmp_path / "float.npz") as f:
    assert {i.compress_type for i in f.infolist()} == {zipfile.ZIP_STORED}
  assert quantize.deflated_float_bytes(params) < float_bytes
  loaded, loaded_peaks = quantize.load_export(str(tmp_path / "int8.npz"))
  assert loaded_peaks == peaks
  for a, b in zip(
    jax.tree.leaves(loaded), jax.tree.leaves(quantize.dequantize_params(qparams)), strict=True
  ):
    np.testing.assert_array_equal(a, b)
  # a 90% sparse model: bitmask + non-zeros
  sparse = jax.tree.map(lambda p: np.where(np.abs(p) > np.quantile(np.abs(p), 0.9), p, 0), params)
  sparse_q = quantize.quantize_params(sparse)
  sparse_bytes = quantize.export(sparse_q, peaks, str(tmp_path / "sparse.npz"))
  assert sparse_bytes < int8_bytes / 2
  loaded, _ = quantize.load_export(str(tmp_path / "sparse.npz"))
  for a, b in zip(
    jax.tree.leaves(loaded), jax.tree.leaves(quantize.dequantize_params(sparse_q)), strict=True
  ):
    np.testing.assert_array_equal(a, b)


def test_a_model_without_layers_to_quantize_is_one_line():
  with pytest.raises(ValueError, match="no nn.Dense or nn.Conv layer"):
    quantize.calibrate(lambda x: x * 2, [X])


def test_compress_a_trained_pruned_classifier(tmp_path):
  """The tool end to end on a run pruned to 80%: int8 keeps its accuracy within 3 points on the
  digits eval split, the exported file holds the sparse kernels and reads back."""
  import json
  import subprocess
  import sys

  from experiments import digits_cnn
  from jaxvision.train import trainer
  from tests.conftest import REPO

  config = digits_cnn.get_config()
  config.num_train_steps = config.eval_every_steps = config.checkpoint.every_steps = 60
  config.schedule.warmup_steps = 5
  config.optimizer.sparsity = 0.8
  trainer.train_and_evaluate(config, str(tmp_path / "run"))
  done = subprocess.run(
    [sys.executable, "-m", "jaxvision.tools.compress", f"--workdir={tmp_path / 'run'}",
     "--calibration=64", "--batch_size=120"],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert done.returncode == 0, done.stderr[-2000:]
  record = json.loads((tmp_path / "run/compress/calibration=64/results.json").read_text())
  final = record["final"]
  assert abs(final["accuracy_change"]) <= 0.03 and final["accuracy_float"] > 0.5
  assert final["num_nonzero"] < 0.35 * final["num_params"]  # kernels 80% zero, biases kept
  assert final["size_ratio"] > 6  # int8 and sparse
  assert record["config"]["compress"] == {"calibration": 64, "method": "int8 ptq"}
  assert "int8" in done.stdout and "smaller" in done.stdout


def test_quantization_aware_training_learns_through_the_rounding(tmp_path):
  from experiments import digits_cnn
  from jaxvision import runs
  from jaxvision.train import trainer

  config = digits_cnn.get_config()
  config.num_train_steps = config.eval_every_steps = config.checkpoint.every_steps = 60
  config.schedule.warmup_steps = 5
  config.qat = True
  outcome = trainer.train_and_evaluate(config, str(tmp_path / "qat"))
  assert outcome.final["eval_accuracy"] > 0.6  # it learned with int8 weights and inputs
  run = runs.load_run(str(tmp_path / "qat"))
  x = run.dataset().eval.get(np.arange(32))["inputs"]
  quantized = np.asarray(run.apply("predict")({"inputs": x}))
  plain = np.asarray(run.task.model.apply({"params": run.state.params}, x, train=False))
  assert not np.array_equal(quantized, plain)  # restored runs evaluate the int8 forward
  assert np.abs(quantized - plain).max() < 0.1 * np.abs(plain).max()
