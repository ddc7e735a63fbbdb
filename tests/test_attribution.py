"""Attribution maps and their faithfulness on models whose answers are known."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import attribution

RNG = np.random.default_rng(0)
W = jnp.asarray(RNG.normal(size=(4 * 4 * 1, 3)), jnp.float32)  # a linear classifier of 4x4 images


def linear(x):
  return x.reshape(len(x), -1) @ W


def nonlinear(x):  # a small two-layer net: IG's completeness is not trivial for it
  h = jnp.tanh(x.reshape(len(x), -1) @ W)
  return jnp.concatenate([h, h**2], axis=1)


X = jnp.asarray(RNG.normal(size=(5, 4, 4, 1)), jnp.float32)
TARGET = jnp.asarray([0, 1, 2, 0, 1])


def test_gradient_of_a_linear_model_is_its_weights():
  grads = attribution.gradient(linear, X, TARGET)
  np.testing.assert_allclose(grads.reshape(5, -1), W[:, TARGET].T, rtol=1e-6)


def test_integrated_gradients_are_complete():
  target = jnp.asarray([0, 4, 2, 5, 1])
  maps = attribution.integrated_gradients(nonlinear, X, target, 0.0, steps=256)
  f = lambda x: jnp.take_along_axis(nonlinear(x), target[:, None], 1)[:, 0]
  np.testing.assert_allclose(
    maps.reshape(5, -1).sum(1), f(X) - f(jnp.zeros_like(X)), rtol=1e-3, atol=1e-4
  )


def test_occlusion_of_a_linear_model_is_each_patch_s_contribution():
  maps = attribution.occlusion(linear, X, TARGET, 0.0, window=(2, 2, 1))
  contribution = X[..., 0] * W[:, TARGET].T.reshape(5, 4, 4)  # [N, H, W]
  patch_sum = contribution.reshape(5, 2, 2, 2, 2).sum((2, 4))  # [N, 2, 2] per 2x2 patch
  expected = jnp.repeat(jnp.repeat(patch_sum, 2, 1), 2, 2)
  np.testing.assert_allclose(maps[..., 0], expected, rtol=1e-5, atol=1e-6)


def test_smoothgrad_of_a_linear_model_is_its_gradient():
  maps = attribution.smoothgrad(linear, X, TARGET, jax.random.key(0), samples=4)
  np.testing.assert_allclose(maps, attribution.gradient(linear, X, TARGET), rtol=1e-5)


def test_a_true_ranking_deletes_faster_than_a_random_one():
  def probs(x):
    return np.asarray(jax.nn.softmax(linear(jnp.asarray(x))))

  x = np.abs(np.asarray(X)) * np.sign(np.asarray(W[:, 0]).reshape(1, 4, 4, 1))  # all for class 0
  target = np.zeros(5, int)
  truth = attribution.element_map(np.asarray(x) * np.asarray(W[:, 0]).reshape(1, 4, 4, 1))
  random = RNG.uniform(size=truth.shape)
  good = attribution.deletion_insertion(probs, x, truth, target, 0.0, steps=16)
  chance = attribution.deletion_insertion(probs, x, random, target, 0.0, steps=16)
  assert good["deletion_auc"].mean() < chance["deletion_auc"].mean()
  assert good["insertion_auc"].mean() > chance["insertion_auc"].mean()
  np.testing.assert_allclose(good["deletion"][:, 0], good["insertion"][:, -1])  # x itself
  np.testing.assert_allclose(good["deletion"][:, -1], good["insertion"][:, 0])  # the baseline


def test_unknown_method_is_one_line():
  with pytest.raises(ValueError, match="unknown attribution method 'xrai'"):
    attribution.attribute("xrai", linear, X, TARGET, baseline=0.0)


class TwoConvs(nn.Module):
  """Conv -> relu -> Conv (1x1, one channel) -> logits (mean, -mean) of the last conv's output."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(3, (3, 3), name="first")(x))
    a = nn.Conv(1, (1, 1), name="last")(x)  # [N, H, W, 1]
    m = a.mean(axis=(1, 2, 3))
    return jnp.stack([m, -m], axis=1)


