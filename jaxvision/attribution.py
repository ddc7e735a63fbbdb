"""Attribution maps of a classifier and how faithful they are, as pure functions.

A classifier here is any `logits_fn(inputs [N, ...]) -> logits [N, K]` (e.g. a loaded run's
`apply("predict")`); every map has the inputs' shape and explains the logit of one class per
example (`target` [N]). Methods:

- `gradient`: d logit / d input (Simonyan et al. 2014).
- `smoothgrad`: the gradient averaged over noisy copies of the input (Smilkov et al. 2017).
- `integrated_gradients`: (x - baseline) times the gradient averaged along the straight path from
  the baseline (Sundararajan et al. 2017; midpoint Riemann sum, so the attributions sum to
  f(x) - f(baseline) up to the sum's error).
- `occlusion`: how much the logit drops when a patch is set to the baseline (Zeiler & Fergus).
- `gradcam`: the last convolution's output channels weighted by their spatially averaged
  gradients, summed, rectified and resized to the input (Selvaraju et al. 2017); for flax models
  with a `nn.Conv` (the layer is found by intercepting the model's calls, so no model declares
  it).

Sanity check (Adebayo et al. 2018): `randomized_params` re-initialises a model's layers from the
top down, cumulatively; a map that explains the model must change as they go (`spearman` of the
maps with the trained model's falls), while one that only reflects the input does not.

Faithfulness (RISE's deletion and insertion, Petsiuk et al. 2018): pixels are set to the baseline
(deletion) or revealed on top of it (insertion) in the order of a map, most important first,
and the class probability is followed; the area under that curve is small for deletion (large
for insertion) when the map ranks truly important pixels first. A random order is the reference.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

METHODS = ("gradient", "smoothgrad", "ig", "occlusion", "gradcam")
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


def occlusion(
  logits_fn: LogitsFn, x: jax.Array, target: jax.Array, baseline, *, patch: int = 4
) -> jax.Array:
  """For images [N, H, W, C]: each `patch` x `patch` square (stride `patch`) gets the drop of the
  target logit when it is set to `baseline`; every pixel of the square carries it."""
  n, h, w, _ = x.shape
  score = lambda images: jnp.take_along_axis(logits_fn(images), target[:, None], axis=1)[:, 0]
  base = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
  full = score(x)  # [N]
  out = jnp.zeros((n, h, w), x.dtype)
  for top in range(0, h, patch):
    for left in range(0, w, patch):
      square = jnp.zeros((h, w), bool).at[top : top + patch, left : left + patch].set(True)
      drop = full - score(jnp.where(square[None, :, :, None], base, x))  # [N]
      out = jnp.where(square[None], drop[:, None, None], out)
  return jnp.broadcast_to(out[..., None], x.shape)


def _is_conv_call(context) -> bool:
  return isinstance(context.module, nn.Conv) and context.method_name == "__call__"


def last_conv(logits_fn: LogitsFn, x: jax.Array) -> tuple[tuple[str, ...], tuple[int, ...]]:
  """The scope path and output shape of the last `nn.Conv` a flax model calls on x (traced
  abstractly; nothing runs). Raises ValueError when it calls none."""
  calls = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if _is_conv_call(context):
      calls.append((tuple(context.module.scope.path), tuple(out.shape)))
    return out

  with nn.intercept_methods(record):
    jax.eval_shape(lambda v: logits_fn(v), x)  # a new function: a cached trace would skip it
  if not calls:
    raise ValueError("Grad-CAM needs a model with a convolution (nn.Conv); this one has none")
  return calls[-1]


def gradcam(logits_fn: LogitsFn, x: jax.Array, target: jax.Array) -> jax.Array:
  """Grad-CAM for images [N, H, W, C] of a flax ConvNet: with A the last convolution's output
  [N, h, w, K] (before its nonlinearity) and alpha_k the mean over positions of d logit / d A_k,
  relu(sum_k alpha_k A_k), resized bilinearly to H x W and spread evenly over the C channels."""
  path, shape = last_conv(logits_fn, x)

  def target_logit(offset):
    seen = []

    def add(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if _is_conv_call(context) and tuple(context.module.scope.path) == path:
        seen.append(out)
        return out + offset
      return out

    with nn.intercept_methods(add):
      logit = _target_logit(logits_fn, target)(x)
    return logit, seen[0]

  grads, features = jax.grad(target_logit, has_aux=True)(jnp.zeros(shape, x.dtype))
  weights = grads.mean(axis=(1, 2), keepdims=True)  # [N, 1, 1, K]
  cam = jax.nn.relu((weights * features).sum(-1))  # [N, h, w]
  n, h, w, c = x.shape
  cam = jax.image.resize(cam, (n, h, w), "bilinear")
  return jnp.broadcast_to(cam[..., None] / c, x.shape)


def attribute(
  method: str, logits_fn: LogitsFn, x, target, *, baseline, key: jax.Array | None = None
) -> jax.Array:
  """The map of `method` (one of `METHODS`) with its defaults."""
  x, target = jnp.asarray(x, jnp.float32), jnp.asarray(target, jnp.int32)
  if method == "gradient":
    return gradient(logits_fn, x, target)
  if method == "smoothgrad":
    return smoothgrad(logits_fn, x, target, key if key is not None else jax.random.key(0))
  if method == "ig":
    return integrated_gradients(logits_fn, x, target, baseline)
  if method == "occlusion":
    return occlusion(logits_fn, x, target, baseline)
  if method == "gradcam":
    return gradcam(logits_fn, x, target)
  raise ValueError(f"unknown attribution method {method!r}; expected one of {METHODS}")


def pixel_map(attributions: np.ndarray) -> np.ndarray:
  """[N, H, W, C] -> [N, H, W]: each pixel's importance, the channels' absolute values summed
  (the ranking the faithfulness curves and the pictures use)."""
  return np.abs(np.asarray(attributions)).sum(-1)


def deletion_insertion(
  prob_fn: Callable[[np.ndarray], np.ndarray],
  x: np.ndarray,
  importance: np.ndarray,
  target: np.ndarray,
  baseline,
  *,
  steps: int = 28,
) -> dict[str, np.ndarray]:
  """RISE's deletion and insertion curves and their areas, per image.

  Args:
    prob_fn: images [M, H, W, C] -> class probabilities [M, K].
    x: images [N, H, W, C].
    importance: [N, H, W], larger first.
    target: [N] the class followed.
    baseline: the fill of deleted (and not yet inserted) pixels, broadcastable to x.
    steps: the curve's points after the start: fractions 0, 1/steps, ..., 1 of the pixels.

  Returns:
    {"deletion", "insertion"}: curves [N, steps + 1] of the target's probability;
    {"deletion_auc", "insertion_auc"}: their areas [N] (trapezoid over the fractions).
  """
  n, h, w, _ = x.shape
  base = np.broadcast_to(np.asarray(baseline, x.dtype), x.shape)
  ranks = np.argsort(np.argsort(-importance.reshape(n, -1), axis=1), axis=1)  # 0: most important
  curves = {"deletion": [], "insertion": []}
  for k in range(steps + 1):
    first = (ranks < round(k * h * w / steps)).reshape(n, h, w, 1)  # the top fraction k / steps
    for name, images in (
      ("deletion", np.where(first, base, x)),
      ("insertion", np.where(first, x, base)),
    ):
      probs = prob_fn(images)
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
    trained: a model's parameters, its top-level layers in call order (as flax creates them).
    fresh: the same tree from another initialisation.

  Returns:
    [(layer name, parameters with that layer and every layer above it re-initialised)], one
    entry per top-level layer, the output layer first.
  """
  if list(trained) != list(fresh):
    raise ValueError(f"parameter trees differ: {list(trained)} vs {list(fresh)}")
  stages, current = [], dict(trained)
  for name in reversed(list(trained)):
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
