"""The one command that regenerates a results file: a tiny campaign (two folds of CNN A, a few
steps) run end to end through the CLI, resumed, and refused when the recipe has changed."""

import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys

import pytest

from jaxvision.data import idx
from jaxvision.tools import campaign, sweep

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = (
  "--config.num_train_steps=6",
  "--config.eval_every_steps=6",
  "--config.log_every_steps=3",
  "--config.checkpoint.every_steps=6",
  "--config.schedule.warmup_steps=2",
)

CAMPAIGN = """
from jaxvision.tools.campaign import Sweep

TITLE = "Tiny results"
NOTES = ["A note of the campaign's own."]

def get_campaign():
  return [
    Sweep("experiments/mnist_cnn.py:idx", axes={{"data.fold": [0, 1]}}, extra={extra!r},
          published="99.9% (nobody)"),
  ]
"""


def _mnist_dir() -> str:
  return idx.default_mnist_dir()


def _campaign(tmp_path, extra=TINY, *flags):
  path = tmp_path / "campaign.py"
  path.write_text(CAMPAIGN.format(extra=tuple(extra)))
  env = {**os.environ, idx.MNIST_DIR_ENV: _mnist_dir()}
  env.pop("XLA_FLAGS", None)  # one device per point, as a user runs it
  args = [
    sys.executable,
    "-m",
    "jaxvision.tools.campaign",
    f"--campaign={path}",
    f"--root={tmp_path / 'runs'}",
    f"--out={tmp_path / 'RESULTS.md'}",
    f"--plots={tmp_path / 'plots'}",
    *flags,
  ]
  return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_axes_parse_and_cross_the_experiment_sweep():
  assert sweep.parse_axis("data.fold=0:5") == ("data.fold", [0, 1, 2, 3, 4])
  assert sweep.parse_axis("config.seed=0,1") == ("seed", [0, 1])
  assert sweep.parse_axis("model.name=cnn_b") == ("model.name", ["cnn_b"])
  assert sweep.parse_axis("model.features=(32,),(32, 64)") == (
    "model.features",
    [(32,), (32, 64)],
  )
  assert sweep.parse_axis("optimizer.learning_rate=1e-3,3e-3")[1] == [1e-3, 3e-3]
  for bad in ("seed", "=1", "seed=", "seed=3:3", "seed=0:4:0"):
    with pytest.raises(sweep.SweepError):
      sweep.parse_axis(bad)
  base = [{"seed": 0, "data.fold": 4}, {"seed": 1, "data.fold": 4}]
  crossed = sweep.with_axes(base, [("data.fold", [0, 1])])
  assert crossed == [
    {"seed": 0, "data.fold": 0},
    {"seed": 0, "data.fold": 1},
    {"seed": 1, "data.fold": 0},
    {"seed": 1, "data.fold": 1},
  ]
  # An axis replacing the experiment's only varying key leaves one point per value.
  assert sweep.with_axes(base, [("seed", [5])]) == [{"data.fold": 4, "seed": 5}]


def test_an_experiment_without_sweep_takes_axes():
  points, _, resolved = sweep.load_points("experiments/digits_cnn.py", [("seed", [7, 8])])
  assert [p["seed"] for p in points] == [7, 8]
  assert [r["seed"] for r in resolved] == [7, 8]
  with pytest.raises(sweep.SweepError, match="unknown config key"):
    sweep.load_points("experiments/digits_cnn.py", [("no.such_key", [1])])


