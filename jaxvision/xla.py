"""Backend-specific XLA compiler options, given per compiled step function (never process-wide).

Measured on XLA:CPU (jax 0.10, see benchmarks/RESULTS.md): YNNPACK fusions make convolutional
train steps about 2x slower, while they help recurrent ones. So each experiment says whether its
steps want them (`config.xla.cpu_ynn_fusions`); other backends get XLA's defaults.
"""

from __future__ import annotations

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