def test_gradcam_weights_the_last_conv_by_its_mean_gradient():
  model = TwoConvs()
  params = model.init(jax.random.key(0), X)
  logits_fn = lambda x: model.apply(params, x)
  assert attribution.conv_layers(logits_fn, X) == [
    (("first",), (5, 4, 4, 3)),
    (("last",), (5, 4, 4, 1)),
  ]
  last = nn.relu(nn.Conv(3, (3, 3)).apply({"params": params["params"]["first"]}, X))
  a = nn.Conv(1, (1, 1)).apply({"params": params["params"]["last"]}, last)[..., 0]  # [N, 4, 4]
  # d mean(A) / dA = 1 / 16 everywhere: class 0's map is relu(A) / 16, class 1's relu(-A) / 16.
  target = jnp.asarray([0, 1, 0, 1, 1])
  maps = attribution.gradcam(logits_fn, X, target)
  sign = np.where(np.asarray(target) == 0, 1.0, -1.0)[:, None, None]
  expected = np.maximum(sign * np.asarray(a), 0) / 16
  np.testing.assert_allclose(maps[..., 0], expected, rtol=1e-5, atol=1e-7)
  assert float(maps.max()) > 0  # the case is not trivially zero


def test_gradcam_needs_a_convolution():
  with pytest.raises(ValueError, match="Grad-CAM needs a model with a convolution"):
    attribution.gradcam(linear, X, TARGET)


def test_cascading_randomization_replaces_layers_from_the_top():
  trained = {"conv": 1, "dense": 2, "out": 3}
  fresh = {"conv": -1, "dense": -2, "out": -3}
  stages = attribution.randomized_params(trained, fresh)
  assert stages == [
    ("out", {"conv": 1, "dense": 2, "out": -3}),
    ("dense", {"conv": 1, "dense": -2, "out": -3}),
    ("conv", {"conv": -1, "dense": -2, "out": -3}),
  ]
  with pytest.raises(ValueError, match="parameter trees differ"):
    attribution.randomized_params(trained, {"conv": 0})
  # the order is the fresh tree's (flax's call order), whatever the trained one's (a restored
  # checkpoint's keys are sorted: an LSTM's "Dense_0" before its "rnn")
  restored, init = {"Dense_0": 1, "rnn": 2}, {"rnn": -2, "Dense_0": -1}
  assert [name for name, _ in attribution.randomized_params(restored, init)] == ["Dense_0", "rnn"]


def test_spearman_matches_scipy():
  from scipy.stats import spearmanr

  a = RNG.normal(size=(4, 3, 3))
  b = a + RNG.normal(size=(4, 3, 3))
  b[1] = -a[1]
  b[2] = np.round(a[2])  # ties
  got = attribution.spearman(a, b)
  want = [spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(4)]
  np.testing.assert_allclose(got, want, rtol=1e-10)
  assert got[1] == pytest.approx(-1.0)
  assert attribution.spearman(a[:1], np.zeros((1, 3, 3)))[0] == 0.0


# Sequences [N, T, F] and clips [N, T, H, W, C]: the same methods along the time axis.
SEQ = jnp.asarray(RNG.normal(size=(4, 6, 3)), jnp.float32)  # 6 time steps of 3 features
SEQ_TARGET = jnp.asarray([0, 1, 2, 0])
CLIPS = jnp.asarray(RNG.uniform(size=(2, 3, 8, 8, 1)), jnp.float32)  # 3 frames of 8x8
V = jnp.asarray(RNG.normal(size=(6 * 3, 3)), jnp.float32)  # a linear classifier of sequences


class SeqLSTM(nn.Module):
  """An LSTM over time, its last output to 3 logits: no convolution."""

  @nn.compact
  def __call__(self, x):
    h = nn.RNN(nn.LSTMCell(8))(x)  # [N, T, 8]
    return nn.Dense(3)(h[:, -1])


class SeqConv(nn.Module):
  """A 1-D convolution over time, averaged over time, to 3 logits."""

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(4, (3,))(x))  # [N, T, 4]
    return nn.Dense(3)(h.mean(1))


