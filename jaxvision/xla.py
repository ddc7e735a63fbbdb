"""Backend-specific XLA compiler options, given per compiled step function (never process-wide),
and the persistent compilation cache that the command-line entry points turn on.

Measured on XLA:CPU (jax 0.10, see benchmarks/RESULTS.md): YNNPACK fusions make convolutional
train steps about 2x slower, while they help recurrent ones. So each experiment says whether its
steps want them (`config.xla.cpu_ynn_fusions`); other backends get XLA's defaults.
"""

from __future__ import annotations

import os
import warnings

import jax
import ml_collections

from jaxvision.config_dict import block

XLA_DEFAULTS = dict(
  cpu_ynn_fusions=False,  # XLA:CPU YNNPACK fusions: off for conv nets, on for RNNs
)


def xla_config(**overrides) -> ml_collections.ConfigDict:
  return block(XLA_DEFAULTS, **overrides)


def compiler_options(config, backend: str | None = None) -> dict | None:
  """Options for `jax.jit(..., compiler_options=...)` on `backend` (default: JAX's default)."""
  backend = backend or jax.default_backend()
  if backend == "cpu" and not config.cpu_ynn_fusions:
    return {"xla_cpu_experimental_ynn_fusion_type": ""}
  return None


CACHE_MIN_COMPILE_S = 0.1  # programs that compile faster are not worth a file
CACHE_MAX_BYTES = 2 << 30  # least recently used entries go beyond this


def enable_compilation_cache(directory: str) -> str:
  """Keeps compiled programs in `directory` across processes (JAX's persistent compilation
  cache), so that a rerun, a resumed run or the next point of a sweep with the same shapes
  skips XLA compilation (measured on the MNIST-1D CNN, 2-core CPU: first step 6.2 -> 2.6 s
  after process start on a loaded machine). `$JAX_COMPILATION_CACHE_DIR`, when set, wins.
  A CLI's choice for its own process: call before the first compilation.

  Returns:
    The folder in use.
  """
  directory = os.environ.get("JAX_COMPILATION_CACHE_DIR") or directory
  # A cache is best effort: a full disk (or a read-only one) costs compile time, no stderr noise.
  warnings.filterwarnings("ignore", message=r"Error (reading|writing) persistent compilation")
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_S)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
  return directory
