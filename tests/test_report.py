"""Result tables name the config, command, seed and commit of each run, and never hide dirt."""

import json

import pytest

from jaxvision import report


def _results(tmp_path, name, final, commit):
  workdir = tmp_path / name
  workdir.mkdir()
  record = {
    "config_file": f"experiments/{name}.py",
    "command": f"python -m jaxvision.main --x={name}",
    "dataset": "toy",
    "num_params": 1234,
    "num_train_steps": 10,
    "seed": 3,
    "wall_time_s": 1.5,
    "final": final,
    "config": {"model": {"name": "cnn_a"}},
    "backend": "cpu",
    "devices": 1,
    "jax_version": "0",
    "git_commit": commit,
  }
  (workdir / "results.json").write_text(json.dumps(record))
  return str(workdir)


def test_render_classifier_and_gan_rows(tmp_path):
  clf = _results(tmp_path, "clf", {"eval_accuracy": 0.9876, "eval_loss": 0.05}, "a" * 40 + "-dirty")
  gan_final = {
    "eval_inception_score": 6.3,
    "eval_real_inception_score": 9.7,
    "eval_fid": 95.4,
    "eval_real_fid": 20.8,
    "eval_kid": 501.7,
    "eval_real_kid": 162.5,
    "eval_min_class_share": 0.034,
    "eval_max_class_share": 0.194,
  }
  gan = _results(tmp_path, "gan", gan_final, "b" * 40)
  text = report.render([report.load_results(w) for w in (clf, gan)], "T", "cmd", ["a note"])
  assert "| 1 | `experiments/clf.py` |" in text and "98.76%" in text
  assert "aaaaaaaaaa-dirty" in text  # shortened, but a dirty tree stays visible
  assert "6.30 (9.70)" in text and "95.4 (20.8)" in text and "3.4% / 19.4%" in text
  assert "2. `python -m jaxvision.main --x=gan`" in text and "Note: a note" in text


def test_unfinished_run_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="has the run"):
    report.load_results(str(tmp_path))
