"""Data sources, chosen by `config.data.source`; each returns an in-memory `Dataset`."""

from __future__ import annotations

import importlib

from jaxvision.data.base import Dataset, Split
from jaxvision.data.pipeline import BatchSampler, eval_batches

# source name -> module with `load(data_config) -> Dataset`; imported lazily so that one source's
# dependencies (tfds, sklearn) are not loaded for another.
SOURCES = {
  "tfds": "jaxvision.data.tfds",
  "idx": "jaxvision.data.idx",
  "mnist1d": "jaxvision.data.mnist1d",
  "digits": "jaxvision.data.digits",
}


def load_dataset(config) -> Dataset:
  """Loads the data set described by `config` (the experiment's `config.data`)."""
  if config.source not in SOURCES:
    raise ValueError(f"unknown data source {config.source!r}; known: {sorted(SOURCES)}")
  return importlib.import_module(SOURCES[config.source]).load(config)


__all__ = ["Dataset", "Split", "BatchSampler", "eval_batches", "load_dataset", "SOURCES"]