class FrameConv(nn.Module):
  """A 1x1 convolution of every frame (frames folded into the batch); logits (mean, -mean)."""

  @nn.compact
  def __call__(self, x):
    n, t = x.shape[:2]
    a = nn.Conv(1, (1, 1))(x.reshape(n * t, *x.shape[2:]))  # [N*T, H, W, 1]
    m = a.reshape(n, -1).mean(1)
    return jnp.stack([m, -m], axis=1)


def _bound(model, x, **kwargs):
  params = model.init(jax.random.key(1), x, **kwargs)
  return lambda v: model.apply(params, v, **kwargs)


def _clip_classifier():
  from jaxvision.models import video

  return _bound(video.VideoClassifier(3, encoder=(4,), hidden=(4,)), CLIPS, train=False)


@pytest.mark.parametrize("method", attribution.METHODS)
def test_maps_of_sequences_and_clips_have_the_inputs_shape(method):
  seq_model = SeqConv() if method == "gradcam" else SeqLSTM()
  cases = [(_bound(seq_model, SEQ), SEQ, SEQ_TARGET)]
  cases.append((_clip_classifier(), CLIPS, jnp.asarray([2, 0])))
  for logits_fn, x, target in cases:
    maps = attribution.attribute(method, logits_fn, x, target, baseline=0.0)
    assert maps.shape == x.shape
    assert np.isfinite(maps).all() and float(jnp.abs(maps).max()) > 0


def test_occlusion_of_a_sequence_covers_spans_of_time_steps():
  linear_seq = lambda x: x.reshape(len(x), -1) @ V
  maps = attribution.occlusion(linear_seq, SEQ, SEQ_TARGET, 0.0, window=(4, 3))
  contribution = (SEQ.reshape(4, -1) * V[:, SEQ_TARGET].T).reshape(4, 6, 3)
  spans = [contribution[:, :4].sum((1, 2)), contribution[:, 4:].sum((1, 2))]  # steps 0-3, 4-5
  expected = jnp.repeat(jnp.stack(spans, 1), jnp.asarray([4, 2]), axis=1, total_repeat_length=6)
  np.testing.assert_allclose(maps, jnp.broadcast_to(expected[..., None], maps.shape), rtol=1e-5)
  assert attribution.default_window((40, 1)) == (4, 1)
  assert attribution.default_window((8, 48, 48, 1)) == (1, 8, 8, 1)


def test_integrated_gradients_of_a_sequence_model_are_complete():
  logits_fn = _bound(SeqLSTM(), SEQ)
  maps = attribution.integrated_gradients(logits_fn, SEQ, SEQ_TARGET, 0.0, steps=256)
  f = lambda x: jnp.take_along_axis(logits_fn(x), SEQ_TARGET[:, None], 1)[:, 0]
  gap = f(SEQ) - f(jnp.zeros_like(SEQ))
  assert float(jnp.abs(gap).min()) > 1e-3  # the check is not trivially 0 = 0
  np.testing.assert_allclose(maps.reshape(4, -1).sum(1), gap, rtol=1e-3, atol=1e-4)


def test_a_true_ranking_of_time_feature_cells_deletes_faster_than_a_random_one():
  linear_seq = lambda x: np.asarray(jax.nn.softmax(jnp.asarray(x).reshape(len(x), -1) @ V))
  x = np.abs(np.asarray(SEQ)) * np.sign(np.asarray(V[:, 0]).reshape(1, 6, 3))  # all for class 0
  truth = attribution.element_map(x * np.asarray(V[:, 0]).reshape(1, 6, 3))
  assert truth.shape == (4, 6, 3)  # every time-feature cell is an element
  target = np.zeros(4, int)
  good = attribution.deletion_insertion(linear_seq, x, truth, target, 0.0, steps=9)
  chance = attribution.deletion_insertion(
    linear_seq, x, RNG.uniform(size=truth.shape), target, 0.0, steps=9
  )
  assert good["deletion_auc"].mean() < chance["deletion_auc"].mean()
  assert good["insertion_auc"].mean() > chance["insertion_auc"].mean()
  np.testing.assert_allclose(good["deletion"][:, -1], good["insertion"][:, 0])  # the baseline


def test_element_maps_sum_channels_of_images_and_clips_only():
  assert attribution.element_map(np.ones((2, 6, 3))).shape == (2, 6, 3)
  np.testing.assert_array_equal(attribution.element_map(-np.ones((2, 3, 8, 8, 2))), 2.0)


