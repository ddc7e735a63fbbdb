"""What trainers share besides the loop: the train state, parameter counts, the base config."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state


class TrainState(train_state.TrainState):
  """Params, optimizer state and step (flax's), plus batch-norm statistics (may be empty)."""

  batch_stats: Any = flax.struct.field(default_factory=dict)

  @classmethod
  def create(cls, *, apply_fn, params, tx, **kwargs):
    # flax stores step=0 as a Python int: the first jitted step would then trace with a weak
    # scalar and the second with an int32 array, compiling twice. Start with the array.
    state = super().create(apply_fn=apply_fn, params=params, tx=tx, **kwargs)
    return state.replace(step=jnp.zeros((), jnp.int32))


def num_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
