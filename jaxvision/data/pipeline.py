"""Deterministic, seed-controlled batching of any source (see `jaxvision.data.base`).

A batch is a pure function of (seed, step): epoch `e` visits the examples in the order
`default_rng([seed, e]).permutation(n)`, dropping the remainder. The data position saved with a
checkpoint is therefore the step itself, and a resumed run sees exactly the batches an
uninterrupted run would have seen. Because it is, `Prefetcher` can build the next steps' batches
in a background thread while the devices run the current one, and still give exactly those.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxvision.data.base import Source


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
    # One-epoch memo (a permutation is drawn once per epoch), replaced as one (epoch, perm) pair:
    # the prefetch thread and the loop may both read it.
    self._memo: tuple[int, np.ndarray | None] = (-1, None)

  def permutation(self, epoch: int) -> np.ndarray:
    memo = self._memo
    if memo[0] != epoch:
      memo = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_examples))
      self._memo = memo
    return memo[1]

  def indices(self, step: int) -> np.ndarray:
    """The example indices of the global batch at `step`. Returns: [batch_size] int64."""
    epoch, i = divmod(step, self.steps_per_epoch)
    return self.permutation(epoch)[i * self.batch_size : (i + 1) * self.batch_size]


def eval_batches(source: Source, batch_size: int, rows: slice | None = None):
  """Yields the whole source in order, the last batch zero-padded to `batch_size`.

  Every array is padded along its leading axis whatever its shape; `mask` is 1 on real examples
  and 0 on padding, so evaluators sum over real examples only. With `rows` (a process's
  `parallel.host_rows`), only those rows of each batch are read and yielded: the processes'
  shares, concatenated, are the whole batches.
  """
  if batch_size <= 0:
    raise ValueError(f"eval batch size must be positive, got {batch_size}")
  positions = np.arange(batch_size)[rows if rows is not None else slice(None)]
  n = len(source)
  for start in range(0, n, batch_size):
    real = start + positions[start + positions < n]  # real examples come first in a batch
    pad = len(positions) - len(real)
    if len(real):
      batch = source.get(real)
    else:  # a share that is all padding: one example's shapes, zeroed
      batch = {k: np.zeros_like(v[:0]) for k, v in source.get(np.arange(1)).items()}
    batch["mask"] = np.ones(len(real), np.float32)
    if pad:
      batch = {
        k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in batch.items()
      }
    yield batch


class _Failed:
  def __init__(self, error: BaseException):
    self.error = error


class Prefetcher:
  """`get(step)` returns `make(step)`; while the loop asks for consecutive steps, a background
  thread builds (and, if `make` places them, transfers) up to `depth` batches ahead, overlapping
  host work with the devices' compute. `make` must be a pure function of the step (every batch
  here is), so prefetched batches are exactly the synchronous ones; a step out of sequence
  (resume, a multi-step call) restarts the thread there. An exception in `make` is raised by the
  `get` of that step. `depth=0`: no thread, `make` runs in `get`.
  """

  def __init__(self, make: Callable[[int], Any], depth: int = 2):
    if depth < 0:
      raise ValueError(f"prefetch depth must be >= 0, got {depth}")
    self._make, self._depth = make, depth
    self._next, self._thread, self._stop, self._queue = None, None, None, None

  def get(self, step: int):
    if not self._depth:
      return self._make(step)
    if step != self._next:
      self._start(step)
    item = self._queue.get()
    self._next = step + 1
    if isinstance(item, _Failed):
      self._next = None  # the thread has ended: the next get starts another
      raise item.error
    return item

  def _start(self, step: int) -> None:
    self.close()
    self._stop, self._queue = threading.Event(), queue.Queue(maxsize=self._depth)
    self._thread = threading.Thread(
      target=self._work, args=(step, self._stop, self._queue), name="prefetch", daemon=True
    )
    self._thread.start()

  def _work(self, step: int, stop: threading.Event, out: queue.Queue) -> None:
    while not stop.is_set():
      try:
        item = self._make(step)
      except BaseException as e:  # raised again in the loop's thread, at this step
        item = _Failed(e)
      while not stop.is_set():
        try:
          out.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if isinstance(item, _Failed):
        return
      step += 1

  def close(self) -> None:
    """Stops the thread (batches built ahead are dropped)."""
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread, self._next = None, None