def test_gradcam_without_a_convolution_is_one_line():
  with pytest.raises(ValueError, match=r"^Grad-CAM needs a model with a convolution[^\n]*$"):
    attribution.attribute("gradcam", _bound(SeqLSTM(), SEQ), SEQ, SEQ_TARGET, baseline=0.0)


def test_gradcam_of_a_1d_conv_spans_time():
  logits_fn = _bound(SeqConv(), SEQ)
  assert attribution.conv_layers(logits_fn, SEQ) == [(("Conv_0",), (4, 6, 4))]
  maps = attribution.gradcam(logits_fn, SEQ, SEQ_TARGET)
  np.testing.assert_allclose(maps, maps[..., :1].repeat(3, -1))  # spread over the features
  assert float(maps.std(axis=1).min()) > 0  # varies along time


def test_gradcam_of_frames_reads_the_frames_folded_into_the_batch():
  model = FrameConv()
  params = model.init(jax.random.key(0), CLIPS)
  logits_fn = lambda x: model.apply(params, x)
  assert attribution.conv_layers(logits_fn, CLIPS) == [(("Conv_0",), (6, 8, 8, 1))]
  conv = {"params": params["params"]["Conv_0"]}
  a = nn.Conv(1, (1, 1)).apply(conv, CLIPS.reshape(6, 8, 8, 1)).reshape(2, 3, 8, 8)
  # d mean(A) / dA = 1 / (3 * 8 * 8) over the clip: class 0's map is relu(A) / 192.
  maps = attribution.gradcam(logits_fn, CLIPS, jnp.asarray([0, 1]))
  sign = np.asarray([1.0, -1.0])[:, None, None, None]
  np.testing.assert_allclose(maps[..., 0], np.maximum(sign * a, 0) / 192, rtol=1e-5, atol=1e-7)
  assert float(maps.max()) > 0


def test_gradcam_skips_convolutions_scanned_over_time():
  """The video classifier's ConvLSTM gates are a convolution inside a scan: not a layer."""
  layers = attribution.conv_layers(_clip_classifier(), CLIPS)
  assert layers == [(("encoder", "Conv_0"), (6, 4, 4, 4))]


class EarlyAndLate(nn.Module):
  """Conv_0 (1x1) -> spatial mean -> Conv_1 (1x1) on the 1x1 result: the logit."""

  @nn.compact
  def __call__(self, x):
    a = nn.Conv(1, (1, 1))(x)  # [N, H, W, 1]
    b = nn.Conv(1, (1, 1))(a.mean(axis=(1, 2), keepdims=True))  # [N, 1, 1, 1]
    return b.reshape(len(x), 1)


def test_gradcam_of_an_earlier_layer_lights_its_region():
  one = {"kernel": jnp.ones((1, 1, 1, 1)), "bias": jnp.zeros((1,))}
  params = {"params": {"Conv_0": one, "Conv_1": one}}
  logits_fn = lambda x: EarlyAndLate().apply(params, x)
  x = jnp.zeros((2, 8, 8, 1)).at[0, :4, :4].set(1.0).at[1, 5:, 2:6].set(2.0)  # known regions
  target = jnp.zeros(2, jnp.int32)
  early = attribution.gradcam(logits_fn, x, target, layer=-2)
  np.testing.assert_allclose(early, x / 64, atol=1e-7)  # Conv_0's A = x, its gradient 1 / 64
  np.testing.assert_allclose(attribution.gradcam(logits_fn, x, target, layer="Conv_0"), early)
  np.testing.assert_allclose(attribution.gradcam(logits_fn, x, target, layer=0), early)
  late = attribution.gradcam(logits_fn, x, target)  # Conv_1's 1x1 map: no place in particular
  np.testing.assert_allclose(late, jnp.broadcast_to(late[:, :1, :1], late.shape))
  with pytest.raises(ValueError, match=r"layer 2 is out of range: the model has 2 convolutions"):
    attribution.gradcam(logits_fn, x, target, layer=2)
  with pytest.raises(ValueError, match=r"layer 'Conv_9' is not one of the model's convolutions"):
    attribution.gradcam(logits_fn, x, target, layer="Conv_9")
