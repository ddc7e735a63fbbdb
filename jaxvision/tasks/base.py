"""What every Task declares: the family-specific half of a training run.

A Task is what one model family knows (big_vision's `trainers/proj/*`, reduced to their
differences): which config keys it reads and how to check them, how to build its models and
optimizers, its initial state, its train step, how a batch becomes model inputs, and the named
prediction functions its evaluators and tools call. Everything else (strategies, data, keys,
evaluators, checkpoints, the loop, results) is written once in `jaxvision.train.trainer`, and any
finished or interrupted run is rebuilt from its Task by `jaxvision.runs.load_run`.

A new family is one module with a `Task` subclass plus a line in `jaxvision.tasks.TASKS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What a Task needs of its data set to build models, saved with every checkpoint (so a run
  can be rebuilt without loading its data).

  Attributes:
    input_shape: one example's inputs, without the batch axis.
    info: the data set's facts (`Dataset.info`): `num_classes`, `time_axes`, ...
  """

  input_shape: tuple
  info: dict = dataclasses.field(default_factory=dict)

  @classmethod
  def of(cls, dataset) -> DataInfo:
    return cls(tuple(dataset.input_shape), dict(dataset.info))

  @classmethod
  def from_dict(cls, record: dict) -> DataInfo:
    return cls(tuple(record["input_shape"]), dict(record.get("info", {})))

  def as_dict(self) -> dict:
    return {"input_shape": list(self.input_shape), "info": dict(self.info)}

  @property
  def num_classes(self) -> int:
    if "num_classes" not in self.info:
      raise ValueError(f"the data set has no classes (info: {sorted(self.info)})")
    return int(self.info["num_classes"])


class Task:
  """The interface; families subclass it (see the module docstring).

  Construction builds the models and optimizers from the config (no data, no devices):
  `Task(config, data, axis_name)`, `axis_name` being the strategy's device axis (None under jit),
  which batch-norm layers average over.
  """

  def __init__(self, config, data: DataInfo, axis_name: str | None = None):
    self.config, self.data, self.axis_name = config, data, axis_name

  @classmethod
  def validate(cls, config, strategy) -> None:
    """Checks the keys this family reads (beyond the shared ones); raises ConfigError naming the
    key and the fix, before any data is loaded."""

  def init_state(self, key):
    """The initial train state (global, unplaced) from a PRNG key."""
    raise NotImplementedError

  def train_step(self, state, batch: dict, key, *, axis_name: str | None = None):
    """One step: `(state, batch, base key) -> (state, metrics)`, pure; this step's randomness is
    `fold_in(key, state.step)`; `axis_name` is the device axis under pmap (None under jit)."""
    raise NotImplementedError

  def step_options(self, step: int) -> dict:
    """Static keyword arguments of `train_step` for the step after `step` steps (chosen on the
    host: one compiled program per distinct value, e.g. a regulariser every k steps); {} for
    most Tasks. Steps scanned together (`steps_per_call`) take none."""
    return {}

  def with_optimizers(self, state):
    """`state` with this Task's optimizers in its static fields (e.g. `tx`) in place of those it
    was made with: how members that differ in learning rate share one step
    (`jaxvision.train.members`)."""
    raise NotImplementedError

  def predict_fns(self) -> dict[str, Callable]:
    """Named pure functions `fn(state, batch)` for evaluators and tools (e.g. "predict")."""
    raise NotImplementedError

  def evaluator_info(self) -> dict:
    """Facts evaluators may need beyond the data (e.g. {"z_dim": 100})."""
    return {}

  def summary(self, state) -> str:
    """One line about the model(s) of a global state, e.g. "cnn_a: 93,322 params"."""
    raise NotImplementedError

  def results(self, state) -> dict:
    """Fields for results.json from the final global state (e.g. parameter counts)."""
    return {}
