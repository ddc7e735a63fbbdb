"""An on-disk cache for generated data sets: made once, read back on later runs.

Generated sources are pure functions of their arguments, so what they make can be kept:
`load_or_make(name, make)` returns the arrays saved under `name` in the cache folder, else calls
`make()` and saves its arrays there (written to a temporary file and renamed, so concurrent
runs and interrupted writes never leave a partial file behind). The folder is
`$JAXVISION_CACHE_DIR`, else `~/.cache/jaxvision`; delete it at any time. A name must say
everything the arrays depend on (package versions, arguments).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np


def cache_dir() -> str:
  return os.environ.get("JAXVISION_CACHE_DIR") or os.path.join(
    os.path.expanduser("~"), ".cache", "jaxvision"
  )


def load_or_make(name: str, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """The arrays cached as `name` (a file name without extension), made and cached if absent or
  unreadable. A cache that cannot be written (a read-only home) only costs the making."""
  path = os.path.join(cache_dir(), f"{name}.npz")
  try:
    with np.load(path) as saved:
      return {k: saved[k] for k in saved.files}
  except (OSError, ValueError, EOFError):
    pass  # absent, or damaged: make it again
  arrays = make()
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
  except OSError:
    pass
  return arrays
