"""Image outputs a person looks at: PNG sample grids and GIF animations."""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[-1, 1] floats (a tanh generator's range) to uint8 pixels."""
  return np.clip(np.rint((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def grid(images: np.ndarray, cols: int | None = None, pad: int = 2) -> np.ndarray:
  """Tiles images [N, H, W, C] in [-1, 1] into one uint8 image, `pad` pixels apart."""
  n, h, w, c = images.shape
  cols = cols or math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
  for i, image in enumerate(to_uint8(images)):
    r, q = divmod(i, cols)
    out[
      pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w
    ] = image
  return out


def _pil(array: np.ndarray) -> Image.Image:
  return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def save_grid(images: np.ndarray, path: str, cols: int | None = None, scale: int = 1) -> str:
  """Writes a PNG grid of images [N, H, W, C] in [-1, 1]; returns the path."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  image = _pil(grid(images, cols))
  if scale > 1:
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
  image.save(path)
  return path


def save_gif(frames: list[np.ndarray], path: str, milliseconds: int = 80) -> str:
  """Writes uint8 frames [H, W, C] as a looping GIF; returns the path."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  images = [_pil(f) for f in frames]
  images[0].save(path, save_all=True, append_images=images[1:], duration=milliseconds, loop=0)
  return path
