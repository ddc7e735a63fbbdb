"""Attribution maps of a classifier and how faithful they are, as pure functions.

A classifier here is any `logits_fn(inputs [N, ...]) -> logits [N, K]` (e.g. a loaded run's
`apply("predict")`); every map has the inputs' shape and explains the logit of one class per
example (`target` [N]). Inputs are sequences [N, T, F], images [N, H, W, C] or clips
[N, T, H, W, C]; their *elements* (what the pictures show and the faithfulness curves remove) are
time-feature cells, pixels (all channels together) and voxels (all channels together). Methods:

- `gradient`: d logit / d input (Simonyan et al. 2014).
- `smoothgrad`: the gradient averaged over noisy copies of the input (Smilkov et al. 2017).
- `integrated_gradients`: (x - baseline) times the gradient averaged along the straight path from
  the baseline (Sundararajan et al. 2017; midpoint Riemann sum, so the attributions sum to
  f(x) - f(baseline) up to the sum's error).
- `occlusion`: how much the logit drops when a window (a patch, a span of time steps, a patch of
  one frame) is set to the baseline (Zeiler & Fergus).
- `gradcam`: a convolution's output channels weighted by their gradients averaged over positions,
  summed, rectified and resized to the input (Selvaraju et al. 2017; by definition the last
  convolution, `layer=-1`, but any one will do): for flax models with an `nn.Conv` (or
  `models.layers.Conv`), 1-D over a sequence's time, 2-D over an image, or 2-D per frame of a
  clip (the frames folded into the batch: the map then spans time and space). The layers are
  found by intercepting the model's calls, so no model declares them.

Sanity check (Adebayo et al. 2018): `randomized_params` re-initialises a model's layers from the
top down, cumulatively; a map that explains the model must change as they go (`spearman` of the
maps with the trained model's falls), while one that only reflects the input does not.

Faithfulness (RISE's deletion and insertion, Petsiuk et al. 2018): elements are set to the
baseline (deletion) or revealed on top of it (insertion) in the order of a map, most important
first, and the class probability is followed; the area under that curve is small for deletion
(large for insertion) when the map ranks truly important elements first. A random order is the
reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core import tracers

from jaxvision.models import layers

METHODS = ("gradient", "smoothgrad", "ig", "occlusion", "gradcam")
CONVOLUTIONS = (nn.Conv, layers.Conv)
LogitsFn = Callable[[jax.Array], jax.Array]


def _target_logit(logits_fn: LogitsFn, target: jax.Array) -> Callable[[jax.Array], jax.Array]:
  """x [N, ...] -> the sum over examples of each one's target logit (examples are independent,
  so its gradient is every example's own)."""
  return lambda x: jnp.sum(jnp.take_along_axis(logits_fn(x), target[:, None], axis=1))


def gradient(logits_fn: LogitsFn, x: jax.Array, target: jax.Array) -> jax.Array:
  return jax.grad(_target_logit(logits_fn, target))(x)


def smoothgrad(
  logits_fn: LogitsFn,
  x: jax.Array,
  target: jax.Array,
  key: jax.Array,
  *,
  samples: int = 32,
  noise: float = 0.15,
) -> jax.Array:
  """The gradient averaged over `samples` copies with Gaussian noise of standard deviation
  `noise` times the inputs' range (max - min over the batch)."""
  sigma = noise * (jnp.max(x) - jnp.min(x))
  grad = jax.grad(_target_logit(logits_fn, target))
  keys = jax.random.split(key, samples)
  total = jax.lax.fori_loop(
    0,
    samples,
    lambda i, acc: acc + grad(x + sigma * jax.random.normal(keys[i], x.shape)),
    jnp.zeros_like(x),
  )
  return total / samples


