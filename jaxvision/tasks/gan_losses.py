"""GAN objectives: discriminator and generator losses, and the R1 gradient penalty.

Losses take logits (pre-sigmoid discriminator outputs) [B] and return scalars; they know nothing
of networks or state, so any trainer (jit or pmap, with or without augmentation) can use them.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LOSSES = ("non_saturating", "hinge")


def _check(loss: str):
  if loss not in LOSSES:
    raise ValueError(f"unknown GAN loss {loss!r}; expected one of {LOSSES}")


def d_loss_fn(real_logits: jax.Array, fake_logits: jax.Array, loss: str) -> jax.Array:
  """The discriminator's loss.

  Args:
    real_logits: D's logits on real images [B].
    fake_logits: D's logits on generated images [B'].
    loss: "non_saturating" (-log D(x) - log(1 - D(G(z)))) or "hinge"
      (relu(1 - D(x)) + relu(1 + D(G(z)))).

  Returns:
    The scalar loss (means over each batch, summed).
  """
  _check(loss)
  if loss == "non_saturating":
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))
  return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def g_loss_fn(fake_logits: jax.Array, loss: str) -> jax.Array:
  """The generator's loss.

  Args:
    fake_logits: D's logits on generated images [B].
    loss: "non_saturating" (-log D(G(z))) or "hinge" (-D(G(z))).

  Returns:
    The scalar loss.
  """
  _check(loss)
  if loss == "non_saturating":
    return jnp.mean(jax.nn.softplus(-fake_logits))  # -log D(G(z))
  return -jnp.mean(fake_logits)


def r1_penalty(
  d_fn: Callable[[jax.Array], jax.Array], real_images: jax.Array, *, has_aux: bool = False
):
  """R1 (Mescheder et al. 2018): the mean over REAL images of ||grad_x D(x)||^2.

  The caller scales it by gamma / 2 and adds it to the discriminator's loss; it is
  differentiable with respect to whatever `d_fn` closes over (its parameters), which is how it
  regularises D. The gradient of the summed logits is each image's own gradient only if D treats
  images independently: use it with a discriminator without batch norm in training mode
  (spectral norm, dropout and eval-mode batch norm are fine).

  Args:
    d_fn: images [B, H, W, C] -> logits [B] (or (logits, aux) with `has_aux`, e.g. the updated
      spectral-norm statistics of a training pass).
    real_images: real images [B, H, W, C]; generated images take no part in R1.
    has_aux: whether `d_fn` also returns auxiliary data.

  Returns:
    The scalar penalty, or (penalty, (logits, aux)) with `has_aux`, so that one discriminator
    pass serves both the loss on real images and the penalty.
  """

  def summed_logits(x):
    out = d_fn(x)
    logits = out[0] if has_aux else out
    return jnp.sum(logits), out

  grads, out = jax.grad(summed_logits, has_aux=True)(real_images)  # grads: [B, H, W, C]
  penalty = jnp.mean(jnp.sum(jnp.square(grads).reshape(grads.shape[0], -1), axis=-1))
  return (penalty, out) if has_aux else penalty
