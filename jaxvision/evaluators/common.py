"""Pluggable evaluators (big_vision's `evaluators/common.py`): declared in the config, built here.

`config.evaluators` maps a name to a block with a `type` (a key of `TYPES`) and that type's
settings. Every evaluator has `metrics` (the `MetricSpec`s it reports, so the report renders them
without guessing the run's kind), `run(state, step) -> {name: value}` and `provenance() -> dict`
(what results.json should record about how the metrics were made, e.g. the GAN metrics' feature
classifier; often {}); its metric names start with its own name (evaluator "eval" reports
"eval_accuracy"). Evaluators reach the model only through the Task's named prediction functions
(`predict_fns`, e.g. "predict" or "generate", each `fn(state, batch)`) and the devices only
through the parallel strategy.
"""

from __future__ import annotations

import dataclasses
import importlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision import data as data_lib
from jaxvision import parallel

TYPES = {
  "classification": "jaxvision.evaluators.classification",
  "detection": "jaxvision.evaluators.detection",
  "gan": "jaxvision.evaluators.gan",
  "segmentation": "jaxvision.evaluators.segmentation",
  "speech": "jaxvision.evaluators.speech",
  "video_prediction": "jaxvision.evaluators.video",
}


@dataclasses.dataclass(frozen=True)
class MetricSpec:
  """How a metric is shown: `format` percent|float|int, `better` higher|lower|None."""

  name: str
  label: str
  format: str = "float"
  better: str | None = None

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Context:
  """What an evaluator may use: the trainer's prediction functions, data, devices, workdir."""

  predict_fns: dict  # name -> pure fn(state, batch) (unjitted; evaluators compile them)
  dataset: object  # jaxvision.data.Dataset
  strategy: object  # jaxvision.parallel.Strategy
  workdir: str
  key: object  # a PRNG key for evaluators that sample
  batch_size: int  # default evaluation batch size (config.data.eval_batch_size)
  info: dict = dataclasses.field(default_factory=dict)  # trainer facts, e.g. {"z_dim": 100}
  compiler_options: dict | None = None  # XLA options for every compile (xla.compiler_options)


def summed_over_split(step, state, source, batch_size: int, strategy) -> dict:
  """The sums `step(state, batch)` returns (replicated arrays, e.g. psummed over the devices)
  added over every padded batch of the eval `source`, each process reading only its rows;
  fetched as numpy."""
  totals = None
  rows = parallel.host_rows(batch_size)
  for batch in data_lib.eval_batches(source, batch_size, rows):
    sums = step(state, strategy.place_local_batch(batch))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return strategy.fetch(totals)


def rows_over_split(step, state, source, batch_size: int, strategy, mask: str = "mask"):
  """Yields, per padded batch of the eval `source`, the per-example outputs of
  `step(state, batch)` (rows split like the batch) as numpy on every process, less the padding
  rows: those where output `mask` (dropped from what is yielded) is 0."""
  rows = parallel.host_rows(batch_size)
  for batch in data_lib.eval_batches(source, batch_size, rows):
    out = strategy.fetch_rows(step(state, strategy.place_local_batch(batch)))
    real = np.asarray(out.pop(mask)) > 0
    yield {k: np.asarray(v)[real] for k, v in out.items()}


def predict_rows(compiled, state, batch: dict, strategy):
  """`compiled(state, batch)`'s per-example outputs for a host batch of any size N (the same on
  every process): zero-padded to a multiple of the devices, placed, run, fetched as numpy and
  cut back to N rows."""
  n = len(next(iter(batch.values())))
  extra = -(-n // strategy.num_devices) * strategy.num_devices - n
  padded = {
    k: np.concatenate([v, np.zeros((extra, *v.shape[1:]), v.dtype)]) for k, v in batch.items()
  }
  out = strategy.fetch_rows(compiled(state, strategy.place_batch(padded)))
  return jax.tree.map(lambda x: np.asarray(x)[:n], out)


def from_config(config, context: Context) -> list:
  """Builds every evaluator of `config` (the experiment's `config.evaluators`), in order."""
  evaluators = []
  for name, block in config.items():
    kind = block.get("type")
    if kind not in TYPES:
      raise ValueError(f"evaluators.{name}.type {kind!r} unknown; expected one of {sorted(TYPES)}")
    module = importlib.import_module(TYPES[kind])
    settings = {k: v for k, v in block.items() if k != "type"}
    evaluators.append(module.Evaluator(name, context, **settings))
  return evaluators


def run_all(evaluators, state, step: int) -> dict:
  out = {}
  for evaluator in evaluators:
    out.update(evaluator.run(state, step))
  return out


def declared(evaluators) -> list[dict]:
  return [spec.as_dict() for e in evaluators for spec in e.metrics]
