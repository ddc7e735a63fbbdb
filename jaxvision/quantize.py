"""Int8 quantization of flax models: per-channel weights, calibrated activations, export.

Post-training quantization (PTQ), as pure functions:

- `quantize_params`: every kernel (a leaf with two or more axes) becomes int8 values and a
  float32 scale per output channel (its last axis), symmetric: w ~ q * scale, q in [-127, 127];
  other leaves (biases, norms) stay float32.
- `calibrate`: the largest |input| each `nn.Dense` / `nn.Conv` sees over calibration batches (the
  layers found by intercepting the model's calls, so no model declares them).
- `quantized_logits`: the model run on dequantized weights with each Dense / Conv input rounded to
  int8 at its calibrated scale (per tensor): what int8 inference computes, in float arithmetic.
- `export` / `load_export`: the int8 model on disk (`.npz`, not deflated, so that only the
  format exploits zeros): a kernel that is mostly zeros (a pruned model) is stored as a packed
  bitmask and its non-zero int8 values (`export_float` writes the float32 baseline alike).

Quantization-aware training (QAT): `fake_quant` rounds to int8 in the forward pass with an
identity gradient (the straight-through estimator); `qat_apply` runs a model with its kernels
fake-quantized per output channel and each Dense / Conv input per tensor at the batch's own
range, so that training sees the int8 model's rounding (Jacob et al. 2018).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

QMAX = 127  # symmetric int8: [-127, 127] (-128 unused, so that q and -q both exist)


def is_kernel(leaf) -> bool:
  return np.ndim(leaf) >= 2


def quantize_per_channel(w) -> tuple[np.ndarray, np.ndarray]:
  """(q int8 of w's shape, scale float32 [out]) with w ~ q * scale along the last axis."""
  w = np.asarray(w, np.float32)
  peak = np.abs(w).reshape(-1, w.shape[-1]).max(axis=0)  # [out]
  scale = np.where(peak > 0, peak / QMAX, 1.0).astype(np.float32)
  q = np.clip(np.round(w / scale), -QMAX, QMAX).astype(np.int8)
  return q, scale


def quantize_params(params) -> dict:
  """A params tree with each kernel replaced by {"q": int8, "scale": float32 [out]}."""
  return jax.tree.map(
    lambda p: (
      dict(zip(("q", "scale"), quantize_per_channel(p), strict=True))
      if is_kernel(p)
      else np.asarray(p, np.float32)
    ),
    params,
  )


def _is_quantized(node) -> bool:
  return isinstance(node, dict) and set(node) == {"q", "scale"}


def dequantize_params(qparams) -> dict:
  """The float32 params a quantized tree stands for (q * scale for each kernel)."""
  return jax.tree.map(
    lambda n: n["q"].astype(np.float32) * n["scale"] if _is_quantized(n) else n,
    qparams,
    is_leaf=_is_quantized,
  )


def fake_quant(x: jax.Array, scale) -> jax.Array:
  """x rounded to the int8 grid of `scale` (clipped to +-127 steps) in the forward pass; the
  gradient is the identity (straight-through estimator)."""
  q = jnp.clip(jnp.round(x / scale), -QMAX, QMAX) * scale
  return x + jax.lax.stop_gradient(q - x)


def fake_quant_params(params):
  """Each kernel fake-quantized per output channel (scales from its current range, held
  constant for the gradient); other leaves unchanged."""

  def one(p):
    if not is_kernel(p):
      return p
    peak = jnp.max(jnp.abs(p).reshape(-1, p.shape[-1]), axis=0)
    return fake_quant(p, jax.lax.stop_gradient(jnp.where(peak > 0, peak / QMAX, 1.0)))

  return jax.tree.map(one, params)


def qat_apply(apply_fn: Callable) -> Callable:
  """`apply_fn(variables, x, ...)` as the int8 model computes it: kernels fake-quantized per
  channel, every Dense / Conv input fake-quantized per tensor at its batch's largest |value|."""

  def quantize_inputs(next_fun, args, kwargs, context):
    if _is_layer_call(context):
      x = args[0]
      scale = jax.lax.stop_gradient(jnp.maximum(jnp.max(jnp.abs(x)), 1e-12) / QMAX)
      args = (fake_quant(x, scale), *args[1:])
    return next_fun(*args, **kwargs)

  def fn(variables, *args, **kwargs):
    variables = {**variables, "params": fake_quant_params(variables["params"])}
    with nn.intercept_methods(quantize_inputs):
      return apply_fn(variables, *args, **kwargs)

  return fn


def _is_layer_call(context) -> bool:
  return isinstance(context.module, (nn.Dense, nn.Conv)) and context.method_name == "__call__"


def calibrate(logits_fn: Callable, batches: Iterable) -> dict[tuple[str, ...], float]:
  """{scope path: the largest |input| it saw} for every Dense / Conv layer of a flax model,
  over `batches` of inputs (each run eagerly through `logits_fn`)."""
  peaks: dict[tuple[str, ...], float] = {}

  def record(next_fun, args, kwargs, context):
    if _is_layer_call(context):
      path = tuple(context.module.scope.path)
      peaks[path] = max(peaks.get(path, 0.0), float(jnp.max(jnp.abs(args[0]))))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    for x in batches:
      logits_fn(x)
  if not peaks:
    raise ValueError("no nn.Dense or nn.Conv layer to quantize in this model")
  return peaks


def quantized_logits(logits_fn: Callable, input_peaks: dict) -> Callable:
  """`logits_fn` with each calibrated layer's input fake-quantized to int8 (per-tensor scale
  peak / 127); give it dequantized weights to run the whole int8 model."""

  def quantize_inputs(next_fun, args, kwargs, context):
    if _is_layer_call(context):
      path = tuple(context.module.scope.path)
      if path in input_peaks:
        scale = max(input_peaks[path], 1e-12) / QMAX
        args = (fake_quant(args[0], scale), *args[1:])
    return next_fun(*args, **kwargs)

  def fn(x):
    with nn.intercept_methods(quantize_inputs):
      return logits_fn(x)

  return fn


SPARSE_BELOW = 0.5  # a kernel with fewer non-zeros than this fraction is stored sparse


def _flat(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if _is_quantized(value):
      out[name] = value
    elif isinstance(value, dict):
      out.update(_flat(value, f"{name}/"))
    else:
      out[name] = value
  return out


def export(qparams, input_peaks: dict, path: str) -> int:
  """Writes an int8 model to `path` (a deflated .npz); returns its size in bytes. Kernels are
  int8 with per-channel scales; a mostly-zero kernel is a packed bitmask plus its non-zeros;
  the activation scales go along. Deflate is the entropy-coding stage of Han et al.'s Deep
  Compression (they Huffman-code): int8 weights of a trained model are far from uniform, and it
  takes ~8% off a dense CNN A's file."""
  arrays = {}
  for name, value in _flat(qparams).items():
    if _is_quantized(value):
      q = value["q"]
      arrays[f"{name}:scale"] = value["scale"]
      if np.count_nonzero(q) < SPARSE_BELOW * q.size:
        arrays[f"{name}:mask"] = np.packbits(q.ravel() != 0)
        arrays[f"{name}:values"] = q.ravel()[q.ravel() != 0]
        arrays[f"{name}:shape"] = np.asarray(q.shape, np.int32)
      else:
        arrays[f"{name}:q"] = q
    else:
      arrays[name] = np.asarray(value, np.float32)
  for layer, peak in input_peaks.items():
    arrays[f"activation:{'/'.join(layer)}"] = np.float32(peak)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez_compressed(path, **arrays)
  return os.path.getsize(path)


def load_export(path: str) -> tuple[dict, dict]:
  """(dequantized float32 params, input peaks) from an `export`ed file."""
  params, peaks = {}, {}
  with np.load(path) as f:
    files = {k: f[k] for k in f.files}
  for key, value in files.items():
    if key.startswith("activation:"):
      peaks[tuple(key.removeprefix("activation:").split("/"))] = float(value)
      continue
    name, _, part = key.partition(":")
    if part not in ("", "scale"):
      continue
    if part == "scale":
      if f"{name}:q" in files:
        q = files[f"{name}:q"]
      else:
        shape = tuple(files[f"{name}:shape"])
        mask = np.unpackbits(files[f"{name}:mask"], count=int(np.prod(shape))).astype(bool)
        q = np.zeros(mask.size, np.int8)
        q[mask] = files[f"{name}:values"]
        q = q.reshape(shape)
      value = q.astype(np.float32) * value
    node = params
    *parents, leaf = name.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return params, peaks


def _float_arrays(params) -> dict:
  return {name: np.asarray(v, np.float32) for name, v in _flat(params).items()}


def export_float(params, path: str) -> int:
  """The float32 params in one `.npz` as stored (the baseline the int8 file is compared with);
  returns its size in bytes."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, **_float_arrays(params))
  return os.path.getsize(path)


def deflated_float_bytes(params) -> int:
  """The size of `export_float`'s file deflated as the int8 one is (written to memory only)."""
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **_float_arrays(params))
  return buffer.getbuffer().nbytes
