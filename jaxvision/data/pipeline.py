"""Deterministic, seed-controlled batching of an in-memory split.

A batch is a pure function of (seed, step): epoch `e` visits the examples in the order
`default_rng([seed, e]).permutation(n)`, dropping the remainder. The data position saved with a
checkpoint is therefore the step itself, and a resumed run sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import numpy as np

from jaxvision.data.base import Split


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

  def batch(self, split: Split, step: int) -> dict[str, np.ndarray]:
    idx = self.indices(step)
    return {"inputs": split.inputs[idx], "labels": split.labels[idx]}


def eval_batches(split: Split, batch_size: int):
  """Yields the whole split in order, the last batch padded; `mask` is 1 on real examples."""
  n = len(split)
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    pad = batch_size - (stop - start)
    inputs, labels = split.inputs[start:stop], split.labels[start:stop]
    mask = np.ones(stop - start, np.float32)
    if pad:
      inputs = np.concatenate([inputs, np.zeros((pad, *inputs.shape[1:]), inputs.dtype)])
      labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
      mask = np.concatenate([mask, np.zeros(pad, np.float32)])
    yield {"inputs": inputs, "labels": labels, "mask": mask}
