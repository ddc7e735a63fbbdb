"""Reports group runs into points with mean ± std over seeds, format what runs declare, mark the
best point, draw learning curves and write TensorBoard HParams."""

import json
import os
import subprocess
import sys

import pytest

from jaxvision.tools import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = [
  {"name": "eval_accuracy", "label": "accuracy", "format": "percent", "better": "higher"},
  {"name": "eval_loss", "label": "loss", "format": "float", "better": "lower"},
  {"name": "eval_count", "label": "count", "format": "int", "better": None},
]


def _record(seed, lr, final, *, fold=None, metrics=METRICS, commit="c" * 40, **extra):
  config = {"seed": seed, "optimizer": {"learning_rate": lr}, "model": {"name": "cnn_a"}}
  overrides = {"seed": repr(seed), "optimizer.learning_rate": repr(lr)}
  if fold is not None:
    config["data"] = {"fold": fold}
    overrides["data.fold"] = repr(fold)
  record = {
    "command": f"python -m jaxvision.main --config=experiments/toy.py --config.seed={seed}",
    "config_file": "experiments/toy.py",
    "overrides": overrides,
    "dataset": "toy",
    "num_params": 1234,
    "num_train_steps": 10,
    "seed": seed,
    "wall_time_s": 2.0 + seed,
    "final": final,
    "config": config,
    "backend": "cpu",
    "devices": 1,
    "jax_version": "0.10.2",
    "git_commit": commit,
    "machine": {"cpu": "Toy CPU", "cores": 2},
    **extra,
  }
  if metrics is not None:
    record["metrics"] = metrics
  return record


def _write(workdir, record, curves=None):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
    json.dump(record, f)
  if curves is not None:
    with open(os.path.join(workdir, "metrics.jsonl"), "w", encoding="utf-8") as f:
      f.writelines(json.dumps(c) + "\n" for c in curves)
  return str(workdir)


def _final(accuracy, loss, count=7):
  return {"eval_accuracy": accuracy, "eval_loss": loss, "eval_count": count}


@pytest.fixture
def sweep_dir(tmp_path):
  """A sweep folder: lr=0.001 over seeds 0-2, lr=0.003 over seeds 0-1, lr=0.01 seed 0 only,
  and one point that has not finished."""
  root = tmp_path / "runs" / "toy"
  points = [
    (0.001, 0, 0.90, 0.30),
    (0.001, 1, 0.92, 0.20),
    (0.001, 2, 0.94, 0.10),
    (0.003, 0, 0.95, 0.05),
    (0.003, 1, 0.97, 0.07),
    (0.01, 0, 0.50, 1.50),
  ]
  for lr, seed, accuracy, loss in points:
    _write(root / f"seed={seed},lr={lr}", _record(seed, lr, _final(accuracy, loss)))
  (root / "seed=1,lr=0.01").mkdir()
  (root / "seed=1,lr=0.01" / "log.txt").write_text("killed\n")
  return str(root)


def test_points_show_mean_and_sample_std_over_seeds(sweep_dir):
  runs, notes = report.load_runs([sweep_dir])
  assert len(runs) == 6
  text = report.render(runs, "T", "cmd", notes)
  lines = text.splitlines()
  rows = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
  assert len(rows) == 3
  # lr=0.001: accuracy 90, 92, 94 -> 92.00 ± 2.00 (ddof=1); loss 0.3, 0.2, 0.1 -> 0.2000 ± 0.1000
  assert rows[0].startswith(
    "| 1 | optimizer.learning_rate=0.001 | 3 | 92.00 ± 2.00% | 0.2000 ± 0.1000 | 7.0 ± 0.0 |"
  )
  # lr=0.003: 95, 97 -> 96.00 ± 1.41 (the best accuracy: bold); loss 0.05, 0.07 -> 0.06 ± 0.01414
  assert rows[1].startswith(
    "| 2 | optimizer.learning_rate=0.003 | 2 | **96.00 ± 1.41%** | 0.06000 ± 0.01414 | 7.0 ± 0.0 |"
  )
  # One run: no std.
  assert rows[2].startswith("| 3 | optimizer.learning_rate=0.01 | 1 | 50.00% | 1.500 | 7 |")
  assert "| Toy CPU, 2 cores | cpu x1 | 0.10.2 | cccccccccc |" in rows[0]
  assert "| 3.0 s |" in rows[0]  # the mean wall time of seeds 0-2 (2, 3, 4 s)
  assert "Best accuracy (higher is better): row 2, optimizer.learning_rate=0.003." in text
  assert (
    "1. `python -m jaxvision.main --config=experiments/toy.py --config.seed=0` over seed = 0, 1, 2"
    in text
  )
  assert "1 of 7 points not finished (seed=1,lr=0.01)" in text


