"""The metric window: per-step metrics between two log rows, on device until fetched, checked for
non-finite values when they reach the host."""

from __future__ import annotations

import numpy as np


class Window:
  """Per-step metrics since the last log row; on device until fetched, then host floats.

  With `members` (K > 0), every metric has a trailing member axis (a step's value is [K], a
  call of k steps [k, K]); the host keeps [K] rows, `member(i)` is member i's window, and
  non-finite values are not errors here: they mark a frozen member (see `train.members`).
  """

  def __init__(self, next_step: int, fetch, saved: dict | None = None, members: int = 0):
    """`next_step`: the step the next appended metrics belong to; `fetch`: the strategy's
    device-to-host transfer of replicated values; `saved`: host values of the steps just before
    `next_step` (a window restored from a checkpoint; with members, rows of [K])."""
    self._fetch = fetch
    self._members = members
    self._host: dict[str, list] = {k: list(v) for k, v in (saved or {}).items()}
    self.first_step = next_step - len(next(iter(self._host.values()), []))
    self._device: list[dict] = []

  def append(self, step_metrics: dict) -> None:
    self._device.append(step_metrics)

  def fetch(self) -> dict[str, list]:
    """Host values of every metric so far (with members: a [K] array per step).

    Raises:
      FloatingPointError: (no members) a metric (any: losses, the gradient norm, ...) is not
        finite, naming the first step and metric that went bad; nothing of this window is kept.
    """
    if self._device:
      start = self.first_step + len(next(iter(self._host.values()), []))
      host = self._fetch(self._device)
      rows = lambda x: np.reshape(x, (-1, self._members) if self._members else (-1,))
      series = {k: np.concatenate([rows(m[k]) for m in host]) for k in host[0]}
      bad = [
        (int(np.flatnonzero(~np.isfinite(v))[0]), key)
        for key, v in series.items()
        if not self._members and not np.isfinite(v).all()
      ]
      if bad:
        index, key = min(bad)
        raise FloatingPointError(f"non-finite {key} ({series[key][index]}) at step {start + index}")
      for key, values in series.items():
        convert = (lambda v: v.astype(float)) if self._members else float
        self._host.setdefault(key, []).extend(convert(v) for v in values)
      self._device = []
    return self._host

  def summary(self) -> dict:
    """The mean of each metric (with members: [K] means over each member's finite values)."""
    if self._members:
      return {k: _finite_mean(np.stack(v)) for k, v in self.fetch().items()}
    return {k: float(np.mean(v)) for k, v in self.fetch().items()}

  def member(self, index: int) -> MemberWindow:
    return MemberWindow(self, index)


class MemberWindow:
  """Member `index`'s column of a members window: what its run logs and checkpoints."""

  def __init__(self, window: Window, index: int):
    self._window, self._index = window, index

  def fetch(self) -> dict[str, list]:
    return {k: [float(row[self._index]) for row in v] for k, v in self._window.fetch().items()}

  def first_non_finite(self, step: int) -> str | None:
    """The first metric (in order) that is not finite at `step`, if the window holds it."""
    offset = step - self._window.first_step
    for key, values in self.fetch().items():
      if 0 <= offset < len(values) and not np.isfinite(values[offset]):
        return key
    return None


def _finite_mean(rows: np.ndarray) -> np.ndarray:
  """[steps, K] -> [K]: each column's mean over its finite values (NaN when it has none)."""
  finite = np.isfinite(rows)
  count = finite.sum(0)
  total = np.where(finite, rows, 0.0).sum(0)
  return np.where(count > 0, total / np.maximum(count, 1), np.nan)
