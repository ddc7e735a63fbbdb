"""Any run, finished or interrupted, rebuilt from its Task: `load_run(workdir)`.

Every tool over trained runs (sampling, inpainting, the GAN metrics' feature classifier, the
eval-only entry, and the explainability and compression tools to come) gets its model this way,
never by knowing a trainer's checkpoint layout (big_vision's `tools/eval_only.py`):

  run = runs.load_run("runs/mnist_cnn_idx")
  logits = run.predict("predict")({"inputs": images})
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from jaxvision import checkpoint, parallel, tasks
from jaxvision import data as data_lib
from jaxvision import workdir as workdir_lib
from jaxvision.tasks.base import DataInfo, Task


@dataclasses.dataclass
class LoadedRun:
  """A run rebuilt from its workdir.

  Attributes:
    workdir: where it lives.
    config: its resolved config.
    task: its Task, built from the config and the data info saved with the checkpoint.
    state: the restored train state, placed by `strategy`.
    step: the checkpoint's step.
    strategy: how the state is placed and functions are compiled (one device by default).
  """

  workdir: str
  config: ml_collections.ConfigDict
  task: Task
  state: Any
  step: int
  strategy: parallel.Strategy

  def apply(self, name: str) -> Callable:
    """The Task's prediction function `name` on this run's state, as a pure, traceable
    `fn(batch) -> output` (to differentiate or compose; `predict` compiles it)."""
    fns = self.task.predict_fns()
    if name not in fns:
      raise ValueError(
        f"a {self.config.trainer!r} run has no prediction function {name!r}; it has {sorted(fns)}"
      )
    state = self.state
    return lambda batch: fns[name](state, batch)

  def predict(self, name: str) -> Callable:
    """The Task's prediction function `name`, compiled, as `fn(batch) -> output` on this run's
    state (batches of host arrays; under a multi-device strategy, a multiple of the devices)."""
    self.apply(name)  # an unknown name fails here, in one line
    compiled = self.strategy.compile(self.task.predict_fns()[name])
    strategy = self.strategy
    return lambda batch: strategy.fetch_rows(compiled(self.state, strategy.place_batch(batch)))

  def dataset(self, **overrides) -> data_lib.Dataset:
    """The run's data set, as its config describes it (with `overrides` of data keys). Keys a
    newer jaxvision added take their defaults and keys it dropped are ignored, so that older
    workdirs still load."""
    return run_dataset(self.config, **overrides)


def run_dataset(config: ml_collections.ConfigDict, **overrides) -> data_lib.Dataset:
  """The data set a run's `config` describes, with `overrides` of data keys (for tools that
  need a run's data but not its model, e.g. `jaxvision.tools.knn`). Keys a newer jaxvision added
  take their defaults and keys it dropped are ignored, so that older workdirs still load."""
  known = data_lib.data_config(config.data.source)
  saved = {k: v for k, v in config.data.to_dict().items() if k in known}
  return data_lib.load_dataset(data_lib.data_config(**{**saved, **overrides}))


def _data_info(config, meta: dict) -> DataInfo:
  """The data info a checkpoint saved; for checkpoints older than that, rebuilt from what they
  saved (a GAN's image shape) or, failing that, from the data set itself."""
  if "data_info" in meta:
    return DataInfo.from_dict(meta["data_info"])
  if "image_shape" in meta:
    return DataInfo(tuple(meta["image_shape"]), {"num_classes": meta.get("num_classes", 0)})
  return DataInfo.of(run_dataset(config))


def load_run(workdir: str, strategy: parallel.Strategy | None = None) -> LoadedRun:
  """Rebuilds the run in `workdir` from its newest readable checkpoint.

  Args:
    workdir: a run's workdir (finished or not).
    strategy: where to place the state (default: sharded jit on one device).

  Returns:
    The run.

  Raises:
    FileNotFoundError: not a workdir, or no checkpoint yet.
    ValueError: an unknown family, or no checkpoint fits the run's model.
  """
  config = workdir_lib.load_config(workdir)
  task_class = tasks.get(config.get("trainer"))
  directory = workdir_lib.checkpoints_dir(workdir)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints in {workdir!r}: the run has not saved one yet")
  strategy = strategy or parallel.Strategy(1)
  _, meta = checkpoint.read_meta(directory)
  task = task_class(config, _data_info(config, meta), strategy.axis_name)
  abstract = strategy.abstract_state(jax.eval_shape(lambda: task.init_state(jax.random.key(0))))
  checkpointer = checkpoint.Checkpointer(
    directory, every_steps=1, keep=config.checkpoint.get("keep", 1)
  )
  try:
    restored = checkpointer.restore(abstract)
  finally:
    checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {directory}")
  state, meta = restored
  return LoadedRun(workdir, config, task, strategy.place_state(state), meta["step"], strategy)
