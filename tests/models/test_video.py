"""ConvLSTM, frame predictor and video classifier: shapes, parameters, scan, gradients, learning."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvision import video_metrics
from jaxvision.models import layers, video

SMALL = dict(encoder=(4, 8), hidden=(8,))  # a predictor small enough to compile in seconds
# XLA:CPU compiles threefry's rolled loops slowly (about 1 s per initialised kernel); the RBG
# generator makes the same random initialisations compile 5x faster.
KEY = jax.random.key(0, impl="rbg")


def _moving_squares(batch: int, frames: int, size: int = 16, seed: int = 0) -> np.ndarray:
  """Clips [B, T, size, size, 1] of a 4x4 white square bouncing around (no data files needed)."""
  rng = np.random.default_rng(seed)
  clips = np.zeros((batch, frames, size, size, 1), np.float32)
  for b in range(batch):
    y, x = rng.integers(0, size - 4, 2)
    dy, dx = rng.choice([-2, -1, 1, 2], 2)
    for t in range(frames):
      clips[b, t, y : y + 4, x : x + 4] = 1.0
      if not 0 <= y + dy <= size - 4:
        dy = -dy
      if not 0 <= x + dx <= size - 4:
        dx = -dx
      y, x = y + dy, x + dx
  return clips


def test_convlstm_cell_over_time():
  cell = video.ConvLSTMCell(features=5, kernel_size=3)
  x = jnp.ones((2, 7, 8, 6, 3))  # [B, T, H, W, C]
  rnn = nn.RNN(cell, return_carry=True)
  variables = jax.jit(rnn.init)(KEY, x)
  (c, h), outputs = jax.jit(rnn.apply)(variables, x)
  assert outputs.shape == (2, 7, 8, 6, 5) and c.shape == h.shape == (2, 8, 6, 5)
  np.testing.assert_array_equal(outputs[:, -1], h)
  gates = variables["params"]["cell"]["gates"]
  assert gates["kernel"].shape == (3, 3, 3 + 5, 4 * 5)
  np.testing.assert_array_equal(gates["bias"], [0.0] * 5 + [1.0] * 5 + [0.0] * 10)  # forget = 1
  carry = cell.initialize_carry(None, (2, 8, 6, 3))
  assert [a.shape for a in carry] == [(2, 8, 6, 5)] * 2


@pytest.mark.parametrize("shape, kernel, stride", [((2, 9, 8, 3), 3, 2), ((2, 7, 7, 4), 3, 1)])
def test_nhwc_conv_gradients_equal_xla(shape, kernel, stride):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  k = jnp.asarray(rng.normal(size=(kernel, kernel, shape[-1], 5)), jnp.float32)

  def grads(conv):
    loss = lambda x, k: jnp.sin(conv(x, k, (stride, stride))).sum()
    return jax.jit(jax.grad(loss, (0, 1)))(x, k)

  for mine, theirs in zip(grads(layers.conv_nhwc), grads(layers._conv), strict=True):
    np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["convlstm_predictor", "convlstm_cdna", "video_classifier"])
def test_preset_parameter_counts(name):
  preset = video.PRESETS[name]
  model = preset.module(**preset.attrs, **preset.example_data)
  x = jnp.zeros((1, *preset.example_shape))
  shapes = jax.eval_shape(lambda: model.init(KEY, x, train=False))  # no compile
  assert sum(np.prod(a.shape) for a in jax.tree.leaves(shapes)) == preset.num_params


def test_predictor_modes():
  model = video.FramePredictor(**SMALL)
  clip = jnp.asarray(_moving_squares(2, 8))  # [2, 8, 16, 16, 1]
  variables = jax.jit(model.init, static_argnames="train")(KEY, clip, train=False)
  run = jax.jit(model.apply, static_argnames=("train", "num_predict", "teacher_forcing"))
  forced = run(variables, clip, train=False, num_predict=3, teacher_forcing=True)
  free = run(variables, clip, train=False, num_predict=3, teacher_forcing=False)
  assert forced.shape == free.shape == (2, 3, 16, 16, 1)
  every = jax.eval_shape(lambda v: model.apply(v, clip, train=False), variables)
  assert every.shape == (2, 7, 16, 16, 1)  # the default: every frame but the first
  # The first predicted frame follows from the context alone, in both modes.
  np.testing.assert_allclose(forced[:, 0], free[:, 0], atol=1e-6)
  # Free running never reads the frames it predicts; teacher forcing reads the earlier ones.
  changed = clip.at[:, 5:].set(0.5)
  free_changed = run(variables, changed, train=False, num_predict=3, teacher_forcing=False)
  np.testing.assert_array_equal(free, free_changed)
  forced_changed = run(variables, changed, train=False, num_predict=3, teacher_forcing=True)
  assert np.abs(forced_changed[:, 1:] - forced[:, 1:]).max() > 1e-4
  with pytest.raises(ValueError, match="num_predict"):
    model.apply(variables, clip, train=False, num_predict=8)


def test_classifier_logits_for_clips_and_single_frames():
  model = video.VideoClassifier(num_classes=4, **SMALL, dense=(6,))
  clip = jnp.asarray(_moving_squares(3, 5))
  variables = jax.eval_shape(lambda: model.init(KEY, clip, train=False))
  # Shapes only: tracing checks every shape without compiling anything.
  logits = lambda x: jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  assert logits(clip).shape == (3, 4)
  assert logits(clip[:, :1]).shape == (3, 4)  # T = 1: the single-frame control


def _train_step_program(frames: int) -> str:
  model = video.FramePredictor(**SMALL)
  clip = jnp.zeros((2, frames, 16, 16, 1))
  params = jax.eval_shape(lambda: model.init(KEY, clip[:1], train=False))

  def loss(params, clip):
    logits = model.apply(params, clip, train=True, num_predict=frames // 2)
    return video_metrics.frame_bce(logits, clip[:, frames - frames // 2 :]).mean()

  return jax.jit(jax.grad(loss)).lower(params, clip).compile().as_text()


def test_program_size_flat_in_clip_length():
  short, long = _train_step_program(10), _train_step_program(40)
  assert abs(len(long) - len(short)) / len(short) < 0.05, (len(short), len(long))
  assert short.count("while") == long.count("while") > 0  # the scans stay loops


def test_few_adam_steps_reduce_the_frame_loss():
  model = video.FramePredictor(**SMALL)
  clip = jnp.asarray(_moving_squares(4, 6))  # [4, 6, 16, 16, 1]
  init = jax.jit(model.init, static_argnames="train")
  params = init(KEY, clip, train=False)["params"]

  def loss_fn(params):
    logits = model.apply({"params": params}, clip, train=True, num_predict=3)
    return video_metrics.frame_bce(logits, clip[:, 3:]).mean()

  losses, step = _adam_losses(loss_fn, params)
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.5 * losses[0], losses
  assert step._cache_size() == 1  # one compilation for every step


def _adam_losses(loss_fn, params, steps: int = 15):
  """The losses of `steps` Adam steps (learning rate 1e-2) on `loss_fn`, and the jitted step."""
  optimizer = optax.adam(1e-2)

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state, losses = optimizer.init(params), []
  for _ in range(steps):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  return losses, step


def test_advect_moves_frames_by_one_hot_kernels():
  frames = jnp.asarray(np.random.default_rng(0).random((2, 7, 6, 3)), jnp.float32)
  size, r = 5, 2
  kernels = np.zeros((2, 2, size * size), np.float32)
  kernels[0, 0, (r - 1) * size + (r + 2)] = 1.0  # clip 0, kernel 0: (dy, dx) = (-1, +2)
  kernels[0, 1, r * size + r] = 1.0  # identity
  kernels[1, :, (r + 1) * size + r] = 0.5  # clip 1: both (+1, 0), halved
  moved = np.asarray(video.advect(frames, jnp.asarray(kernels)))  # [B, K, H, W, C]
  assert moved.shape == (2, 2, 7, 6, 3)
  f = np.asarray(frames)
  expected = np.zeros_like(f[0])
  expected[1:, :-2] = f[0, :-1, 2:]  # out(y, x) = in(y - 1, x + 2), zero where that is outside
  np.testing.assert_allclose(moved[0, 0], expected, atol=1e-6)
  np.testing.assert_allclose(moved[0, 1], f[0], atol=1e-6)
  expected = np.zeros_like(f[1])
  expected[:-1] = 0.5 * f[1, 1:]
  np.testing.assert_allclose(moved[1, 0], expected, atol=1e-6)


def test_cdna_predictor_outputs_logits_of_a_composite_and_learns():
  model = video.FramePredictor(**SMALL, output="cdna", cdna_kernels=1, cdna_size=5)
  clip = jnp.asarray(_moving_squares(4, 6))  # [4, 6, 16, 16, 1], squares moving <= 2 px/frame
  params = jax.jit(model.init, static_argnames="train")(KEY, clip, train=False)["params"]
  assert params["step"]["cdna"]["Dense_0"]["kernel"].shape == (4 * 4 * 8, 25)
  assert params["step"]["decoder"]["Conv_1"]["kernel"].shape[-1] == 4 * (1 + 2)  # pixel + masks

  def loss_fn(params):
    logits = model.apply({"params": params}, clip, train=True, num_predict=3)
    return video_metrics.frame_bce(logits, clip[:, 3:]).mean(), logits

  (_, logits), _ = jax.value_and_grad(loss_fn, has_aux=True)(params)
  p = jax.nn.sigmoid(logits)  # a composite of probabilities: inside [eps, 1 - eps]
  assert logits.shape == (4, 3, 16, 16, 1)
  assert float(p.min()) >= video.CDNA_EPS * 0.999 and float(p.max()) <= 1 - video.CDNA_EPS * 0.999
  losses, _ = _adam_losses(lambda params: loss_fn(params)[0], params)
  assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0], losses
  with pytest.raises(ValueError, match="odd cdna_size"):
    video.FramePredictor(**SMALL, output="cdna", cdna_size=4).init(KEY, clip, train=False)
  with pytest.raises(ValueError, match="unknown predictor output"):
    video.FramePredictor(**SMALL, output="flow").init(KEY, clip, train=False)


def test_layer_norm_cell_normalises_over_the_map_and_keeps_gradients_finite():
  cell = video.ConvLSTMCell(features=4, kernel_size=3, layer_norm=True)
  x = np.zeros((2, 9, 8, 8, 3), np.float32)  # [B, T, H, W, C]: mostly empty, as Moving MNIST
  x[:, :, 2:4, 3:5] = 1.0
  rnn = nn.RNN(cell)
  variables = jax.jit(rnn.init)(KEY, jnp.asarray(x))
  norm = variables["params"]["cell"]["gate_norm"]
  assert norm["scale"].shape == norm["bias"].shape == (4, 4)
  np.testing.assert_array_equal(norm["bias"][1], [1.0] * 4)  # the forget gate's bias
  np.testing.assert_array_equal(variables["params"]["cell"]["gates"]["bias"], np.zeros(16))
  # Gate weights 10x larger give the same states: the gates see normalised pre-activations
  # (an unnormalised cell would saturate).
  scaled = jax.tree.map(lambda a: a, variables)
  scaled["params"]["cell"]["gates"]["kernel"] = 10.0 * scaled["params"]["cell"]["gates"]["kernel"]
  outputs = jax.jit(rnn.apply)(variables, jnp.asarray(x))
  np.testing.assert_allclose(jax.jit(rnn.apply)(scaled, jnp.asarray(x)), outputs, atol=1e-4)
  assert float(jnp.abs(outputs).std()) > 0.05
  grads = jax.jit(jax.grad(lambda v: (rnn.apply(v, jnp.asarray(x)) ** 2).sum()))(variables)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(grads)) < 1e3