def test_lower_is_better_and_single_point_has_no_best(tmp_path):
  lower_first = [{**METRICS[1]}, METRICS[0]]
  a = _write(tmp_path / "a", _record(0, 0.1, _final(0.9, 0.4), metrics=lower_first))
  b = _write(tmp_path / "b", _record(0, 0.2, _final(0.8, 0.3), metrics=lower_first))
  groups = report.group_runs(report.load_runs([a, b])[0])
  best, spec = report.best_group(groups)
  assert (best, spec["name"]) == (1, "eval_loss")  # 0.3 < 0.4, although its accuracy is lower
  assert report.best_group(groups[:1]) == (None, None)
  text = report.render(report.load_runs([a])[0], "T", "cmd")
  assert "**" not in text and "Best" not in text


def test_replicate_axes_include_folds_unless_told_otherwise(tmp_path):
  runs = []
  for seed in (0, 1):
    for fold in (0, 1):
      acc = 0.80 + 0.02 * seed + 0.01 * fold
      path = _write(tmp_path / f"s{seed}f{fold}", _record(seed, 0.1, _final(acc, 0.1), fold=fold))
      runs += report.load_runs([path])[0]
  (group,) = report.group_runs(runs)
  assert len(group.runs) == 4
  assert report.metric_cell(group, METRICS[0])[0] == "81.50 ± 1.29%"
  by_fold = report.group_runs(runs, over=("seed",))
  assert [g.label for g in by_fold] == ["data.fold=0", "data.fold=1"]
  assert [report.metric_cell(g, METRICS[0])[0] for g in by_fold] == [
    "81.00 ± 1.41%",
    "82.00 ± 1.41%",
  ]


def test_keys_a_run_names_as_replicates_vary_within_one_point(tmp_path):
  """A teacher run per fold (a campaign sweep's `replicates`) does not split the folds into
  points; without the note each fold is its own point."""
  runs = []
  for fold in (0, 1, 2):
    record = _record(0, 0.1, _final(0.9 + 0.01 * fold, 0.1), fold=fold)
    record["config"]["distill"] = {"teacher": f"runs/teacher/data.fold={fold}"}
    runs += report.load_runs([_write(tmp_path / str(fold), record)])[0]
  assert len(report.group_runs(runs)) == 3
  (group,) = report.group_runs([{**r, "replicates": ["distill.teacher"]} for r in runs])
  assert len(group.runs) == 3
  assert report.metric_cell(group, METRICS[0])[0] == "91.00 ± 1.00%"


def test_a_placeholder_left_at_its_default_is_not_a_setting_turned_off(tmp_path):
  """A model attribute at None takes the module's default (batch norm on): False is another
  point; a key an older run lacks still groups with False where no run has it at None."""
  records = [_record(0, 0.1, _final(0.9, 0.1)) for _ in range(4)]
  records[0]["config"]["model"]["batch_norm"] = None
  records[1]["config"]["model"]["batch_norm"] = False
  records[2]["config"]["qat"] = False  # records[3] predates the key
  runs = [report.load_runs([_write(tmp_path / str(i), r)])[0][0] for i, r in enumerate(records)]
  assert len(report.group_runs(runs[:2])) == 2
  assert len(report.group_runs(runs[2:])) == 1


def test_an_analysis_record_is_labelled_by_the_experiment_it_analysed(tmp_path):
  records = [
    {**_record(0, 0.1, _final(0.9, 0.1)), "experiment": f"experiments/toy.py:{variant}"}
    for variant in ("a", "b")
  ]
  records[1]["config"]["model"]["features"] = [16]  # a variant changes the config in its file
  paths = [_write(tmp_path / str(i) / "calibration=512", r) for i, r in enumerate(records)]
  runs = [report.load_runs([path])[0][0] for path in paths]
  for run in runs:  # a tool's command names no --config
    run["command"] = "python -m jaxvision.tools.compress --workdir=w"
  labels = [g.label for g in report.group_runs(runs)]
  assert labels == ["`experiments/toy.py:a`", "`experiments/toy.py:b`"]


