"""Data sources, chosen by `config.data.source`; each returns an in-memory `Dataset`."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np

from jaxvision.data.base import Dataset, Split
from jaxvision.data.pipeline import BatchSampler, eval_batches

# source name -> module with `load(data_config) -> Dataset`; imported lazily so that one source's
# dependencies (tfds, sklearn) are not loaded for another.
SOURCES = {
  "tfds": "jaxvision.data.tfds",
  "idx": "jaxvision.data.idx",
  "mnist1d": "jaxvision.data.mnist1d",
  "digits": "jaxvision.data.digits",
  "marked_sum": "jaxvision.data.marked_sum",
}
LAYOUTS = ("image", "sequence")


def load_dataset(config) -> Dataset:
  """Loads the data set described by `config` (the experiment's `config.data`).

  After the source: `layout="sequence"` turns images [N, H, W, C] into sequences [N, H, W * C]
  (one row per time step, as in sequential MNIST); `shuffle_labels` permutes the train labels
  with a fixed seed (a control experiment that must stay at chance).
  """
  if config.source not in SOURCES:
    raise ValueError(f"unknown data source {config.source!r}; known: {sorted(SOURCES)}")
  if config.layout not in LAYOUTS:
    raise ValueError(f"unknown data.layout {config.layout!r}; expected one of {LAYOUTS}")
  dataset = importlib.import_module(SOURCES[config.source]).load(config)
  if config.layout == "sequence" and dataset.train.inputs.ndim == 4:
    as_rows = lambda s: Split(s.inputs.reshape(*s.inputs.shape[:2], -1), s.labels)
    dataset = dataclasses.replace(
      dataset,
      train=as_rows(dataset.train),
      eval=as_rows(dataset.eval),
      description=dataset.description + ", rows as time steps",
    )
  if config.shuffle_labels:
    labels = np.random.default_rng(0).permutation(dataset.train.labels)
    dataset = dataclasses.replace(
      dataset,
      train=Split(dataset.train.inputs, labels),
      description=dataset.description + ", train labels shuffled (control)",
    )
  return dataset


__all__ = ["Dataset", "Split", "BatchSampler", "eval_batches", "load_dataset", "SOURCES"]
