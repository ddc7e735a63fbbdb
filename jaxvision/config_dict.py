"""`block`: a config block with every key present, so that locked command-line overrides work.

The bottom of the import graph: modules that define config defaults import this and nothing else
of jaxvision's configuration code.
"""

from __future__ import annotations

import ml_collections


class ConfigError(ValueError):
  """A config value that cannot work (out of range, unknown name): the command line's fault,
  reported in one line with exit status 2, before anything is computed or written."""


def block(defaults: dict, **overrides) -> ml_collections.ConfigDict:
  """A ConfigDict of `defaults` updated by `overrides`; an unknown override key is an error."""
  unknown = set(overrides) - set(defaults)
  if unknown:
    raise KeyError(f"unknown keys {sorted(unknown)}; expected some of {sorted(defaults)}")
  return ml_collections.ConfigDict({**defaults, **overrides})
