"""The k-nearest-neighbour floor (`jaxvision.tools.knn`): its votes against a plain loop, and
the tool on a run's split."""

import json
import subprocess
import sys

import numpy as np
import pytest

from jaxvision.tools import knn


def _loop_knn(train_x, train_y, query, k):
  """The definition, one query at a time: the most frequent label of the k nearest; a tie goes
  to the tied label met first in order of distance."""
  out = []
  for q in query:
    order = np.argsort(((train_x - q) ** 2).sum(1), kind="stable")[:k]
    labels = list(train_y[order])
    counts = {label: labels.count(label) for label in labels}
    out.append(next(label for label in labels if counts[label] == max(counts.values())))
  return np.array(out)


@pytest.mark.parametrize("k", [1, 3, 4, 7])
def test_predictions_match_the_definition(k):
  rng = np.random.default_rng(k)
  train_x = rng.normal(size=(300, 12))
  train_y = rng.integers(0, 5, 300)
  query = rng.normal(size=(90, 12))
  got = knn.predict(train_x, train_y, query, k, batch_size=32)  # several batches, one partial
  np.testing.assert_array_equal(got, _loop_knn(train_x, train_y, query, k))


def test_a_tie_goes_to_the_nearest_tied_label_and_a_majority_wins():
  train_x = np.array([[0.0], [1.0], [2.0], [10.0]])
  train_y = np.array([7, 3, 3, 5])
  # k=3 from 0.1: labels 7, 3, 3 -> the majority 3; k=2: 7 and 3 tie -> 7, the nearer
  assert knn.predict(train_x, train_y, np.array([[0.1]]), 3).tolist() == [3]
  assert knn.predict(train_x, train_y, np.array([[0.1]]), 2).tolist() == [7]
  with pytest.raises(ValueError, match="k=5 must be in"):
    knn.predict(train_x, train_y, np.array([[0.1]]), 5)


def test_the_tool_scores_a_runs_split_and_writes_a_record(tmp_path):
  """On the 8x8 digits run's split (no training needed: the tool reads the data config): the
  record holds the accuracy of the definition on the raw pixels, and the report's fields."""
  from experiments import digits_cnn
  from jaxvision import data as data_lib
  from tests.conftest import REPO

  run = tmp_path / "run"
  run.mkdir()
  config = digits_cnn.get_config()
  (run / "config.json").write_text(json.dumps(config.to_dict()))
  done = subprocess.run(
    [sys.executable, "-m", "jaxvision.tools.knn", f"--workdir={run}", "--k=3"],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert done.returncode == 0, done.stderr[-2000:]
  record = json.loads((run / "knn/k=3/results.json").read_text())
  raw = data_lib.load_dataset(
    data_lib.data_config(**{**config.data.to_dict(), "normalize": "none"})
  )
  train = raw.train.get(np.arange(len(raw.train)))
  eval_ = raw.eval.get(np.arange(len(raw.eval)))
  expected = _loop_knn(
    train["inputs"].reshape(len(train["inputs"]), -1).astype(np.float64),
    train["targets"],
    eval_["inputs"].reshape(len(eval_["inputs"]), -1).astype(np.float64),
    3,
  )
  accuracy = float((expected == eval_["targets"]).mean())
  assert record["final"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)
  assert accuracy > 0.95  # 3-NN on sklearn's digits is a strong baseline
  assert record["config"]["knn"] == {"k": 3, "pixels": "raw", "distance": "euclidean"}
  assert record["model"] == "3-nearest neighbours on raw pixels" and record["num_params"] == 0
  assert "3-NN on raw pixels" in done.stdout


def test_a_run_that_is_not_a_classifier_is_one_line(tmp_path):
  from experiments import mnist_dcgan
  from tests.conftest import REPO

  run = tmp_path / "gan"
  run.mkdir()
  (run / "config.json").write_text(json.dumps(mnist_dcgan.get_config().to_dict()))
  done = subprocess.run(
    [sys.executable, "-m", "jaxvision.tools.knn", f"--workdir={run}"],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert done.returncode == 1
  assert done.stderr.strip().splitlines() == [
    f"knn: error: {run} is a 'gan' run, not a classifier run"
  ]
