"""Layers shared by model families, written to lower well on every XLA backend."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def forget_bias_init(features: int, value: float):
  """Bias initializer for fused LSTM gates (input, forget, candidate, output), each `features`
  wide: `value` on the forget gate, 0 on the others."""

  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.zeros(shape, dtype).at[features : 2 * features].set(value)

  return init


def lstm_update(z: jnp.ndarray, c: jnp.ndarray, cell_norm=None) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The LSTM state update from fused gate pre-activations z [..., 4F] (input, forget, candidate,
  output) and the cell state c [..., F]: the new (c, h), h read through `cell_norm(c)` if given
  (a layer-normalised LSTM's output)."""
  i, f, g, o = jnp.split(z, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  return c, jax.nn.sigmoid(o) * jnp.tanh(c if cell_norm is None else cell_norm(c))


def zero_carry(input_shape, features: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Zero LSTM (c, h) of `features` channels for inputs of `input_shape` [..., C]."""
  zeros = jnp.zeros((*input_shape[:-1], features))
  return zeros, zeros


def max_pool(x: jnp.ndarray, window: int) -> jnp.ndarray:
  """Non-overlapping max pooling (window = stride, VALID) over every spatial axis.

  Same values as `nn.max_pool(x, (window,) * d, strides=(window,) * d)` but written as a crop, a
  reshape and a max. XLA:CPU lowers the gradient of `reduce_window` to select-and-scatter, which
  took ~55 of the 82 ms of a CNN-A train step; the gradient of this form is a cheap elementwise
  select. (Where several inputs tie for a window's maximum, the gradient is shared among them
  instead of going to the first; after a ReLU, ties are exact zeros whose gradient is zero anyway.)

  Args:
    x: [B, *spatial, C].
    window: pooling window and stride along each spatial axis.

  Returns:
    [B, *(s // window for s in spatial), C].
  """
  if window == 1:
    return x
  spatial = x.shape[1:-1]
  out = tuple(s // window for s in spatial)
  if any(o == 0 for o in out):
    raise ValueError(f"cannot pool spatial shape {spatial} with window {window}")
  x = x[(slice(None), *(slice(0, o * window) for o in out), slice(None))]  # crop like VALID
  split = [x.shape[0]]
  for o in out:
    split += [o, window]
  x = x.reshape(*split, x.shape[-1])  # [B, o1, w, o2, w, ..., C]
  return x.max(axis=tuple(2 + 2 * i for i in range(len(out))))


def _transpose_padding(k: int, s: int, padding: str) -> tuple[int, int]:
  """`lax.conv_transpose`'s padding of the stride-dilated input (as jax computes it)."""
  if padding == "SAME":
    pad_len = k + s - 2
    pad_a = k - 1 if s > k - 1 else -(-pad_len // 2)
  elif padding == "VALID":
    pad_len = k + s - 2 + max(k - s, 0)
    pad_a = k - 1
  else:
    raise ValueError(f"padding must be SAME or VALID, got {padding!r}")
  return pad_a, pad_len - pad_a


def _subpixel_taps(k: int, s: int, size: int, padding: str):
  """Per spatial axis: which kernel tap each (window position, output phase) uses.

  A stride-s transposed conv computes output o = s * m + r (phase r) as a plain correlation of
  the *undilated* input around m with the taps k0(r) + s * j of the kernel. All phases share one
  window [lo, hi] of input offsets; `taps[t, r]` is the kernel index at window offset t for
  phase r, or -1 where that phase has no tap.

  Returns:
    (taps [window, s] int array, (pad_lo, pad_hi) of the input, phases kept per output).
  """
  pad_a, pad_b = _transpose_padding(k, s, padding)
  out_size = (size - 1) * s + 1 + pad_a + pad_b - k + 1
  phases = []
  for r in range(s):
    k0 = (pad_a - r) % s
    d = (r + k0 - pad_a) // s  # input offset of tap j = 0
    phases.append((k0, d, range(k0, k, s)))
  lo = min(d for _, d, _ in phases)
  hi = max(d + len(t) - 1 for _, d, t in phases)
  taps = np.full((hi - lo + 1, s), -1)
  for r, (_, d, tap_range) in enumerate(phases):
    for j, tap in enumerate(tap_range):
      taps[d + j - lo, r] = tap
  n_out = -(-out_size // s)  # output rows per phase (the last may be partly cropped)
  return taps, (-lo, n_out - 1 + hi - (size - 1)), out_size


def conv_transpose_subpixel(x: jnp.ndarray, kernel: jnp.ndarray, strides, padding: str):
  """`lax.conv_transpose(x, kernel, strides, padding)` (2-D, NHWC/HWIO) as one stride-1 conv.

  The s_h * s_w output phases of a strided transposed conv are each a small correlation of the
  input; their kernels are stacked along the output channels of one ordinary convolution, and a
  depth-to-space reshape interleaves them. Same values; on XLA:CPU the weight gradient of this
  form avoids the slow path that transposed convolutions take (jax-ml/jax#23783).

  Args:
    x: [B, H, W, Cin].
    kernel: [kh, kw, Cin, Cout], as `nn.ConvTranspose` stores it.
    strides: (s_h, s_w).
    padding: "SAME" or "VALID".

  Returns:
    [B, H_out, W_out, Cout], H_out = H * s_h for SAME.
  """
  (kh, kw, cin, cout), (sh, sw) = kernel.shape, strides
  taps_h, pad_h, out_h = _subpixel_taps(kh, sh, x.shape[1], padding)
  taps_w, pad_w, out_w = _subpixel_taps(kw, sw, x.shape[2], padding)
  # Gather the phase kernels: [win_h, win_w, Cin, s_h, s_w, Cout], zero where a phase has no tap.
  padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # index -1 -> the zero row
  th = np.where(taps_h < 0, kh, taps_h)[:, None, :, None]  # [win_h, 1, s_h, 1]
  tw = np.where(taps_w < 0, kw, taps_w)[None, :, None, :]  # [1, win_w, 1, s_w]
  phase_kernels = padded[th, tw]  # [win_h, win_w, s_h, s_w, Cin, Cout]
  phase_kernels = phase_kernels.transpose(0, 1, 4, 2, 3, 5).reshape(
    taps_h.shape[0], taps_w.shape[0], cin, sh * sw * cout
  )
  y = jax.lax.conv_general_dilated(
    x, phase_kernels, (1, 1), (pad_h, pad_w), dimension_numbers=("NHWC", "HWIO", "NHWC")
  )  # [B, n_h, n_w, s_h * s_w * Cout]
  b, n_h, n_w, _ = y.shape
  y = y.reshape(b, n_h, n_w, sh, sw, cout).transpose(0, 1, 3, 2, 4, 5)
  y = y.reshape(b, n_h * sh, n_w * sw, cout)  # depth-to-space
  return y[:, :out_h, :out_w]


def upsample(x: jnp.ndarray, factor: int = 2) -> jnp.ndarray:
  """Nearest-neighbour upsampling [B, H, W, C] -> [B, H * factor, W * factor, C], written as a
  broadcast and a reshape (its gradient is a sum)."""
  b, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, factor, w, factor, c))
  return x.reshape(b, h * factor, w * factor, c)


CONV_IMPLS = ("auto", "xla", "nhwc")
_NHWC = ("NHWC", "HWIO", "NHWC")


def resolve_impl(impl: str, choices: tuple[str, ...], cpu_choice: str, key: str) -> str:
  """A layer's formulation: `impl` itself, or for "auto" `cpu_choice` on XLA:CPU and XLA's own
  ("xla") elsewhere; raises ValueError naming the attribute `key` for a value not in `choices`."""
  if impl not in choices:
    raise ValueError(f"unknown {key} {impl!r}; expected one of {choices}")
  if impl == "auto":
    return cpu_choice if jax.default_backend() == "cpu" else "xla"
  return impl


def resolve_conv_impl(impl: str) -> str:
  """'auto' is "nhwc" on XLA:CPU and XLA's own convolution gradient elsewhere."""
  return resolve_impl(impl, CONV_IMPLS, "nhwc", "conv_impl")


def _conv(x, kernel, strides):
  return jax.lax.conv_general_dilated(x, kernel, strides, "SAME", dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_nhwc(x, kernel, strides):
  """A 'SAME' convolution x [B, H, W, I] * kernel [kh, kw, I, O] with channels-last gradients.

  Args:
    x: inputs [B, H, W, I].
    kernel: [kh, kw, I, O].
    strides: (sh, sw).

  Returns:
    [B, ceil(H / sh), ceil(W / sw), O], exactly as `jax.lax.conv_general_dilated`.
  """
  return _conv(x, kernel, strides)


def _conv_nhwc_fwd(x, kernel, strides):
  return _conv(x, kernel, strides), (x, kernel)


def _conv_nhwc_bwd(strides, residuals, g):
  x, kernel = residuals
  kh, kw, _, _ = kernel.shape
  pads = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), strides, "SAME")
  # dx: the transposed convolution, written as a forward one (flipped kernel, inputs dilated by
  # the strides) so that it stays in the channels-last layout.
  back_pads = [
    (k - 1 - lo, k - 1 - hi + (n + lo + hi - k) % s)
    for n, k, s, (lo, hi) in zip(x.shape[1:3], (kh, kw), strides, pads, strict=True)
  ]
  flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)  # [kh, kw, O, I]
  dx = jax.lax.conv_general_dilated(
    g, flipped, (1, 1), back_pads, lhs_dilation=strides, dimension_numbers=_NHWC
  )  # [B, H, W, I]
  # dkernel: a correlation of x with g over batch and space. With the input channels as the
  # "batch" and the batch as the contracted "features", it is a channels-last convolution too.
  dkernel = jax.lax.conv_general_dilated(
    x.transpose(3, 1, 2, 0),  # [I, H, W, B]
    g.transpose(1, 2, 0, 3),  # [Ho, Wo, B, O]
    (1, 1),
    pads,
    rhs_dilation=strides,
    dimension_numbers=_NHWC,
  )[:, :kh, :kw]  # [I, kh, kw, O]
  return dx, dkernel.transpose(1, 2, 0, 3)


conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


class Conv(nn.Module):
  """A 2-D 'SAME' convolution with bias: `nn.Conv`'s parameters and values, a choice of gradient.

  XLA:CPU runs the gradient convolutions XLA derives (other layouts) inside a loop body, i.e. the
  backward pass of a scan, on a slow generic path (jax-ml/jax#12868: a ConvLSTM predictor's train
  step was 13x slower); "nhwc" writes them as channels-last forward convolutions.

  Attributes:
    features: output channels.
    kernel_size: side of the square kernel.
    strides: stride in both spatial dimensions.
    impl: "auto", "xla" or "nhwc" (see `resolve_conv_impl`; the same values, a speed choice).
    bias_init: initializer of the bias.
  """

  features: int
  kernel_size: int = 3
  strides: int = 1
  impl: str = "auto"
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x):
    """Maps x [B, H, W, I] to [B, H / strides, W / strides, features]."""
    k, s = self.kernel_size, (self.strides, self.strides)
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features)
    )
    conv = conv_nhwc if resolve_conv_impl(self.impl) == "nhwc" else _conv
    return conv(x, kernel, s) + self.param("bias", self.bias_init, (self.features,))
