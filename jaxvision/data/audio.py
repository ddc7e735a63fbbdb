"""Audio features and their augmentation: log-mel spectrograms and noise (numpy, on the host, when
a data set is made) and SpecAugment (JAX, on device, inside the train step).

`log_mel` frames a waveform with a Hann window (`frame_ms`, every `hop_ms`, no centring: frame t
covers samples [t * hop, t * hop + window)), takes the power spectrum and maps it onto `n_mels`
triangular mel bands (HTK mel scale, 20 Hz to 7.6 kHz), then the log. `normalize` makes each
band zero-mean and unit-variance over an utterance (per-utterance CMVN), which removes the
recording's gain and channel. `spec_augment` (Park et al. 2019) zeroes random bands and random
stretches of frames of each utterance: zero is the normalised features' mean. It can also
stretch each utterance's mel axis by a random factor (`vtlp`): vocal tract length perturbation
(Jaitly & Hinton 2013), here on the mel bands rather than on the linear spectrum, which makes
voices of other formant scales from the training voices.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxvision import parallel
from jaxvision.config_dict import ConfigError, block

F_MIN, F_MAX = 20.0, 7600.0
LOG_FLOOR = 1e-10  # added to the mel power before the log (silence would be -inf)
SPEC_AUGMENT_DEFAULTS = dict(
  freq_masks=0,  # bands masked per utterance: this many masks ...
  freq_width=0,  # ... each of 0..this many adjacent bands
  time_masks=0,  # stretches of frames masked per utterance: this many ...
  time_width=0,  # ... each of 0..this many frames, inside the utterance's real frames
  vtlp=0.0,  # mel axis stretched by a factor uniform in [1 - vtlp, 1 + vtlp] (0: none)
)


MAX_VTLP = 0.5  # a stretch of 1 +- 0.5 or more would fold the mel axis over itself


def spec_augment_config(**overrides) -> ml_collections.ConfigDict:
  """`config.spec_augment`: SpecAugment's masks and the mel-axis warp (all 0: off)."""
  return block(SPEC_AUGMENT_DEFAULTS, **overrides)


def validate_spec_augment(config) -> None:
  """Checks `config.spec_augment` (the keys of `SPEC_AUGMENT_DEFAULTS`): mask counts and widths
  integers >= 0, `vtlp` a number in [0, MAX_VTLP); raises ConfigError naming the key."""
  for key, value in config.items():
    if isinstance(SPEC_AUGMENT_DEFAULTS.get(key), float):
      if (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < MAX_VTLP
      ):
        raise ConfigError(
          f"config.spec_augment.{key}={value!r} must be a number in [0, {MAX_VTLP})"
        )
    elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ConfigError(f"config.spec_augment.{key}={value!r} must be an integer >= 0")


def hz_to_mel(hz):
  return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel):
  return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
  """Triangular filters [n_fft // 2 + 1, n_mels] on the HTK mel scale from F_MIN to F_MAX (or
  the Nyquist frequency), each peaking at 1 at its centre."""
  f_max = min(F_MAX, sample_rate / 2)
  edges = mel_to_hz(np.linspace(hz_to_mel(F_MIN), hz_to_mel(f_max), n_mels + 2))  # [M + 2]
  bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)[:, None]  # [K, 1]
  low, centre, high = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
  rising = (bins - low) / (centre - low)
  falling = (high - bins) / (high - centre)
  return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def frame_count(num_samples: int, sample_rate: int, frame_ms: float, hop_ms: float) -> int:
  """Frames of `log_mel` for a waveform of `num_samples` (at least 1)."""
  window, hop = _window_hop(sample_rate, frame_ms, hop_ms)
  return 1 + max(0, num_samples - window) // hop


def _window_hop(sample_rate: int, frame_ms: float, hop_ms: float) -> tuple[int, int]:
  return round(sample_rate * frame_ms / 1000), round(sample_rate * hop_ms / 1000)


def log_mel(
  samples: np.ndarray,
  sample_rate: int,
  *,
  n_mels: int = 40,
  frame_ms: float = 25.0,
  hop_ms: float = 10.0,
) -> np.ndarray:
  """Log-mel spectrogram [T, n_mels] float32 of a waveform [N] (any scale; T: `frame_count`)."""
  window, hop = _window_hop(sample_rate, frame_ms, hop_ms)
  n_fft = 1 << (window - 1).bit_length()  # the next power of two
  samples = np.asarray(samples, np.float64)
  if len(samples) < window:
    samples = np.pad(samples, (0, window - len(samples)))
  frames = np.lib.stride_tricks.sliding_window_view(samples, window)[::hop]  # [T, window]
  spectrum = np.fft.rfft(frames * np.hanning(window), n_fft)  # [T, n_fft // 2 + 1]
  power = spectrum.real**2 + spectrum.imag**2
  mel = power @ _filterbank(sample_rate, n_fft, n_mels)
  return np.log(mel + LOG_FLOOR).astype(np.float32)


@functools.cache
def _filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
  return mel_filterbank(sample_rate, n_fft, n_mels).astype(np.float64)


def normalize(features: np.ndarray) -> np.ndarray:
  """Each band of `features` [T, F] at zero mean and unit variance over the T frames."""
  mean = features.mean(0, keepdims=True)
  std = features.std(0, keepdims=True)
  return ((features - mean) / (std + 1e-5)).astype(np.float32)


