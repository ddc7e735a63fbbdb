"""The metric window: per-step metrics between two log rows, on device until fetched, checked for
non-finite values when they reach the host."""

from __future__ import annotations

import numpy as np


class Window:
  """Per-step metrics since the last log row; on device until fetched, then host floats."""

  def __init__(self, next_step: int, fetch, saved: dict | None = None):
    """`next_step`: the step the next appended metrics belong to; `fetch`: the strategy's
    device-to-host transfer of replicated values; `saved`: host values of the steps just before
    `next_step` (a window restored from a checkpoint)."""
    self._fetch = fetch
    self._host: dict[str, list] = {k: list(v) for k, v in (saved or {}).items()}
    self.first_step = next_step - len(next(iter(self._host.values()), []))
    self._device: list[dict] = []

  def append(self, step_metrics: dict) -> None:
    self._device.append(step_metrics)

  def fetch(self) -> dict[str, list]:
    """Host values of every metric so far.

    Raises:
      FloatingPointError: a metric (any: losses, the gradient norm, ...) is not finite, naming
        the first step and metric that went bad; nothing of this window is kept.
    """
    if self._device:
      start = self.first_step + len(next(iter(self._host.values()), []))
      host = self._fetch(self._device)
      series = {k: np.concatenate([np.atleast_1d(m[k]) for m in host]) for k in host[0]}
      bad = [
        (int(np.flatnonzero(~np.isfinite(v))[0]), key)
        for key, v in series.items()
        if not np.isfinite(v).all()
      ]
      if bad:
        index, key = min(bad)
        raise FloatingPointError(f"non-finite {key} ({series[key][index]}) at step {start + index}")
      for key, values in series.items():
        self._host.setdefault(key, []).extend(float(v) for v in values)
      self._device = []
    return self._host

  def summary(self) -> dict:
    return {k: float(np.mean(v)) for k, v in self.fetch().items()}
