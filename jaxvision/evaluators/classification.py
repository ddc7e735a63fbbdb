"""Classification: loss and accuracy over the whole eval split (padded batches, masked)."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from jaxvision import parallel
from jaxvision.evaluators.common import MetricSpec, summed_over_split


def eval_step(state, batch, *, predict_fn, axis_name=None) -> dict:
  """Sums of loss and correct predictions over the real (mask == 1) examples of a batch."""
  logits = predict_fn(state, batch)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
  correct = jnp.argmax(logits, -1) == batch["targets"]
  mask = batch["mask"]
  sums = {"loss": jnp.sum(loss * mask), "correct": jnp.sum(correct * mask), "count": jnp.sum(mask)}
  return parallel.psum(sums, axis_name)


class Evaluator:
  """`<name>_loss` and `<name>_accuracy` of the trainer's `pred` function on the eval split."""

  def __init__(self, name: str, context, *, pred: str = "predict", batch_size: int = 0):
    self._strategy = context.strategy
    self._source = context.dataset.eval
    self._batch_size = batch_size or context.batch_size
    self._strategy.check_batch_size(self._batch_size, f"evaluators.{name}.batch_size")
    predict_fn = context.predict_fns[pred]
    self._step = context.strategy.compile(
      lambda state, batch: eval_step(
        state, batch, predict_fn=predict_fn, axis_name=context.strategy.axis_name
      ),
      compiler_options=context.compiler_options,
    )
    self._name = name
    self.metrics = (
      MetricSpec(f"{name}_accuracy", "accuracy", "percent", "higher"),
      MetricSpec(f"{name}_loss", "loss", "float", "lower"),
    )

  def provenance(self) -> dict:
    return {}

  def run(self, state, step: int) -> dict:
    del step
    totals = summed_over_split(self._step, state, self._source, self._batch_size, self._strategy)
    return {
      f"{self._name}_accuracy": float(totals["correct"] / totals["count"]),
      f"{self._name}_loss": float(totals["loss"] / totals["count"]),
    }
