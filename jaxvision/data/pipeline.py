"""Deterministic, seed-controlled batching of any source (see `jaxvision.data.base`).

A batch is a pure function of (seed, step): epoch `e` visits the examples in the order
`default_rng([seed, e]).permutation(n)`, dropping the remainder. The data position saved with a
checkpoint is therefore the step itself, and a resumed run sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import numpy as np

from jaxvision.data.base import Batch, Source


class BatchSampler:
  """Shuffled training batches, indexed by global step."""

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    if batch_size <= 0:
      raise ValueError(f"batch_size must be positive, got {batch_size}")
    if batch_size > num_examples:
      raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} training examples")
    self.num_examples = num_examples
    self.batch_size = batch_size
    self.seed = seed
    self.steps_per_epoch = num_examples // batch_size
    self._epoch, self._perm = -1, None  # one-epoch memo: a permutation is drawn once per epoch

  def permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._epoch:
      self._epoch = epoch
      self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
    return self._perm

  def indices(self, step: int) -> np.ndarray:
    """The example indices of the global batch at `step`. Returns: [batch_size] int64."""
    epoch, i = divmod(step, self.steps_per_epoch)
    return self.permutation(epoch)[i * self.batch_size : (i + 1) * self.batch_size]

  def batch(self, source: Source, step: int) -> Batch:
    return source.get(self.indices(step))


def eval_batches(source: Source, batch_size: int):
  """Yields the whole source in order, the last batch zero-padded to `batch_size`.

  Every array is padded along its leading axis whatever its shape; `mask` [batch_size] is 1 on
  real examples and 0 on padding, so evaluators sum over real examples only.
  """
  if batch_size <= 0:
    raise ValueError(f"eval batch size must be positive, got {batch_size}")
  n = len(source)
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    batch = source.get(np.arange(start, stop))
    pad = batch_size - (stop - start)
    batch["mask"] = np.ones(stop - start, np.float32)
    if pad:
      batch = {
        k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in batch.items()
      }
    yield batch
