"""The k-nearest-neighbour floor of a classifier run's split: raw pixels, Euclidean distance.

  python -m jaxvision.tools.knn --workdir=runs/mnist_cnn_idx/data.fold=0 --k=3

Reads the run's data config (its fold too), not its model: every eval image is given the
majority label of its `k` nearest training images in raw pixel space (the data set's
normalisation turned off, as a plain k-NN baseline has it; a tie between labels goes to the label
of the nearest of the tied neighbours). Printed, and written as a results record
(`<record_dir>/results.json`, default `<workdir>/knn/k=<K>/`) for the report and a campaign's
`Analysis`, so that the floor sits beside the model it bounds, on the same split.

Exit status: 0 done, 1 an error (one line).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS
METRICS = ({"name": "accuracy", "label": "accuracy", "format": "percent", "better": "higher"},)


def _define_flags():
  flags.DEFINE_string("workdir", None, "A classifier run (its data config is used).")
  flags.DEFINE_integer("k", 3, "Neighbours that vote.")
  flags.DEFINE_integer("batch_size", 500, "Eval images per distance computation.")
  flags.DEFINE_string("record_dir", None, "Folder of results.json (default: <workdir>/knn/k=K).")


def record_dir(workdir: str, k: int) -> str:
  return os.path.join(workdir, "knn", f"k={k}")


def predict(
  train_x: np.ndarray, train_y: np.ndarray, query: np.ndarray, k: int, batch_size: int = 500
) -> np.ndarray:
  """The k-NN label of each row of `query` ([N, ...]) among `train_x` ([M, ...], labels
  `train_y`): the most frequent label of the k nearest by Euclidean distance, a tie going to the
  tied label whose neighbour is nearest."""
  if not 1 <= k <= len(train_x):
    raise ValueError(f"k={k} must be in [1, {len(train_x)}] (the training examples)")
  train = train_x.reshape(len(train_x), -1).astype(np.float64)
  norms = (train**2).sum(1)
  out = []
  for start in range(0, len(query), batch_size):
    q = query[start : start + batch_size].reshape(-1, train.shape[1]).astype(np.float64)
    dist = norms[None, :] - 2.0 * q @ train.T  # |q|^2 is the same along each row
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]  # nearest first
    labels = train_y[nearest]
    votes = (labels[:, :, None] == labels[:, None, :]).sum(-1)  # each neighbour's label's votes
    # the first neighbour (nearest) among those whose label has the most votes
    out.append(labels[np.arange(len(labels)), np.argmax(votes == votes.max(1, keepdims=True), 1)])
  return np.concatenate(out) if out else np.zeros(0, train_y.dtype)


def knn(workdir: str, k: int, batch_size: int = 500) -> dict:
  """The k-NN accuracy on the eval split of the run in `workdir`; returns the numbers."""
  from jaxvision import runs
  from jaxvision import workdir as workdir_lib

  config = workdir_lib.load_config(workdir)
  if config.trainer != "classifier":
    raise ValueError(f"{workdir} is a {config.trainer!r} run, not a classifier run")
  dataset = runs.run_dataset(config, normalize="none")
  train = dataset.train.get(np.arange(len(dataset.train)))
  eval_ = dataset.eval.get(np.arange(len(dataset.eval)))
  predicted = predict(train["inputs"], train["targets"], eval_["inputs"], k, batch_size)
  return {
    "accuracy": float((predicted == eval_["targets"]).mean()),
    "num_train": len(train["targets"]),
    "num_eval": len(eval_["targets"]),
    "dataset": dataset.description,
  }


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from jaxvision.tools import record

  start = time.perf_counter()
  directory = FLAGS.record_dir or record_dir(FLAGS.workdir, FLAGS.k)
  try:
    results = knn(FLAGS.workdir, FLAGS.k, FLAGS.batch_size)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"knn: error: {e}")
  dataset = results.pop("dataset")
  made = record.make(
    FLAGS.workdir,
    "knn",
    {"k": FLAGS.k, "pixels": "raw", "distance": "euclidean"},
    results,
    METRICS,
    record.command_line("knn"),
    time.perf_counter() - start,
    dataset=dataset,
    model=f"{FLAGS.k}-nearest neighbours on raw pixels",
  )
  made["num_params"] = 0  # a k-NN has no parameters: it stores the training set
  made["num_train_steps"] = 0
  record.write(directory, made)
  print(
    f"{FLAGS.workdir}: {FLAGS.k}-NN on raw pixels, {results['num_train']} training images: "
    f"{100 * results['accuracy']:.2f}% of {results['num_eval']} eval images. Wrote {directory}"
  )


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
