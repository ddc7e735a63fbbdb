"""Data sources, chosen by `config.data.source`; each has its own config keys and `load`.

`config.data` holds the pipeline keys every source shares (`COMMON`) plus the chosen source's own
`DEFAULTS`; `data_config(source, **overrides)` builds it. A key whose default is None (unset)
is named with its type in the module's `OPTIONAL` ({key: type}) and becomes a typed placeholder,
so the command line can set it. A source module may hold its examples in memory (`ArraySource`)
or generate them on the fly from (seed, index) (`GeneratedSource`).
"""

from __future__ import annotations

import dataclasses
import importlib

import ml_collections
import numpy as np
from ml_collections.config_dict import placeholder

from jaxvision.config_dict import block
from jaxvision.data.base import ArraySource, Dataset, GeneratedSource, MappedSource
from jaxvision.data.pipeline import BatchSampler, Prefetcher, eval_batches

# source name -> module with `DEFAULTS` and `load(data_config) -> Dataset`; imported lazily so that
# one source's dependencies (tfds, sklearn) are not loaded for another.
SOURCES = {
  "tfds": "jaxvision.data.tfds",
  "idx": "jaxvision.data.idx",
  "mnist1d": "jaxvision.data.mnist1d",
  "digits": "jaxvision.data.digits",
  "marked_sum": "jaxvision.data.marked_sum",
  "moving_mnist": "jaxvision.data.moving_mnist",
  "scenes": "jaxvision.data.scenes",
  "speech": "jaxvision.data.speech",
}
LAYOUTS = ("image", "sequence")
COMMON = dict(
  source="mnist1d",  # a key of SOURCES
  batch_size=128,  # global train batch, over every device and host
  eval_batch_size=1000,
  layout="image",  # image | sequence (images as rows over time, e.g. sequential MNIST)
  shuffle_labels=False,  # permute the train targets: a control that must stay at chance
  prefetch=-1,  # train batches built ahead by a thread; -1: 2 on GPU/TPU, 0 on CPU (no gain there)
)


def source_module(name: str):
  if name not in SOURCES:
    raise ValueError(f"unknown data source {name!r}; known: {sorted(SOURCES)}")
  return importlib.import_module(SOURCES[name])


def data_config(source: str, **overrides) -> ml_collections.ConfigDict:
  """`config.data` for `source`: the shared pipeline keys and the source's own, all present."""
  module = source_module(source)
  unset = {key: placeholder(kind) for key, kind in getattr(module, "OPTIONAL", {}).items()}
  return block({**COMMON, **module.DEFAULTS, **unset, "source": source}, **overrides)


def load_dataset(config) -> Dataset:
  """Loads the data set described by `config` (the experiment's `config.data`).

  After the source: `layout="sequence"` turns images [N, H, W, C] into sequences [N, H, W * C]
  (one row per time step, as in sequential MNIST); `shuffle_labels` permutes the train targets
  with a fixed seed (a control experiment that must stay at chance).
  """
  if config.layout not in LAYOUTS:
    raise ValueError(f"unknown data.layout {config.layout!r}; expected one of {LAYOUTS}")
  dataset = source_module(config.source).load(config)
  if config.layout == "sequence":
    if len(dataset.input_shape) != 3:
      raise ValueError(
        f"data.layout='sequence' needs images [N, H, W, C], got inputs {dataset.input_shape}"
      )
    as_rows = lambda x: x.reshape(*x.shape[:2], -1)  # [N, H, W, C] -> [N, H, W * C]
    dataset = dataclasses.replace(
      dataset,
      train=_map_inputs(dataset.train, as_rows),
      eval=_map_inputs(dataset.eval, as_rows),
      description=dataset.description + ", rows as time steps",
    )
  if config.shuffle_labels:
    if not hasattr(dataset.train, "targets"):
      raise ValueError("data.shuffle_labels needs a source with class targets")
    targets = np.random.default_rng(0).permutation(dataset.train.targets)
    train = dataset.train
    if isinstance(train, ArraySource):
      train = train.replace(targets=targets)
    else:
      train = MappedSource(train, lambda batch, indices: {**batch, "targets": targets[indices]})
    dataset = dataclasses.replace(
      dataset, train=train, description=dataset.description + ", train labels shuffled (control)"
    )
  return dataset


def _map_inputs(source, fn):
  """`source` with `fn` applied to its inputs: in place for arrays, per batch otherwise."""
  if isinstance(source, ArraySource):
    return source.replace(inputs=fn(source.inputs))
  return MappedSource(source, lambda batch, indices: {**batch, "inputs": fn(batch["inputs"])})


__all__ = [
  "ArraySource",
  "BatchSampler",
  "Prefetcher",
  "Dataset",
  "GeneratedSource",
  "MappedSource",
  "SOURCES",
  "data_config",
  "eval_batches",
  "load_dataset",
]
