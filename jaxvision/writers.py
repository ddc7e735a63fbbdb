"""Metric writers: a progress line on stdout, `metrics.jsonl`, TensorBoard.

Step functions return dicts of scalars that stay on device; the training loop
(`jaxvision.train.loop`) fetches a whole logging window in one transfer and writes its means here.
Only process 0 of a multi-host run creates writers or files.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time

import jax

from jaxvision import workdir as workdir_lib


class JsonlWriter:
  """Appends one JSON object per write to `path`: {"step": N, "metric": value, ...}."""

  def __init__(self, path: str):
    self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

  def write(self, step: int, scalars: dict, *, window: bool = False) -> None:
    self._file.write(json.dumps({"step": step, **scalars}) + "\n")
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class TensorBoardWriter:
  """TensorBoard event files (readable by `tensorboard --logdir`), without TensorFlow."""

  def __init__(self, logdir: str):
    from tensorboardX import SummaryWriter  # imported here: only this writer needs it

    self._writer = SummaryWriter(logdir)

  def write(self, step: int, scalars: dict, *, window: bool = False) -> None:
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


_NUMBERED = re.compile(r"^(.*\D)(\d+)$")  # a per-class series: "eval_iou_3", "eval_ap50_class3"
MIN_SERIES = 3  # numbered metrics of one prefix folded into one entry from this many on


def progress_entries(scalars: dict) -> list[str]:
  """Each metric as "name value", but a per-class series of MIN_SERIES or more ("eval_iou_0",
  "eval_iou_1", ...) folded into one "eval_iou_{0..10} 0.8812..0.9931" (lowest..highest) where
  its first member stood; the files (JSONL, TensorBoard) keep every metric."""
  series = {}
  for k in scalars:
    match = _NUMBERED.match(k)
    if match:
      series.setdefault(match.group(1), []).append((int(match.group(2)), k))
  entries, done = [], set()
  for k, v in scalars.items():
    match = _NUMBERED.match(k)
    members = series.get(match.group(1), []) if match else []
    if len(members) < MIN_SERIES:
      entries.append(f"{k} {v:.4g}")
    elif match.group(1) not in done:
      done.add(match.group(1))
      numbers = [n for n, _ in members]
      values = [scalars[name] for _, name in members]
      entries.append(
        f"{match.group(1)}{{{min(numbers)}..{max(numbers)}}} {min(values):.4g}..{max(values):.4g}"
      )
  return entries


class ProgressWriter:
  """One line per write: step, metrics (per-class series folded: `progress_entries`), steps/s
  since the last write, and ETA."""

  def __init__(self, total_steps: int, stream=None, label: str = ""):
    self._total = total_steps
    self._label = f"{label} " if label else ""
    self._stream = stream or sys.stdout
    self._last = None  # (step, time) at the previous train write

  def write(self, step: int, scalars: dict, *, window: bool = False) -> None:
    now = time.perf_counter()
    line = f"{self._label}step {step}/{self._total}"
    if window:  # a training window: its rate and the time left
      if self._last is not None and step > self._last[0]:
        rate = (step - self._last[0]) / (now - self._last[1])
        line += f" | {rate:.1f} steps/s | ETA {_duration((self._total - step) / rate)}"
      self._last = (step, now)
    line += " | " + " ".join(progress_entries(scalars))
    print(line, file=self._stream, flush=True)

  def close(self) -> None:
    pass


class MultiWriter:
  """Writes to all of its writers."""

  def __init__(self, writers):
    self._writers = list(writers)

  def write(self, step: int, scalars: dict, *, window: bool = False) -> None:
    if not scalars:
      return
    for w in self._writers:
      w.write(step, scalars, window=window)

  def close(self) -> None:
    for w in self._writers:
      w.close()


def create_writer(workdir: str, total_steps: int, label: str = "") -> MultiWriter:
  """Progress on stdout (each line starting with `label`, e.g. a member's name),
  `<workdir>/metrics.jsonl` and TensorBoard events in `<workdir>/tb`; on processes other than 0,
  a writer that writes nothing."""
  if jax.process_index() != 0:
    return MultiWriter([])
  return MultiWriter(
    [
      ProgressWriter(total_steps, label=label),
      JsonlWriter(workdir_lib.metrics_path(workdir)),
      TensorBoardWriter(workdir_lib.tensorboard_dir(workdir)),
    ]
  )