def test_runs_differing_only_in_bookkeeping_keys_are_one_point(tmp_path):
  """A checkpoint cadence, a check added later (absent in older runs) or the data folder do not
  change a run's numbers: they never split a point; a learning rate does."""
  records = [_record(seed, 0.1, _final(0.9 + 0.01 * seed, 0.1)) for seed in (0, 1, 2)]
  records[1]["config"]["checkpoint"] = {"every_steps": 5, "max_norm_growth": 1000.0}
  records[2]["config"]["data"] = {"data_dir": "/elsewhere"}
  other = _record(0, 0.2, _final(0.5, 0.1))
  paths = [_write(tmp_path / str(i), r) for i, r in enumerate([*records, other])]
  groups = report.group_runs(report.load_runs(paths)[0])
  assert [len(g.runs) for g in groups] == [3, 1]
  assert [g.label for g in groups] == ["optimizer.learning_rate=0.1", "optimizer.learning_rate=0.2"]


def test_formats():
  assert report.format_metric(0.98765, None, "percent") == "98.77%"
  assert report.format_metric(0.5, 0.0123, "percent") == "50.00 ± 1.23%"
  assert report.format_metric(1.6950587, None, "float") == "1.695"
  assert report.format_metric(95.43, 2.5, "float") == "95.43 ± 2.50"
  assert report.format_metric(501.7, None, "float") == "501.7"
  assert report.format_metric(0.0, None, "float") == "0.0000"
  assert report.format_metric(12.0, None, "int") == "12"
  assert report.format_metric(12.5, 0.7071, "int") == "12.5 ± 0.7"
  assert report.mean_std([1.0]) == (1.0, None)
  assert report.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)


def test_results_without_declared_metrics_show_final_as_floats(tmp_path):
  old = _record(3, 0.1, {"eval_accuracy": 0.9876, "eval_loss": 0.05}, metrics=None)
  old["git_commit"] = "a" * 40 + "-dirty"
  del old["machine"]
  text = report.render(report.load_runs([_write(tmp_path / "old", old)])[0], "T", "cmd")
  assert "| eval_accuracy | eval_loss |" in text
  assert "| 0.9876 | 0.05000 |" in text
  assert "aaaaaaaaaa-dirty" in text  # shortened, but a dirty tree stays visible
  assert "| ? | cpu x1 |" in text  # no machine recorded: says so


def test_the_runs_of_a_members_run_are_points_of_its_sweep(tmp_path):
  sweep = tmp_path / "sweep"
  for seed, accuracy in ((0, 0.90), (1, 0.94)):
    _write(
      sweep / "members=seed=0,1" / f"member=seed={seed}", _record(seed, 0.1, _final(accuracy, 0.1))
    )
  (sweep / "members=seed=0,1" / "member=seed=2").mkdir()
  (sweep / "members=seed=0,1" / "member=seed=2" / "config.json").write_text("{}")
  runs, notes = report.load_runs([str(sweep)])
  assert [r["seed"] for r in runs] == [0, 1]
  assert "1 of 3 points not finished (members=seed=0,1/member=seed=2)" in notes[0]
  (group,) = report.group_runs(runs)
  assert report.metric_cell(group, METRICS[0])[0] == "92.00 ± 2.83%"
  frozen = {
    **_record(2, 0.1, {}),
    "status": "frozen",
    "frozen": {"step": 7, "reason": "non-finite x"},
  }
  _write(sweep / "members=seed=0,1" / "member=seed=2", frozen)
  runs, notes = report.load_runs([str(sweep)])
  assert len(runs) == 3 and "frozen at step 7 (non-finite x)" in notes[-1]
  (group,) = report.group_runs(runs)
  assert report.metric_cell(group, METRICS[0])[0] == "92.00 ± 2.83% (n=2)"  # says so


def test_unfinished_run_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="has the run"):
    report.load_results(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="has the run or sweep finished"):
    report.load_runs([str(tmp_path)])