def test_a_bad_campaign_file_is_one_line(tmp_path):
  path = tmp_path / "c.py"
  path.write_text("def get_campaign():\n  return ['experiments/x.py']\n")
  with pytest.raises(campaign.CampaignError, match="list of Sweep"):
    campaign.load(str(path))
  done = subprocess.run(
    [sys.executable, "-m", "jaxvision.tools.campaign", f"--campaign={tmp_path / 'none.py'}"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert done.returncode == 2
  assert done.stderr.strip().count("\n") == 0 and "not found" in done.stderr


@pytest.mark.slow  # ~35 s of CLI runs; CI runs it in its slow phase
def test_the_campaign_runs_resumes_and_refuses_a_changed_recipe(tmp_path):
  if not os.path.isdir(_mnist_dir()):
    pytest.skip(f"offline MNIST not found at {_mnist_dir()}")
  first = _campaign(tmp_path)
  assert first.returncode == 0, first.stdout + first.stderr
  text = (tmp_path / "RESULTS.md").read_text()
  assert text.startswith("# Tiny results")
  row = next(line for line in text.splitlines() if line.startswith("| 1 |"))
  # One row over both folds: n = 2, a mean ± std, the data cell said once, the published number.
  assert "| 2 |" in row and "±" in row
  assert "mnist (idx): folds 0, 1 of a 5-fold CV of t10k (2,000 held out each)" in row
  assert "99.9% (nobody)" in row
  assert "Note: A note of the campaign's own." in text
  runs = tmp_path / "runs" / "mnist_cnn_idx"
  assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == ["data.fold=0", "data.fold=1"]
  accuracies = [
    json.loads((runs / f"data.fold={k}" / "results.json").read_text())["final"]["eval_accuracy"]
    for k in (0, 1)
  ]
  assert (
    f"{100 * statistics.fmean(accuracies):.2f} ± {100 * statistics.stdev(accuracies):.2f}%" in row
  )
  plots = list((tmp_path / "plots" / "mnist_cnn_idx").glob("*.png"))
  assert {p.name for p in plots} == {"eval_accuracy.png", "train_accuracy.png"}
  assert "plots/mnist_cnn_idx/eval_accuracy.png" in text

  # Rerun: nothing left to do, the same table.
  again = _campaign(tmp_path)
  assert again.returncode == 0, again.stdout + again.stderr
  assert "2 already finished, 0 to run" in again.stdout
  assert (tmp_path / "RESULTS.md").read_text() == text

  # A changed recipe: the finished points are stale, never reported as current.
  changed = [*TINY[:-1], "--config.schedule.warmup_steps=3"]
  stale = _campaign(tmp_path, changed, "--report_only")
  assert stale.returncode == 0, stale.stdout + stale.stderr  # --report_only runs nothing
  report = (tmp_path / "RESULTS.md").read_text()
  assert "| 1 |" not in report
  assert "2 of 2 points not finished or stale (data.fold=0, data.fold=1); no row yet" in report
  rerun = _campaign(tmp_path, changed)
  assert rerun.returncode == 1
  assert "STALE data.fold=0" in rerun.stdout and "schedule.warmup_steps: 2 -> 3" in rerun.stdout


FAKE_TOOL = """
import json, os, shlex, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
with open(os.path.join(args["workdir"], "results.json")) as f:
  seed = json.load(f)["seed"]
os.makedirs(args["record_dir"], exist_ok=True)
record = {
  "command": shlex.join(["python", "-m", "fake_tool", *sys.argv[1:]]),
  "config": {"seed": seed, "tool": {"mask": args["mask"], "scale": float(args["scale"])}},
  "seed": seed,
  "final": {"score": float(args["scale"]) * len(args["mask"]) + seed},
  "metrics": [{"name": "score", "format": "float", "better": "higher"}],
}
with open(os.path.join(args["record_dir"], "results.json"), "w") as f:
  json.dump(record, f)
"""


def test_an_analysis_runs_a_tool_on_each_finished_point_and_tabulates_its_records(
  tmp_path, monkeypatch
):
  (tmp_path / "fake_tool.py").write_text(FAKE_TOOL)
  monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
  points = []
  for seed in (0, 1, 2):
    workdir = tmp_path / "runs" / f"seed={seed}"
    workdir.mkdir(parents=True)
    if seed < 2:  # seed 2 has not finished: nothing to analyse
      (workdir / "results.json").write_text(json.dumps({"seed": seed, "final": {}}))
    points.append({"name": f"seed={seed}", "workdir": str(workdir)})
  plan = {"points": points}
  a = campaign.Analysis(
    "experiments/x.py", "fake_tool", "mask", ("ab", "abcd"), args=("--scale=2",), table="Fake"
  )
  assert campaign.run_analysis(a, plan) == 0
  record = tmp_path / "runs" / "seed=1" / "fake_tool" / "mask=abcd" / "results.json"
  assert json.loads(record.read_text())["final"] == {"score": 9.0}  # 2 * 4 + 1
  assert not (tmp_path / "runs" / "seed=2" / "fake_tool").exists()
  records, notes = campaign.analysis_records(a, plan)
  assert len(records) == 4 and notes == []
  from jaxvision.tools import report

  text = report.render(records, "T", "cmd", table_names={a.key: "Fake"})
  assert "## Fake" in text
  rows = [line for line in text.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
  # one row per mask, mean +- std over the two seeds: 4 + {0, 1} and 8 + {0, 1}
  assert "tool.mask=ab" in rows[0] and "4.500 ± 0.707 " in rows[0] and "| 2 |" in rows[0]
  assert "tool.mask=abcd" in rows[1] and "**8.500 ± 0.707**" in rows[1]
  # done records are skipped; other arguments redo them; a missing record is noted
  mtime = record.stat().st_mtime_ns
  assert campaign.run_analysis(a, plan) == 0 and record.stat().st_mtime_ns == mtime
  changed = dataclasses.replace(a, args=("--scale=3",))
  records, notes = campaign.analysis_records(changed, plan)
  assert records == [] and "4 records missing or stale" in notes[0]
  assert campaign.run_analysis(changed, plan) == 0
  assert json.loads(record.read_text())["final"] == {"score": 13.0}


def test_an_analysis_of_a_sweep_not_in_the_campaign_is_one_line(tmp_path):
  path = tmp_path / "campaign.py"
  path.write_text(
    "from jaxvision.tools.campaign import Analysis, Sweep\n"
    "def get_campaign():\n"
    "  return [Sweep('experiments/mnist_cnn.py:idx'),\n"
    "          Analysis('experiments/mnist_dcgan.py:idx', 'jaxvision.tools.inpaint', 'mask',\n"
    "                   ('center',))]\n"
  )
  with pytest.raises(campaign.CampaignError, match="no sweep of 'experiments/mnist_dcgan.py:idx'"):
    campaign.load(str(path))


def test_a_table_with_no_run_here_is_carried_from_the_report_it_replaces(tmp_path):
  """On a machine without a table's runs (a fresh clone), rewriting the report keeps that
  table's rows as measured, marked, instead of dropping them; without an earlier report the
  sweep is noted as not run."""
  import types

  from jaxvision.tools import report

  measured = {
    "command": "python -m jaxvision.main --config=experiments/mnist_cnn.py:idx",
    "config": {"seed": 0, "data": {"fold": 0}, "model": {"name": "cnn_a"}},
    "final": {"eval_accuracy": 0.987},
    "metrics": [{"name": "eval_accuracy", "label": "accuracy", "format": "percent"}],
    "workdir": "elsewhere/data.fold=0",
    "table": "Old",
  }
  out = tmp_path / "RESULTS.md"
  out.write_text(report.render([measured], "T", "cmd"))
  sweeps = [campaign.Sweep("experiments/mnist_cnn.py:idx", axes={"data.fold": [0]}, table="Old")]
  plans = campaign.plan(sweeps, str(tmp_path / "runs"))
  module = types.SimpleNamespace(TITLE="T", NOTES=["A note."])
  text = campaign.report(module, sweeps, plans, str(out), None, "cmd")
  assert "## Old" in text and "98.70%" in text and f"*{campaign.CARRIED}*" in text
  assert "no row yet" not in text and "Note: A note." in text
  assert out.read_text() == text
  out.unlink()
  text = campaign.report(module, sweeps, plans, str(out), None, "cmd")
  assert (
    "## Old" not in text and "1 of 1 points not finished or stale (data.fold=0); no row yet" in text
  )
