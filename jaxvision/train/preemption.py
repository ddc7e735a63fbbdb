"""Preemption: SIGTERM or Ctrl-C asks a run to checkpoint at the next step and stop, on every
process of a multi-host run at the same step."""

from __future__ import annotations

import signal

import jax
import numpy as np
from jax.experimental import multihost_utils


class Signals:
  """SIGTERM and SIGINT set `stop`; a second Ctrl-C aborts at once. Restored by `restore()`."""

  def __init__(self):
    self.stop, self.name, self._previous = False, None, {}
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals to the caller
        pass

  def _handle(self, signum, frame):
    if self.stop and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: the user wants out now
    self.stop, self.name = True, signal.Signals(signum).name
    print(f"{self.name}: saving a checkpoint after this step, then stopping.", flush=True)

  def restore(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}


def any_process(flag: bool) -> bool:
  """True on every process when `flag` is True on any (a coordinated multi-host stop)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))