def test_read_curves_keeps_the_last_entry_per_step(tmp_path):
  path = tmp_path / "metrics.jsonl"
  lines = [
    {"step": 5, "train_loss": 2.0},
    {"step": 10, "train_loss": 1.5},
    {"step": 10, "eval_loss": 1.4, "eval_accuracy": 0.5},
    # Resumed from the checkpoint at step 5: steps 10 again.
    {"step": 10, "train_loss": 1.25},
    {"step": 15, "train_loss": 1.0},
  ]
  path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 20, "train_lo')
  curves = report.read_curves(str(path))
  assert curves["train_loss"] == {5: 2.0, 10: 1.25, 15: 1.0}  # the cut last line is skipped
  assert curves["eval_loss"] == {10: 1.4} and curves["eval_accuracy"] == {10: 0.5}
  assert report.read_curves(str(tmp_path / "missing.jsonl")) == {}
  steps, mean, std = report.band([{1: 1.0, 2: 2.0}, {1: 3.0}])
  assert (steps, mean, std) == ([1, 2], [2.0, 2.0], [pytest.approx(2**0.5), 0.0])


def _png_ok(path):
  with open(path, "rb") as f:
    head = f.read(8)
  return head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 5000


def test_cli_writes_report_plots_and_hparams(tmp_path):
  root = tmp_path / "runs" / "toy"
  for lr, accs in ((0.001, (0.5, 0.7)), (0.003, (0.8, 0.9))):
    for seed, acc in enumerate(accs):
      curves = [
        {"step": s, "train_loss": 2.0 / s + seed, "train_accuracy": acc * s / 20} for s in (5, 10)
      ]
      curves += [{"step": s, "eval_loss": 1.0 / s, "eval_accuracy": acc * s / 20} for s in (10, 20)]
      curves += [{"step": s, "train_loss": 1.0 / s, "train_accuracy": acc} for s in (15, 20)]
      _write(root / f"lr={lr},seed={seed}", _record(seed, lr, _final(acc, 0.2)), curves)
  out = tmp_path / "docs" / "RESULTS.md"
  out.parent.mkdir()
  plots = tmp_path / "docs" / "plots"
  command = [sys.executable, "-m", "jaxvision.tools.report", f"--out={out}", f"--plots={plots}"]
  done = subprocess.run(
    [*command, "--tb_hparams", "--title=Toy", str(root)],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert done.returncode == 0, done.stderr
  text = out.read_text()
  assert "**85.00 ± 7.07%**" in text and "60.00 ± 14.14%" in text
  names = ["train_accuracy", "eval_accuracy", "train_loss", "eval_loss", "train_count"]
  for name in names[:4]:
    assert _png_ok(plots / f"{name}.png"), name
    assert f"![{name}](plots/{name}.png)" in text  # linked relative to the report
  assert not (plots / "train_count.png").exists()  # declared, but never logged
  event_files = list(root.glob("*/tb/hparams/events.out.tfevents.*"))
  assert len(event_files) == 4
  assert not list(root.glob("*/tb/events.out.tfevents.*"))  # nothing beside a run's own events


def test_write_hparams_reads_back_in_tensorboard(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.plugins.hparams import plugin_data_pb2

  record = _record(1, 0.003, _final(0.93, 0.25))
  record["overrides"]["model.features"] = "(32, 64)"
  hparams, metrics = report.run_hparams(record)
  assert hparams == {"seed": 1, "optimizer.learning_rate": 0.003, "model.features": "(32, 64)"}
  logdir = tmp_path / "run" / "tb" / "hparams"
  report.write_hparams(str(logdir), hparams, metrics)
  report.write_hparams(str(logdir), hparams, metrics)  # rewriting leaves one session
  assert len(list(logdir.glob("events.out.tfevents.*"))) == 1
  acc = event_accumulator.EventAccumulator(str(logdir))
  acc.Reload()
  content = acc.PluginTagToContent("hparams")
  start = plugin_data_pb2.HParamsPluginData.FromString(
    content["_hparams_/session_start_info"]
  ).session_start_info
  assert start.hparams["seed"].number_value == 1
  assert start.hparams["optimizer.learning_rate"].number_value == pytest.approx(0.003)
  assert start.hparams["model.features"].string_value == "(32, 64)"
  experiment = plugin_data_pb2.HParamsPluginData.FromString(
    content["_hparams_/experiment"]
  ).experiment
  assert {m.name.tag for m in experiment.metric_infos} == {
    "eval_accuracy",
    "eval_loss",
    "eval_count",
  }
  assert acc.Scalars("eval_accuracy")[0].value == pytest.approx(0.93)


def test_named_sweep_points_are_labelled_by_their_names(tmp_path):
  sweep = tmp_path / "ablation"
  _write(sweep / "plain", _record(0, 0.001, _final(0.90, 0.3)))
  _write(sweep / "faster", _record(0, 0.003, _final(0.92, 0.2)))
  runs, _ = report.load_runs([str(sweep)])
  assert sorted(g.label for g in report.group_runs(runs)) == ["faster", "plain"]
  _write(tmp_path / "seeds" / "seed=0", _record(0, 0.001, _final(0.9, 0.3)))
  _write(tmp_path / "seeds" / "seed=1", _record(1, 0.003, _final(0.9, 0.3)))
  runs, _ = report.load_runs([str(tmp_path / "seeds")])
  assert "optimizer.learning_rate=" in report.group_runs(runs)[0].label  # k=v names: the keys


def test_tables_without_runs_here_are_carried_from_the_previous_report():
  """A report rewritten where only one table's runs exist keeps the others as they were, in
  their places, marked, with every row renumbered and each "best" line following its row."""

  def runs(table, lrs, accuracy, **extra):
    return [
      {**_record(0, lr, _final(accuracy + i / 100, 0.1)), "table": table, "workdir": f"{table}{i}"}
      | extra
      for i, lr in enumerate(lrs)
    ]

  gan = {"classifier": "cnn_a from runs/x", "metrics_caveat": "IS on our features"}
  before = [*runs("A", (1, 2), 0.5), *runs("B", (3,), 0.6), *runs("C", (4, 5), 0.7, **gan)]
  previous = report.render(before, "T", "cmd", ["old note"])
  now = report.render(runs("B", (3, 6), 0.9), "T", "cmd", ["new note"])
  text, carried = report.carry_tables(now, previous, {"A", "C", "D"}, "Carried.")
  assert carried == ["A", "C"]
  headings = [line for line in text.splitlines() if line.startswith("## ")]
  assert headings == ["## A", "## B", "## C"]
  rows = [line.split(" | ")[:2] for line in text.splitlines() if line[:3] == "| " + line[2:3]]
  rows = [r for r in rows if r[0][2:].isdigit()]
  assert [r[0] for r in rows] == ["| 1", "| 2", "| 3", "| 4", "| 5", "| 6"]
  section = lambda name: text.split(f"## {name}\n")[1].split("\n## ")[0]
  assert section("A").startswith("\n*Carried.*\n") and "Carried" not in section("B")
  assert "91.00%" in section("B") and "60.00%" not in section("B")  # B's new rows
  assert "row 2, A1." in section("A")  # 51% beats 50%
  assert "row 6, C1." in section("C")  # was row 5
  assert "4. `python -m jaxvision.main" in section("B") and "6. `python" in section("C")
  assert "Note: new note" in text and "old note" not in text
  assert "Metrics: IS on our features." in text
  assert "Features of C0: cnn_a from runs/x." in text
  assert text.endswith("Note: new note\n")
  # a campaign's order of tables places a new table among the carried ones
  with_d = report.render([*runs("B", (3,), 0.9), *runs("D", (7,), 0.8)], "T", "cmd")
  text, _ = report.carry_tables(with_d, previous, {"A", "C"}, "Carried.", ["A", "D", "B", "C"])
  headings = [line for line in text.splitlines() if line.startswith("## ")]
  assert headings == ["## A", "## D", "## B", "## C"]
  part = lambda name: text.split(f"## {name}\n")[1].split("\n## ")[0]
  assert "\n| 3 | " in part("D") and "\n| 4 | " in part("B")
  # nothing to carry: unchanged
  assert report.carry_tables(now, previous, {"B"}, "Carried.") == (now, [])
  assert report.carry_tables(previous, previous, {"A", "B", "C"}, "x") == (previous, [])
