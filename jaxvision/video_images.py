"""Video a person looks at: animated GIFs and PNG film strips of observed, predicted, true frames.

Frames are float arrays [T, H, W, C] (C = 1 or 3) with pixels in [0, 1]. Panels are tiled with a
`pad`-pixel white border; places without a frame (a panel before its first frame or after its
last) are mid-grey, so they never look like a black background. Grey-level images are written
as 8-bit palette-less "L" images (a GIF stores them with a 256-grey palette) and colour ones are
quantised to a 256-colour palette, which keeps files small.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

EMPTY = 0.5  # grey: no frame here


def _uint8(frames: np.ndarray) -> np.ndarray:
  return np.clip(np.rint(np.asarray(frames, np.float32) * 255.0), 0, 255).astype(np.uint8)


def _tile(panels: Sequence[Sequence[np.ndarray | None]], pad: int) -> np.ndarray:
  """Tiles rows of images [H, W, C] (None: empty) into one uint8 image [rows*, cols*, C]."""
  shapes = {p.shape for row in panels for p in row if p is not None}
  if len(shapes) != 1:
    raise ValueError(f"panels must share one frame shape, got {sorted(shapes)}")
  (h, w, c) = shapes.pop()
  rows, cols = len(panels), max(len(row) for row in panels)
  out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
  for r, row in enumerate(panels):
    for q, image in enumerate(row):
      y, x = pad + r * (h + pad), pad + q * (w + pad)
      out[y : y + h, x : x + w] = _uint8(EMPTY if image is None else image)
  return out


def _pil(image: np.ndarray, scale: int) -> Image.Image:
  pil = Image.fromarray(image[..., 0]) if image.shape[-1] == 1 else Image.fromarray(image)
  if image.shape[-1] != 1:
    pil = pil.quantize(256)
  if scale > 1:
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
  return pil


def _frame(clip: np.ndarray, t: int) -> np.ndarray | None:
  return clip[t] if t < len(clip) else None


def save_gif(
  path: str,
  frames_rows: Sequence[Sequence[np.ndarray]],
  *,
  scale: int = 1,
  milliseconds: int = 100,
  pad: int = 2,
) -> str:
  """Writes a looping animated GIF of clips side by side.

  Args:
    path: the .gif file to write (folders are created).
    frames_rows: rows (e.g. one per example) of clips [T_i, H, W, C] in [0, 1] shown side by side
      (e.g. observed | predicted | true, see `prediction_panels`). The GIF has max T_i frames; a
      clip with fewer shows grey after its end.
    scale: integer upscaling (nearest neighbour).
    milliseconds: display time of each frame.
    pad: white border between panels, in pixels before scaling.

  Returns:
    `path`. (PIL merges identical consecutive frames into one longer frame; a GIF of a clip
    that stands still has fewer frames but the same duration.)
  """
  length = max(len(clip) for row in frames_rows for clip in row)
  images = [
    _pil(_tile([[_frame(clip, t) for clip in row] for row in frames_rows], pad), scale)
    for t in range(length)
  ]
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  images[0].save(path, save_all=True, append_images=images[1:], duration=milliseconds, loop=0)
  return path


def save_strip(
  path: str,
  rows: Sequence[np.ndarray | Sequence[np.ndarray | None]],
  *,
  scale: int = 1,
  pad: int = 2,
) -> str:
  """Writes a PNG film strip: each row a clip [T, H, W, C] in [0, 1], frames left to right.

  Args:
    path: the .png file to write (folders are created).
    rows: clips, or sequences of frames [H, W, C] with None for an empty (grey) place, so that
      predicted frames can sit under the true frames they predict (see `prediction_strip`).
    scale: integer upscaling (nearest neighbour).
    pad: white border between frames, in pixels before scaling.

  Returns:
    `path`.
  """
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  _pil(_tile([list(row) for row in rows], pad), scale).save(path, optimize=True)
  return path


def prediction_panels(clip: np.ndarray, predicted: np.ndarray) -> list[np.ndarray]:
  """The three GIF panels observed | predicted | true, aligned in time over the whole clip.

  Args:
    clip: the true clip [T, H, W, C] in [0, 1].
    predicted: predicted pixels [P, H, W, C] of its last P frames.

  Returns:
    [observed, predicted, true], each [T, H, W, C]: the observed panel plays the T - P context
    frames and then holds the last one; the other two are grey during the context and then play
    the predicted and true future frames together.
  """
  t, p = len(clip), len(predicted)
  context = t - p
  grey = np.full((context, *clip.shape[1:]), EMPTY, np.float32)
  observed = np.concatenate([clip[:context], np.repeat(clip[context - 1 : context], p, 0)])
  return [
    observed,
    np.concatenate([grey, predicted]),
    np.concatenate([grey, clip[context:]]),
  ]


def prediction_strip(clip: np.ndarray, predicted: np.ndarray) -> list[list[np.ndarray | None]]:
  """Strip rows for `save_strip`: the true clip, and below each predicted frame its prediction."""
  context = len(clip) - len(predicted)
  return [list(clip), [None] * context + list(predicted)]
