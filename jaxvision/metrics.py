"""Metric accumulation and writers: a progress line on stdout, `metrics.jsonl`, TensorBoard.

Step functions return dicts of scalars that stay on device; `summarize` fetches a whole logging
window in one transfer, averages it, and fails fast on a non-finite loss.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import jax
import numpy as np


def summarize(window: list[dict], first_step: int, loss_key: str = "train_loss") -> dict:
  """Means over a window of per-step metrics (device arrays), fetched in one transfer.

  Args:
    window: metric dicts, oldest first; each value a scalar (one step) or a [K] array (K steps
      run in one compiled call).
    first_step: the step number of the window's first step (counting steps done, from 1).
    loss_key: the metric that must stay finite.

  Raises:
    FloatingPointError: naming the first step whose `loss_key` is not finite.
  """
  host = jax.device_get(window)
  series = {k: np.concatenate([np.atleast_1d(m[k]) for m in host]) for k in host[0]}
  if loss_key in series:
    bad = np.flatnonzero(~np.isfinite(series[loss_key]))
    if bad.size:
      raise FloatingPointError(
        f"non-finite {loss_key} ({series[loss_key][bad[0]]}) at step {first_step + int(bad[0])}"
      )
  return {k: float(np.mean(v)) for k, v in series.items()}


class JsonlWriter:
  """Appends one JSON object per write to `path`: {"step": N, "metric": value, ...}."""

  def __init__(self, path: str):
    self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

  def write(self, step: int, scalars: dict) -> None:
    self._file.write(json.dumps({"step": step, **scalars}) + "\n")
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class TensorBoardWriter:
  """TensorBoard event files (readable by `tensorboard --logdir`), without TensorFlow."""

  def __init__(self, logdir: str):
    from tensorboardX import SummaryWriter  # imported here: only this writer needs it

    self._writer = SummaryWriter(logdir)

  def write(self, step: int, scalars: dict) -> None:
    for name, value in scalars.items():
      self._writer.add_scalar(name, value, step)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  m, s = divmod(int(round(seconds)), 60)
  h, m = divmod(m, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class ProgressWriter:
  """One line per write: step, metrics, steps/s since the last write, and ETA."""

  def __init__(self, total_steps: int, stream=None):
    self._total = total_steps
    self._stream = stream or sys.stdout
    self._last = None  # (step, time) at the previous train write

  def write(self, step: int, scalars: dict) -> None:
    now = time.perf_counter()
    line = f"step {step}/{self._total}"
    if not all(k.startswith("eval_") for k in scalars):  # a training window
      if self._last is not None and step > self._last[0]:
        rate = (step - self._last[0]) / (now - self._last[1])
        line += f" | {rate:.1f} steps/s | ETA {_duration((self._total - step) / rate)}"
      self._last = (step, now)
    line += " | " + " ".join(f"{k} {v:.4g}" for k, v in scalars.items())
    print(line, file=self._stream, flush=True)

  def close(self) -> None:
    pass


class MultiWriter:
  """Writes to all of its writers; only process 0 writes anything."""

  def __init__(self, writers):
    self._writers = list(writers) if jax.process_index() == 0 else []

  def write(self, step: int, scalars: dict) -> None:
    if not scalars:
      return
    for w in self._writers:
      w.write(step, scalars)

  def close(self) -> None:
    for w in self._writers:
      w.close()


def create_writer(workdir: str, total_steps: int) -> MultiWriter:
  """Progress on stdout, `<workdir>/metrics.jsonl` and TensorBoard events in `<workdir>/tb`."""
  return MultiWriter(
    [
      ProgressWriter(total_steps),
      JsonlWriter(os.path.join(workdir, "metrics.jsonl")),
      TensorBoardWriter(os.path.join(workdir, "tb")),
    ]
  )