def colored_noise(rng: np.random.Generator, num_samples: int, exponent: float) -> np.ndarray:
  """Gaussian noise [num_samples] of unit RMS whose power falls as 1 / f^exponent (0: white,
  1: pink, 2: brown), shaped in the frequency domain (over the next power of two of samples, cut
  to length: an FFT of a length with a large prime factor is ~5x slower)."""
  size = 1 << max(1, (num_samples - 1).bit_length())
  spectrum = np.fft.rfft(rng.standard_normal(size))
  f = np.fft.rfftfreq(size)
  f[0] = f[1]  # no infinite gain at DC
  noise = np.fft.irfft(spectrum / f ** (exponent / 2), size)[:num_samples]
  return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def add_noise(signal: np.ndarray, noise: np.ndarray, snr_db: float, power: float) -> np.ndarray:
  """`signal` plus `noise` (unit RMS) scaled to `snr_db` below the speech `power`."""
  return signal + noise * np.sqrt(power / 10.0 ** (snr_db / 10.0))


def spec_augment(
  key: jax.Array,
  x: jnp.ndarray,
  lengths: jnp.ndarray,
  *,
  freq_masks: int = 0,
  freq_width: int = 0,
  time_masks: int = 0,
  time_width: int = 0,
  vtlp: float = 0.0,
  axis_name: str | None = None,
) -> jnp.ndarray:
  """Zeroes `freq_masks` random bands of width 0..`freq_width` and `time_masks` random stretches
  of 0..`time_width` frames (each inside the utterance's real frames) of every utterance, after
  stretching its mel axis by a factor uniform in [1 - `vtlp`, 1 + `vtlp`] (`warp_bands`).

  Args:
    key: PRNG key.
    x: features [B, T, F] (padding beyond `lengths` stays as it is).
    lengths: real frames [B].
    freq_masks, freq_width, time_masks, time_width: the masks (0 masks or widths: none).
    vtlp: the largest relative stretch of the mel axis (0: none).
    axis_name: under pmap, the device axis: masks are drawn for the global batch and this
      device's rows taken, so each utterance is masked alike under every strategy.

  Returns:
    Array of x's shape and dtype; `x` itself when no mask or warp is asked for.
  """
  global_batch = parallel.global_batch_size(x.shape[0], axis_name)
  if vtlp:  # its own key: the masks' draws are those of a run without the warp
    factors = jax.random.uniform(
      jax.random.fold_in(key, 2), (global_batch,), minval=1.0 - vtlp, maxval=1.0 + vtlp
    )
    x = warp_bands(x, parallel.local_rows(factors, axis_name))
  if not (freq_masks and freq_width) and not (time_masks and time_width):
    return x
  freq_key, time_key = jax.random.split(key)
  frames, bands = jnp.arange(x.shape[1]), jnp.arange(x.shape[2])
  masked = jnp.zeros(x.shape, bool)
  for k, count, width, size in (
    (freq_key, freq_masks, freq_width, x.shape[2]),
    (time_key, time_masks, time_width, None),
  ):
    if not (count and width):
      continue
    widths_key, starts_key = jax.random.split(k)
    widths = jax.random.randint(widths_key, (global_batch, count), 0, width + 1)
    where = jax.random.uniform(starts_key, (global_batch, count))
    widths, where = parallel.local_rows(widths, axis_name), parallel.local_rows(where, axis_name)
    extent = jnp.full_like(lengths, size) if size is not None else lengths  # [B]
    room = jnp.maximum(extent[:, None] - widths, 0) + 1  # [B, count]: possible starts
    starts = jnp.floor(where * room).astype(jnp.int32)
    axis = bands if size is not None else frames
    ends = jnp.minimum(starts + widths, extent[:, None])
    hit = ((axis >= starts[..., None]) & (axis < ends[..., None])).any(1)  # [B, A]
    masked = masked | (hit[:, None, :] if size is not None else hit[:, :, None])
  real = frames[None, :, None] < lengths[:, None, None]  # [B, T, 1]: never into the padding
  return jnp.where(masked & real, jnp.zeros((), x.dtype), x)


def warp_bands(x: jnp.ndarray, factors: jnp.ndarray) -> jnp.ndarray:
  """Stretches the band axis of each utterance: band b of row i reads x[i, :, b * factors[i]]
  (linear interpolation between bands; positions past the top band read the top band).

  Args:
    x: features [B, T, F].
    factors: [B] stretch factors (1: unchanged; > 1 moves the spectrum's content down, as a
      longer vocal tract does).

  Returns:
    Array of x's shape and dtype.
  """
  top = x.shape[2] - 1
  where = jnp.clip(jnp.arange(x.shape[2])[None, :] * factors[:, None], 0.0, top)  # [B, F]
  below = jnp.floor(where).astype(jnp.int32)
  above = jnp.minimum(below + 1, top)
  frac = (where - below)[:, None, :].astype(x.dtype)
  low = jnp.take_along_axis(x, below[:, None, :], axis=2)
  high = jnp.take_along_axis(x, above[:, None, :], axis=2)
  return low + frac * (high - low)
