"""Dense baselines: a multilayer perceptron and logistic regression (an MLP with no hidden layer).

MNIST-1D's paper table lists both (logistic regression 32%, MLP 68%); they flatten the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.models.preset import Preset


class MLP(nn.Module):
  """Flatten, then ReLU dense layers of `hidden` widths (dropout before each), then logits.

  Attributes:
    num_classes: width of the output logits.
    hidden: widths of the hidden layers; () is logistic regression.
    dropout_rate: dropout before every dense layer (0 disables it).
  """

  num_classes: int
  hidden: Sequence[int] = (100, 100)
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool, return_features: bool = False):
    """Maps inputs [B, ...] to logits [B, num_classes] (and features [B, D])."""
    x = x.reshape(x.shape[0], -1)  # [B, D]
    for width in self.hidden:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.relu(nn.Dense(width)(x))
    features = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes)(x)
    return (logits, features) if return_features else logits


PRESETS = {
  "mlp": Preset(MLP, {}, (40, 1), 15_210),
  "logistic": Preset(MLP, dict(hidden=()), (40, 1), 410),
}