def integrated_gradients(
  logits_fn: LogitsFn, x: jax.Array, target: jax.Array, baseline, *, steps: int = 64
) -> jax.Array:
  """(x - baseline) times the mean gradient at the midpoints of `steps` equal segments of the
  straight path from `baseline` (broadcastable to x) to x."""
  baseline = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
  grad = jax.grad(_target_logit(logits_fn, target))
  alphas = (jnp.arange(steps, dtype=x.dtype) + 0.5) / steps
  total = jax.lax.fori_loop(
    0,
    steps,
    lambda i, acc: acc + grad(baseline + alphas[i] * (x - baseline)),
    jnp.zeros_like(x),
  )
  return (x - baseline) * total / steps


def default_window(shape: Sequence[int]) -> tuple[int, ...]:
  """Occlusion's window for one input of `shape`: 4 time steps of every feature of a sequence
  [T, F], a 4x4 patch of an image [H, W, C], an 8x8 patch of one frame of a clip [T, H, W, C]
  (channels always together)."""
  if len(shape) == 2:
    return (4, shape[1])
  if len(shape) == 3:
    return (4, 4, shape[2])
  if len(shape) == 4:
    return (1, 8, 8, shape[3])
  raise ValueError(f"no occlusion window for inputs of shape {tuple(shape)}")


def occlusion(
  logits_fn: LogitsFn,
  x: jax.Array,
  target: jax.Array,
  baseline,
  *,
  window: Sequence[int] | None = None,
) -> jax.Array:
  """Each window of the inputs (`window`: a size per axis of one input, default
  `default_window`; stride the window) gets the drop of the target logit when it is set to
  `baseline`; every element of the window carries it. One compiled forward pass serves all
  windows (a loop), so a clip's hundreds of windows compile once."""
  shape = x.shape[1:]
  window = tuple(window or default_window(shape))
  if len(window) != len(shape):
    raise ValueError(f"occlusion window {window} does not fit inputs of shape {shape}")
  counts = [math.ceil(s / w) for s, w in zip(shape, window, strict=True)]
  score = lambda v: jnp.take_along_axis(logits_fn(v), target[:, None], axis=1)[:, 0]
  base = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
  full = score(x)  # [N]
  axes = (-1,) + (1,) * len(shape)
  positions = jnp.indices(shape)  # [D, *shape]
  size = jnp.asarray(window).reshape(axes)

  def occlude(i, out):
    corner = jnp.stack(jnp.unravel_index(i, counts)).reshape(axes) * size
    inside = jnp.all((positions >= corner) & (positions < corner + size), axis=0)  # [*shape]
    drop = full - score(jnp.where(inside[None], base, x))  # [N]
    return jnp.where(inside[None], drop.reshape(axes), out)

  return jax.lax.fori_loop(0, math.prod(counts), occlude, jnp.zeros_like(x))


def _is_conv_call(context) -> bool:
  return isinstance(context.module, CONVOLUTIONS) and context.method_name == "__call__"


def conv_layers(logits_fn: LogitsFn, x: jax.Array) -> list[tuple[tuple[str, ...], tuple[int, ...]]]:
  """The convolutions a flax model calls on x, in call order, as [(scope path, output shape)]
  (traced abstractly; nothing runs). Calls inside a lifted transform, such as the gate
  convolution of a ConvLSTM cell scanned over time, are left out: each of their outputs is one
  time step's, not the layer's."""
  calls, top = {}, []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if _is_conv_call(context) and tracers.current_trace() == top[0]:
      calls.setdefault(tuple(context.module.scope.path), tuple(out.shape))
    return out

  def trace(v):
    top.append(tracers.current_trace())
    with nn.intercept_methods(record):
      return logits_fn(v)

  jax.eval_shape(trace, x)
  return list(calls.items())


def conv_layer(
  logits_fn: LogitsFn, x: jax.Array, layer: int | str = -1
) -> tuple[tuple[str, ...], tuple[int, ...]]:
  """One of `conv_layers`: by position in call order (-1: the last) or by its path ("Conv_1",
  "encoder/Conv_0"). Raises ValueError when the model calls no convolution or not that one."""
  layers = conv_layers(logits_fn, x)
  if not layers:
    raise ValueError("Grad-CAM needs a model with a convolution (nn.Conv); this one has none")
  names = ["/".join(path) for path, _ in layers]
  if isinstance(layer, str):
    if layer not in names:
      raise ValueError(f"Grad-CAM layer {layer!r} is not one of the model's convolutions {names}")
    return layers[names.index(layer)]
  if not -len(layers) <= layer < len(layers):
    raise ValueError(
      f"Grad-CAM layer {layer} is out of range: the model has {len(layers)} convolutions {names}"
    )
  return layers[layer]


def gradcam(
  logits_fn: LogitsFn, x: jax.Array, target: jax.Array, *, layer: int | str = -1
) -> jax.Array:
  """Grad-CAM of a flax ConvNet: with A a convolution's output (see `conv_layer`; before its
  nonlinearity) and alpha_k the mean over positions of d logit / d A_k, relu(sum_k alpha_k A_k),
  resized (multi)linearly to the input's elements and spread evenly over its last axis (the
  channels or features a convolution mixes).

  A is [N, *positions, K] with as many positions as the input has axes between the batch and
  the last (a 1-D conv over a sequence's time, a 2-D conv over an image), or [N * T, h, w, K] for
  a conv applied to every frame of clips [N, T, H, W, C] (then A is read as [N, T, h, w, K]).
  """
  path, shape = conv_layer(logits_fn, x, layer)
  n, positions = x.shape[0], x.ndim - 2
  folded = x.shape[1 : 1 + positions - (len(shape) - 2)]  # input axes folded into the batch
  if len(shape) - 2 > positions or shape[0] != n * math.prod(folded):
    raise ValueError(
      f"Grad-CAM cannot place {'/'.join(path)}'s output {shape} on inputs of shape {x.shape}"
    )

  def target_logit(offset):
    seen = []

    def add(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if _is_conv_call(context) and tuple(context.module.scope.path) == path and not seen:
        seen.append(out)
        return out + offset
      return out

    with nn.intercept_methods(add):
      logit = _target_logit(logits_fn, target)(x)
    return logit, seen[0]

  grads, features = jax.grad(target_logit, has_aux=True)(jnp.zeros(shape, x.dtype))
  unfolded = (n, *folded, *shape[1:])  # [N, *positions, K]
  grads, features = grads.reshape(unfolded), features.reshape(unfolded)
  weights = grads.mean(axis=tuple(range(1, positions + 1)), keepdims=True)  # [N, 1.., K]
  cam = jax.nn.relu((weights * features).sum(-1))  # [N, *positions]
  cam = jax.image.resize(cam, x.shape[:-1], "linear")
  return jnp.broadcast_to(cam[..., None] / x.shape[-1], x.shape)


def attribute(
  method: str,
  logits_fn: LogitsFn,
  x,
  target,
  *,
  baseline,
  key: jax.Array | None = None,
  window: Sequence[int] | None = None,
  layer: int | str = -1,
) -> jax.Array:
  """The map of `method` (one of `METHODS`) with its defaults; `window` is occlusion's and
  `layer` Grad-CAM's convolution."""
  x, target = jnp.asarray(x, jnp.float32), jnp.asarray(target, jnp.int32)
  if method == "gradient":
    return gradient(logits_fn, x, target)
  if method == "smoothgrad":
    return smoothgrad(logits_fn, x, target, key if key is not None else jax.random.key(0))
  if method == "ig":
    return integrated_gradients(logits_fn, x, target, baseline)
  if method == "occlusion":
    return occlusion(logits_fn, x, target, baseline, window=window)
  if method == "gradcam":
    return gradcam(logits_fn, x, target, layer=layer)
  raise ValueError(f"unknown attribution method {method!r}; expected one of {METHODS}")


def element_map(attributions: np.ndarray) -> np.ndarray:
  """Each element's importance, the absolute values of its channels summed (the ranking the
  faithfulness curves and the pictures use): sequences [N, T, F] keep their shape (a feature is
  an element of its own), images [N, H, W, C] -> [N, H, W], clips [N, T, H, W, C] ->
  [N, T, H, W]."""
  magnitude = np.abs(np.asarray(attributions))
  return magnitude if magnitude.ndim == 3 else magnitude.sum(-1)


def deletion_insertion(
  prob_fn: Callable[[np.ndarray], np.ndarray],
  x: np.ndarray,
  importance: np.ndarray,
  target: np.ndarray,
  baseline,
  *,
  steps: int = 28,
) -> dict[str, np.ndarray]:
  """RISE's deletion and insertion curves and their areas, per example.

  Args:
    prob_fn: inputs [M, ...] -> class probabilities [M, K].
    x: inputs [N, ...].
    importance: [N, *elements] (see `element_map`), larger first.
    target: [N] the class followed.
    baseline: the fill of deleted (and not yet inserted) elements, broadcastable to x.
    steps: the curve's points after the start: fractions 0, 1/steps, ..., 1 of the elements.

  Returns:
    {"deletion", "insertion"}: curves [N, steps + 1] of the target's probability;
    {"deletion_auc", "insertion_auc"}: their areas [N] (trapezoid over the fractions).
  """
  n, size = importance.shape[0], importance[0].size
  shape = importance.shape + (1,) * (x.ndim - importance.ndim)  # channels share their element
  base = np.broadcast_to(np.asarray(baseline, x.dtype), x.shape)
  ranks = np.argsort(np.argsort(-importance.reshape(n, -1), axis=1), axis=1)  # 0: most important
  curves = {"deletion": [], "insertion": []}
  for k in range(steps + 1):
    first = (ranks < round(k * size / steps)).reshape(shape)  # the top fraction k / steps
    for name, inputs in (
      ("deletion", np.where(first, base, x)),
      ("insertion", np.where(first, x, base)),
    ):
      probs = prob_fn(inputs)
      curves[name].append(probs[np.arange(n), target])
  out = {name: np.stack(c, axis=1) for name, c in curves.items()}
  for name in ("deletion", "insertion"):
    curve = out[name]
    out[f"{name}_auc"] = (curve[:, :-1] + curve[:, 1:]).sum(1) / (2 * steps)  # trapezoid
  return out


def randomized_params(trained: dict, fresh: dict) -> list[tuple[str, dict]]:
  """Cascading randomization: the trained parameters with their top-level layers replaced by
  freshly initialised ones, from the output layer down, cumulatively.

  Args:
    trained: a model's parameters (in any order: a restored checkpoint sorts its keys).
    fresh: the same layers from another initialisation, in call order (as flax's `init`
      creates them): the order of the cascade.

  Returns:
    [(layer name, parameters with that layer and every layer above it re-initialised)], one
    entry per top-level layer, the output layer first.
  """
  if sorted(trained) != sorted(fresh):
    raise ValueError(f"parameter trees differ: {sorted(trained)} vs {sorted(fresh)}")
  stages, current = [], dict(trained)
  for name in reversed(list(fresh)):
    current = {**current, name: fresh[name]}
    stages.append((name, current))
  return stages


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Spearman's rank correlation of each pair of maps: a, b [N, ...] -> [N] (ties share their
  mean rank; a constant map correlates 0)."""
  from scipy.stats import rankdata

  n = a.shape[0]
  ra = rankdata(np.asarray(a).reshape(n, -1), axis=1)
  rb = rankdata(np.asarray(b).reshape(n, -1), axis=1)
  ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
  norm = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
  return np.where(norm > 0, (ra * rb).sum(1) / np.maximum(norm, 1e-30), 0.0)
