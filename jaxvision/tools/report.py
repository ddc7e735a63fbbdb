"""Result tables from runs and sweeps: `python -m jaxvision.tools.report --out FILE PATH...`.

Each PATH is a run's workdir (holding its `results.json`) or a sweep's folder (`runs/<experiment>`,
written by `python -m jaxvision.tools.sweep`), which stands for every point workdir in it that has
finished. Runs that differ only in the replicate axes (`--over`, default `seed,data.fold`) are one
point: its row shows, for every metric the runs declare (results.json's `metrics`: name, label,
format percent|float|int, better higher|lower|null), the mean +- sample standard deviation
(ddof=1) over the replicates and their number n, and the best point of each table for the first
declared metric with a `better` is in bold. Each row names the experiment, the machine, backend
and devices, jax version and commit(s); an example command per point (with the replicate values
it ran over) follows each table. The whole file is regenerated: edit the runs, not the table.

  python -m jaxvision.tools.report runs/digits_cnn                      # a sweep, to stdout
  python -m jaxvision.tools.report --out RESULTS.md --plots=plots runs/digits_cnn runs/mnist1d_cnn
  python -m jaxvision.tools.report --tb_hparams runs/digits_cnn         # + TensorBoard HParams

`--plots=DIR` draws each metric's learning curve from the runs' `metrics.jsonl` (DIR/<metric>.png,
one line per point, a band of +- one std over its replicates) and links the images. A
`results.json` without `metrics` (older runs) shows every key of `final` as a float.
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import json
import math
import os
import re
import shlex
import statistics
import sys
import tempfile

from jaxvision.workdir import is_bookkeeping

DEFAULT_OVER = ("seed", "data.fold")
FORMATS = ("percent", "float", "int")


def load_results(workdir: str) -> dict:
  """A run's `results.json`.

  Args:
    workdir: the run's workdir.

  Returns:
    The record as written by the trainer.

  Raises:
    FileNotFoundError: the run has not finished (or this is not a workdir).
  """
  path = os.path.join(workdir, "results.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: has the run in {workdir} finished?")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def expand_paths(paths) -> tuple[list[str], list[str]]:
  """Run workdirs from workdirs and sweep folders.

  Args:
    paths: workdirs (with results.json) and sweep folders (whose subfolders are workdirs).

  Returns:
    (the finished workdirs, in the order given, a sweep's sorted by name; notes on the points of
    a sweep that have not finished).

  Raises:
    FileNotFoundError: a path that is neither a finished run nor a folder holding one.
  """
  workdirs, notes = [], []
  for path in paths:
    if os.path.isfile(os.path.join(path, "results.json")):
      workdirs.append(path)
      continue
    subdirs = sorted(d for d in glob.glob(os.path.join(path, "*")) if os.path.isdir(d))
    # A members run (`config.members`) is a folder of runs: `member=NAME/`, each a point.
    subdirs = [m for d in subdirs for m in (_member_dirs(d) or [d])]
    finished = [d for d in subdirs if os.path.isfile(os.path.join(d, "results.json"))]
    if not finished:
      raise FileNotFoundError(
        f"{os.path.join(path, 'results.json')} not found, nor any <point>/results.json under "
        f"{path}: has the run or sweep finished?"
      )
    workdirs += finished
    unfinished = [os.path.relpath(d, path) for d in subdirs if d not in finished and _is_workdir(d)]
    if unfinished:
      notes.append(
        f"{path}: {len(unfinished)} of {len(unfinished) + len(finished)} points not finished"
        f" ({', '.join(unfinished)}); rerun the sweep to finish them."
      )
  return workdirs, notes


def _member_dirs(path: str) -> list[str]:
  return sorted(d for d in glob.glob(os.path.join(path, "member=*")) if os.path.isdir(d))


def _is_workdir(path: str) -> bool:
  return any(
    os.path.exists(os.path.join(path, n)) for n in ("log.txt", "config.json", "checkpoints")
  )


def load_runs(paths) -> tuple[list[dict], list[str]]:
  """Every run under `paths` (see `expand_paths`), each its results.json with its `workdir`;
  returns (runs, notes)."""
  workdirs, notes = expand_paths(paths)
  seen, runs = set(), []
  for workdir in workdirs:
    if os.path.realpath(workdir) in seen:  # a run named twice (as itself and in its sweep)
      continue
    seen.add(os.path.realpath(workdir))
    record = load_results(workdir)
    if record.get("status") == "frozen":  # a member that diverged (`train.members`)
      frozen = record.get("frozen", {})
      notes.append(
        f"{workdir}: frozen at step {frozen.get('step')} ({frozen.get('reason')}); it has no "
        "final metrics, so the means of its row leave it out"
      )
    runs.append({**record, "workdir": workdir})
  return runs, notes


def declared_metrics(run: dict) -> list[dict]:
  """The metrics a run declares, each {"name", "label", "format", "better"}; for a results.json
  without declarations, every key of `final`, labelled by name and formatted as a float."""
  specs = run.get("metrics")
  if not specs:
    return [
      {"name": k, "label": k, "format": "float", "better": None} for k in run.get("final", {})
    ]
  out = []
  for spec in specs:
    fmt = spec.get("format", "float")
    out.append(
      {
        "name": spec["name"],
        "label": spec.get("label") or spec["name"],
        "format": fmt if fmt in FORMATS else "float",
        "better": spec.get("better") if spec.get("better") in ("higher", "lower") else None,
      }
    )
  return out


def flatten(tree: dict, prefix: str = "") -> dict:
  """{"a": {"b": 1}} -> {"a.b": 1}; lists become tuples (hashable, and what configs hold)."""
  out = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(flatten(value, f"{path}."))
    else:
      out[path] = _hashable(value)
  return out


def _hashable(value):
  if isinstance(value, (list, tuple)):
    return tuple(_hashable(v) for v in value)
  if isinstance(value, dict):
    return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
  return value


def parse_override(text):
  """An override as recorded in results.json (its repr, e.g. "0.003", "'adam'", "(32, 64)")."""
  try:
    return _hashable(ast.literal_eval(text)) if isinstance(text, str) else _hashable(text)
  except (ValueError, SyntaxError):
    return text


def run_settings(run: dict) -> dict:
  """What defines a run: its resolved config, flattened (dotted keys), else its overrides."""
  if isinstance(run.get("config"), dict):
    return flatten(run["config"])
  return {k: parse_override(v) for k, v in (run.get("overrides") or {}).items()}


def replicate_values(run: dict, over) -> dict:
  """The run's values on the replicate axes that it has (`seed` also from results.json's own)."""
  settings = run_settings(run)
  overrides = {k: parse_override(v) for k, v in (run.get("overrides") or {}).items()}
  out = {}
  for axis in over:
    for source in (overrides, settings, {"seed": run.get("seed")} if axis == "seed" else {}):
      if source.get(axis) is not None:
        out[axis] = source[axis]
        break
  return out


def experiment_of(run: dict) -> str:
  """`experiments/X.py[:ARG]`: the run's `experiment` (an analysis record: its run's), else from
  its command, else its config file."""
  if run.get("experiment"):
    return run["experiment"]
  try:
    for arg in shlex.split(run.get("command", "")):
      if arg.startswith("--config="):
        return arg.removeprefix("--config=")
  except ValueError:
    pass
  return run.get("config_file") or "?"


@dataclasses.dataclass
class Group:
  """One point: runs that differ only in the replicate axes."""

  config_file: str
  settings: dict  # the runs' shared settings, replicate axes removed
  runs: list
  label: str = ""

  @property
  def metrics(self) -> list[dict]:
    return declared_metrics(self.runs[0])


def group_runs(runs, over=DEFAULT_OVER) -> list[Group]:
  """Runs grouped into points, in order of first appearance; each group's runs sorted by their
  replicate values, and labelled by what varies between the points of its experiment.

  Args:
    runs: run records (`load_runs`); a record's `replicates` (e.g. set by a campaign) names
      more keys that count as replicate axes for it, such as a teacher run per fold.
    over: the replicate axes (dotted config keys).

  Returns:
    The groups.
  """
  groups: dict = {}
  every = [run_settings(run) for run in runs]
  # Keys some run leaves at None (a model attribute's placeholder: the module's default, which
  # may be True): there False is a setting of its own, not "off".
  placeholders = frozenset(k for settings in every for k, v in settings.items() if v is None)
  for run, all_settings in zip(runs, every, strict=True):
    replicate = (*over, *run.get("replicates", ()))
    settings = {
      k: v for k, v in all_settings.items() if k not in replicate and not is_bookkeeping(k)
    }
    config_file = run.get("config_file") or experiment_of(run).partition(":")[0]
    on = [(k, v) for k, v in settings.items() if not _off(v, k in placeholders)]
    key = (config_file, tuple(sorted(on, key=lambda kv: kv[0])))
    group = groups.setdefault(key, Group(config_file, settings, []))
    group.runs.append(run)
  out = list(groups.values())
  for group in out:
    group.runs.sort(key=lambda r: tuple(str(v) for v in replicate_values(r, over).values()))
  # Labelled among the points of one experiment file in one table (a campaign may give the
  # sweeps of one file tables of their own).
  for where in dict.fromkeys((g.config_file, g.runs[0].get("table")) for g in out):
    _label([g for g in out if (g.config_file, g.runs[0].get("table")) == where])
  return out


def _off(value, placeholder: bool = False) -> bool:
  """An option that is off (None, 0, False, "", empty): the same as a key an older run's config
  lacks, as `workdir.config_changes` has it, so runs from before an option existed group with
  runs that leave it off. For a `placeholder` key (None: the default) only None is."""
  return value is None if placeholder else not value


def _label(groups: list[Group]) -> None:
  """Names each point by what differs between the points of one config file, or by its name in
  its sweep (the `_name` of an experiment's sweep point: its workdir's name) where every point
  has one."""
  names = [{os.path.basename(os.path.normpath(r["workdir"])) for r in g.runs} for g in groups]
  if len(groups) > 1 and all(len(n) == 1 and "=" not in next(iter(n)) for n in names):
    for group, name in zip(groups, names, strict=True):
      group.label = next(iter(name))
    return
  keys = sorted({k for g in groups for k in g.settings})
  placeholders = {k for g in groups for k, v in g.settings.items() if v is None}
  value = lambda g, k: (
    None if _off(g.settings.get(k), k in placeholders) else _hashable(g.settings.get(k))
  )
  varied = [k for k in keys if len({value(g, k) for g in groups}) > 1]
  experiments = [experiment_of(g.runs[0]) for g in groups]
  if len(set(experiments)) > 1:
    # Variants (`file.py:ARG`) differ in many keys: the variant's name says it, plus whatever
    # the command lines changed.
    overridden = {k for g in groups for r in g.runs for k in (r.get("overrides") or {})}
    varied = [k for k in varied if k in overridden]
  for group, experiment in zip(groups, experiments, strict=True):
    parts = [f"{k}={_show(group.settings.get(k, 'off'))}" for k in varied]
    if len(set(experiments)) > 1:
      parts.insert(0, f"`{experiment}`")
    group.label = ", ".join(parts) or f"`{experiment}`"


def _show(value) -> str:
  if isinstance(value, tuple):
    return "(" + ", ".join(_show(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  return repr(value) if isinstance(value, float) else str(value)


def mean_std(values) -> tuple[float, float | None]:
  """(mean, sample standard deviation with ddof=1), the std None for a single value."""
  values = [float(v) for v in values]
  mean = statistics.fmean(values)
  return mean, (statistics.stdev(values) if len(values) > 1 else None)


def format_metric(mean: float, std: float | None, fmt: str) -> str:
  """ "92.00 ± 2.00%" (percent), "0.1234 ± 0.0050" (float: 4 significant digits in the mean,
  the std to the same decimals), "12.0 ± 1.0" (int; a single value: "12"); no std when None."""
  if not math.isfinite(mean):
    return str(mean)
  if fmt == "percent":
    text = f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")
    return text + "%"
  if fmt == "int":
    if std is None:
      return f"{round(mean):d}"
    return f"{mean:.1f} ± {std:.1f}"
  decimals = 4 if mean == 0 else min(6, max(0, 3 - math.floor(math.log10(abs(mean)))))
  return f"{mean:.{decimals}f}" + ("" if std is None else f" ± {std:.{decimals}f}")


def metric_cell(group: Group, spec: dict) -> tuple[str, float | None]:
  """The formatted mean ± std of one metric over a group's runs, and the mean (None: absent)."""
  values = [r["final"][spec["name"]] for r in group.runs if spec["name"] in r.get("final", {})]
  values = [v for v in values if isinstance(v, (int, float))]
  if not values:
    return "—", None
  mean, std = mean_std(values)
  text = format_metric(mean, std, spec["format"])
  if len(values) < len(group.runs):  # some runs lack it: say over how many
    text += f" (n={len(values)})"
  return text, mean


def best_group(groups: list[Group]) -> tuple[int | None, dict | None]:
  """The index of the best point for the first declared metric with a `better`, and that metric;
  (None, None) with fewer than two points or no such metric."""
  if len(groups) < 2:
    return None, None
  spec = next((s for s in groups[0].metrics if s["better"]), None)
  if spec is None:
    return None, None
  means = [metric_cell(g, spec)[1] for g in groups]
  scored = [(m, i) for i, m in enumerate(means) if m is not None and math.isfinite(m)]
  if not scored:
    return None, None
  pick = max if spec["better"] == "higher" else min
  return pick(scored, key=lambda mi: (mi[0], -mi[1]))[1], spec


def _unique(values) -> str:
  return ", ".join(dict.fromkeys(str(v) for v in values if v not in (None, ""))) or "?"


def _commit(full: str | None) -> str:
  if not full:
    return "?"
  return full[:10] + ("-dirty" if full.endswith("-dirty") else "")  # never hide a dirty tree


def _machine(run: dict) -> str:
  machine = run.get("machine")
  if isinstance(machine, dict):
    cpu = machine.get("cpu") or "?"
    return f"{cpu}, {machine['cores']} cores" if machine.get("cores") else cpu
  return str(machine) if machine else "?"


def _backend(run: dict) -> str:
  text = f"{run.get('backend', '?')} x{run.get('devices', '?')}"
  if run.get("processes", 1) not in (1, None):
    text += f" ({run['processes']} processes)"
  return text


def _params(run: dict) -> str:
  """The "name (parameters)" cell; a tool's record may name its model in words (a k-NN's)."""
  model = (run.get("config") or {}).get("model", {})
  name = model.get("name") if isinstance(model, dict) else None
  if isinstance(run.get("model"), str):  # a run's "model" is its resolved attributes
    name = run["model"]
  count = run.get("num_params")
  count = f"{count:,}" if isinstance(count, int) else "?"
  return f"{name} ({count})" if name else count


def _over_text(group: Group, over) -> str:
  values = {}
  for run in group.runs:
    for axis, value in replicate_values(run, over).items():
      values.setdefault(axis, []).append(_show(value))
  varied = {axis: vs for axis, vs in values.items() if len(set(vs)) > 1}  # a constant: no axis
  return "; ".join(f"{axis} = {', '.join(vs)}" for axis, vs in (varied or values).items())


def _data_cell(runs: list[dict]) -> str:
  """The data column of a point: its runs' description, or for runs over several folds of one
  cross-validated split, e.g. "mnist (idx): 5-fold CV of t10k (2,000 held out each)"."""
  datas = [(r.get("config") or {}).get("data") or {} for r in runs]
  folds = {d.get("fold") for d in datas}
  num_folds = {d.get("num_folds") for d in datas}
  if len(folds) < 2 or len(num_folds) != 1 or not next(iter(num_folds)):
    return _unique(r.get("dataset") for r in runs)
  k = next(iter(num_folds))
  held = set()
  for r in runs:
    match = re.search(r"eval \[(\d+):(\d+)\]", r.get("dataset") or "")
    held.add(int(match.group(2)) - int(match.group(1)) if match else None)
  size = f" ({next(iter(held)):,} held out each)" if len(held) == 1 and None not in held else ""
  data = datas[0]
  name = f"{data.get('name', '?')} ({data.get('source', '?')})"
  listed = ", ".join(map(str, sorted(folds)))
  which = f"{k}-fold CV" if len(folds) == k else f"folds {listed} of a {k}-fold CV"
  return f"{name}: {which} of {data.get('train_split', '?')}{size}"


def render(
  runs: list[dict],
  title: str,
  command: str,
  notes=(),
  over=DEFAULT_OVER,
  plots: dict | None = None,
  references: dict | None = None,
  table_plots: dict | None = None,
  table_names: dict | None = None,
) -> str:
  """The Markdown report: one table per config file and metric set, one row per point.

  Args:
    runs: run records (`load_runs`).
    title: the heading.
    command: the command that generated the report (quoted in it).
    notes: lines printed under the tables.
    over: the replicate axes that a point's runs may differ in.
    plots: metric name -> image path (as the Markdown should link it), from `plot_curves`.
    references: experiment (`experiments/X.py[:ARG]`) -> a published number, shown in a
      "published" column of the tables that have one.
    table_plots: table name -> {metric name: image path}, linked under that table
      (`plot_tables`).
    table_names: experiment (`experiments/X.py[:ARG]`) -> the name of the table its rows go in,
      so that several experiments share one table (e.g. a paper's); by default each config
      file has its own, named by the file.

  Returns:
    The Markdown text.
  """
  groups = group_runs(runs, over)
  lines = [
    f"# {title}",
    "",
    f"Generated by `{command}` from each run's `results.json`; do not edit by hand.",
    f"Each row is a point: the runs that differ only in {', '.join(over)}, with the mean ± sample",
    "standard deviation (ddof=1) over them and their number n (n=1: no std). Wall time: the mean",
    "per run, compile and evaluation included, data loading excluded, summed over resumptions.",
  ]
  tables: dict = {}
  for group in groups:
    key = (table_name(group, table_names), tuple(s["name"] for s in group.metrics))
    tables.setdefault(key, []).append(group)
  row = 0
  for (name, _), table in tables.items():
    commands = []
    specs = table[0].metrics
    best, best_spec = best_group(table)
    published = [(references or {}).get(experiment_of(g.runs[0]), "") for g in table]
    show_published = any(published)
    lines += [
      "",
      f"## {name}",
      "",
      "| # | point | n | "
      + " | ".join(s["label"] for s in specs)
      + (" | published" if show_published else "")
      + " | data | model (params) | steps | wall time | machine | backend | jax | commit |",
      "| " + " | ".join(["---"] * (len(specs) + 11 + show_published)) + " |",
    ]
    for i, group in enumerate(table):
      row += 1
      cells = []
      for spec in specs:
        text, _ = metric_cell(group, spec)
        bold = best is not None and i == best and spec["name"] == best_spec["name"]
        cells.append(f"**{text}**" if bold else text)
      runs_ = group.runs
      wall = [r["wall_time_s"] for r in runs_ if isinstance(r.get("wall_time_s"), (int, float))]
      if show_published:
        cells.append(published[i] or "—")
      lines.append(
        f"| {row} | {group.label} | {len(runs_)} | "
        + " | ".join(cells)
        + f" | {_data_cell(runs_)} | {_unique(map(_params, runs_))}"
        f" | {_unique(r.get('num_train_steps') for r in runs_)}"
        f" | {f'{statistics.fmean(wall):.1f} s' if wall else '?'}"
        f" | {_unique(map(_machine, runs_))} | {_unique(map(_backend, runs_))}"
        f" | {_unique(r.get('jax_version') for r in runs_)}"
        f" | {_unique(_commit(r.get('git_commit')) for r in runs_)} |"
      )
      over_text = _over_text(group, over)
      example = runs_[0].get("command", "?")
      commands.append(f"{row}. `{example}`" + (f" over {over_text}" if len(runs_) > 1 else ""))
    if best is not None:
      best_row = row - len(table) + best + 1
      lines += [
        "",
        f"Best {best_spec['label']} ({best_spec['better']} is better): row {best_row},"
        f" {table[best].label}.",
      ]
    lines += ["", "Commands (one example per point):", "", *commands]
    for metric, path in ((table_plots or {}).get(name) or {}).items():
      lines += ["", f"![{name}: {metric}]({path})"]
  caveats = sorted({r.get("metrics_caveat", "") for r in runs} - {""})
  lines += ["", *[f"Metrics: {c}." for c in caveats]] if caveats else []
  features = [(g.label, g.runs[0]["classifier"]) for g in groups if g.runs[0].get("classifier")]
  lines += [f"Features of {label}: {c}." for label, c in features]
  if plots:
    lines += ["", "## Learning curves", ""]
    lines += [f"![{name}]({path})" for name, path in plots.items()]
  if notes:
    lines += ["", *[f"Note: {n}" for n in notes]]
  return "\n".join(lines) + "\n"


_FOOTER = re.compile(r"^(Metrics: |Features of |Note: |## Learning curves$)")


def _sections(text: str) -> tuple[list[str], list[tuple[str, list[str]]], list[str]]:
  """A rendered report split into its head, its tables ((name, lines) from a "## name" heading
  to the next) and its footer (the "Metrics:", "Features of" and "Note:" lines)."""
  head, sections, footer = [], [], []
  for line in text.splitlines():
    if footer or _FOOTER.match(line):
      footer.append(line)
    elif line.startswith("## "):
      sections.append((line[3:], [line]))
    elif sections:
      sections[-1][1].append(line)
    else:
      head.append(line)
  return head, sections, footer


def _renumber(lines: list[str], first: int) -> tuple[list[str], int]:
  """A table section's rows renumbered from `first` (its rows, its command list and its "best"
  line); returns the lines and the next free number."""
  numbers: dict[str, str] = {}
  for line in lines:
    m = re.match(r"^\| (\d+) \| ", line)
    if m:
      numbers[m.group(1)] = str(first + len(numbers))
  out = []
  for line in lines:
    line = re.sub(r"^\| (\d+) \| ", lambda m: f"| {numbers[m.group(1)]} | ", line)
    line = re.sub(r"^(\d+)\. `", lambda m: f"{numbers.get(m.group(1), m.group(1))}. `", line)
    line = re.sub(
      r"^(Best .*\): row )(\d+),", lambda m: f"{m.group(1)}{numbers.get(m.group(2), m.group(2))},",
      line,
    )  # fmt: skip
    out.append(line)
  return out, first + len(numbers)


def carry_tables(text: str, previous: str, names, why: str, order=None) -> tuple[str, list[str]]:
  """`text` (a rendered report) with the tables named in `names` copied from `previous` (the
  report it replaces), for tables none of whose runs are on this machine: each in its earlier
  place among the others (or, given `order`, a list of table names, in that order), marked with
  `why`, its rows renumbered with the rest; the earlier "Metrics:" and "Features of" lines of
  its rows come too. Returns the text and the names of the tables carried."""
  head, new, footer = _sections(text)
  _, old, old_footer = _sections(previous)
  present = {name for name, _ in new}
  carried = [(n, lines) for n, lines in old if n in set(names) and n not in present]
  if not carried:
    return text, []
  out = list(new)
  for i, (name, lines) in enumerate(old):
    if (name, lines) not in carried:
      continue
    # one marker, the current one: an earlier carry's (of any wording) is replaced
    rest = [line for line in lines[1:] if not (line.startswith("*") and line.endswith("*"))]
    while rest and not rest[0]:
      rest = rest[1:]
    marked = (name, [lines[0], "", f"*{why}*", "", *rest])
    # after the nearest earlier table of the old report that this one has, else first
    before = [n for n, _ in old[:i]]
    at = max((j + 1 for j, (n, _) in enumerate(out) if n in before), default=0)
    out.insert(at, marked)
  if order is not None:  # stable: tables of one name stay in their order
    rank = {name: i for i, name in reversed(list(enumerate(order)))}
    out.sort(key=lambda section: rank.get(section[0], len(rank)))
  body, row = [], 1
  for _, lines in out:
    lines, row = _renumber(lines, row)
    while lines and not lines[-1]:
      lines = lines[:-1]
    body += [*lines, ""]
  labels = {
    line.split(" | ")[1] for _, lines in carried for line in lines if re.match(r"^\| \d+ \| ", line)
  }
  extra = [
    line
    for line in old_footer
    if line not in footer
    and (
      line.startswith("Metrics: ")
      or any(line.startswith(f"Features of {label}: ") for label in labels)
    )
  ]
  notes = [line for line in footer if line.startswith("Note: ")]
  rest = [line for line in footer if not line.startswith("Note: ")]
  while rest and not rest[-1]:
    rest = rest[:-1]
  rest += extra
  lines = [*head, *body, *rest, *([""] if rest and notes else []), *notes]
  return "\n".join(lines).rstrip("\n") + "\n", [n for n, _ in carried]


def read_curves(path: str) -> dict[str, dict[int, float]]:
  """A run's `metrics.jsonl` as metric -> {step: value}.

  A step logged again after a resume (the run redoes the steps since its last checkpoint) keeps
  its last value, per metric: a train and an eval record of the same step both stay.

  Args:
    path: the metrics.jsonl file.

  Returns:
    metric name -> {step: value}, steps in increasing order; {} when the file is missing.
  """
  curves: dict[str, dict[int, float]] = {}
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.readlines()
  except OSError:
    return {}
  for line in lines:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:  # a line cut short by a kill mid-write
      continue
    step = record.get("step")
    if not isinstance(step, int):
      continue
    for name, value in record.items():
      if name != "step" and isinstance(value, (int, float)):
        curves.setdefault(name, {})[step] = float(value)
  return {k: dict(sorted(v.items())) for k, v in curves.items()}


def _run_curves(run: dict) -> dict:
  return read_curves(os.path.join(run["workdir"], "metrics.jsonl"))


def curve_metrics(groups: list[Group], curves: dict, max_metrics: int | None = None) -> list[str]:
  """The metrics to plot: the declared ones (the first `max_metrics` of each group's) and their
  `train_` counterparts, where logged."""
  logged = {k for c in curves.values() for k in c}
  names = []
  for group in groups:
    for spec in group.metrics[:max_metrics]:
      base = spec["name"].split("_", 1)[1] if "_" in spec["name"] else spec["name"]
      names += [f"train_{base}", spec["name"]]
  return [n for n in dict.fromkeys(names) if n in logged]


def band(series: list[dict[int, float]]) -> tuple[list[int], list[float], list[float]]:
  """(steps, mean, std) over runs' {step: value}, at every step some run logged (std 0 where
  fewer than two runs did)."""
  steps = sorted({s for c in series for s in c})
  means, stds = [], []
  for step in steps:
    values = [c[step] for c in series if step in c]
    mean, std = mean_std(values)
    means.append(mean)
    stds.append(std or 0.0)
  return steps, means, stds


def plot_curves(
  groups: list[Group], out_dir: str, max_metrics: int | None = None
) -> dict[str, str]:
  """PNG learning curves: `out_dir/<metric>.png`, one line per point, ± one std over its runs.

  Args:
    groups: the points (`group_runs`).
    out_dir: where the images go (created).
    max_metrics: plot only the first this many declared metrics (None: all).

  Returns:
    metric name -> image path, for the metrics some run logged.
  """
  from matplotlib.figure import Figure  # no pyplot: no global state, no display (Agg canvas)

  curves = {id(r): _run_curves(r) for g in groups for r in g.runs}
  names = curve_metrics(groups, curves, max_metrics)
  os.makedirs(out_dir, exist_ok=True)
  labels = [f"{g.label.replace('`', '')} (n={len(g.runs)})" for g in groups]
  if len({g.config_file for g in groups}) > 1:
    labels = [
      f"{os.path.basename(g.config_file)}: {x}" for g, x in zip(groups, labels, strict=True)
    ]
  paths = {}
  for name in names:
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.add_subplot()
    for group, label in zip(groups, labels, strict=True):
      series = [curves[id(r)][name] for r in group.runs if name in curves[id(r)]]
      if not series:
        continue
      steps, mean, std = band(series)
      (line,) = ax.plot(steps, mean, marker="o" if len(steps) <= 20 else None, ms=3, label=label)
      if len(series) > 1:
        low = [m - s for m, s in zip(mean, std, strict=True)]
        high = [m + s for m, s in zip(mean, std, strict=True)]
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("step")
    ax.set_ylabel(name)
    ax.set_title(f"{name} (mean ± std over replicates)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = os.path.join(out_dir, f"{name}.png")
    fig.savefig(path)
    paths[name] = path
  return paths


def config_table(config_file: str) -> str:
  """The name of the table of an experiment that names none: its config file, backquoted."""
  return f"`{config_file}`"


def table_name(group: Group, table_names: dict | None = None) -> str:
  """The table a point's row goes in: the one its run was loaded for (a campaign's sweep sets
  `table`), else its experiment's entry of `table_names`, else its config file (backquoted)."""
  run = group.runs[0]
  named = run.get("table") or (table_names or {}).get(experiment_of(run))
  return named or config_table(group.config_file)


def plot_tables(
  runs: list[dict], out_dir: str, base: str, over=DEFAULT_OVER, table_names: dict | None = None
) -> dict:
  """Learning curves per table of its first declared metric (and the `train_` one):
  `out_dir/<table>/<metric>.png`, one line per point.

  Args:
    runs: run records (`load_runs`).
    out_dir: the folder of the images (created).
    base: the folder the report is written to (image paths are made relative to it).
    over: the replicate axes.
    table_names: as for `render`.

  Returns:
    table name -> {metric name: image path relative to `base`}.
  """
  groups = group_runs(runs, over)
  out = {}
  for name in dict.fromkeys(table_name(g, table_names) for g in groups):
    table = [g for g in groups if table_name(g, table_names) == name]
    # "`experiments/mnist_cnn.py`" -> mnist_cnn; "MNIST-1D (the paper's)" -> mnist_1d
    short = os.path.basename(name.strip("`")).split("(")[0].split(",")[0].replace(".py", "")
    folder = re.sub(r"[^A-Za-z0-9]+", "_", short).strip("_").lower()
    images = plot_curves(table, f"{out_dir}/{folder}", max_metrics=1)
    out[name] = {
      k: os.path.relpath(os.path.abspath(v), os.path.abspath(base)) for k, v in images.items()
    }
  return out


def run_hparams(run: dict) -> tuple[dict, dict]:
  """A run's (hparams, metrics) for TensorBoard: the overrides it was launched with (parsed) and
  its final scalar metrics."""
  hparams = {}
  for key, text in (run.get("overrides") or {}).items():
    value = parse_override(text)
    hparams[key] = value if isinstance(value, (bool, int, float, str)) else _show(value)
  metrics = {k: float(v) for k, v in run.get("final", {}).items() if isinstance(v, (int, float))}
  return hparams, metrics


def write_hparams(logdir: str, hparams: dict, metrics: dict) -> str:
  """One HParams session in `logdir` (TensorBoard's HParams dashboard), with tensorboardX.

  Earlier event files in `logdir` are removed first, so that rewriting a run's session leaves
  one session, not two.

  Args:
    logdir: the session's folder, e.g. `<workdir>/tb/hparams` (`tensorboard --logdir` above it).
    hparams: name -> bool, int, float or str (others are shown as strings).
    metrics: metric name -> final value.

  Returns:
    The event file written.
  """
  from tensorboardX import SummaryWriter  # imported here: only HParams need it

  logdir = os.path.abspath(logdir)
  for old in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
    os.remove(old)
  values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
  # add_hparams writes the session to join(writer's logdir, name), which is `name` itself when
  # absolute; the writer's own (empty) event file then lands in a folder that is deleted, not
  # beside the run's training events.
  with tempfile.TemporaryDirectory() as scratch, SummaryWriter(scratch) as writer:
    writer.add_hparams(values, {k: float(v) for k, v in metrics.items()}, name=logdir)
  return max(glob.glob(os.path.join(logdir, "events.out.tfevents.*")), key=os.path.getmtime)


def _define_flags():
  """Flags are defined only when this runs as a program: importing it defines nothing."""
  from absl import flags

  flags.DEFINE_string("out", None, "Markdown file to write (stdout if unset).")
  flags.DEFINE_string("title", "Results", "Heading of the report.")
  flags.DEFINE_multi_string("note", [], "A line to print under the tables (repeatable).")
  flags.DEFINE_list(
    "over",
    list(DEFAULT_OVER),
    "Replicate axes: runs differing only in these (dotted config keys) are one point.",
  )
  flags.DEFINE_string("plots", None, "Folder for PNG learning curves (one per metric).")
  flags.DEFINE_bool("tb_hparams", False, "Also write each run's TensorBoard HParams session.")


def main(argv):
  """The CLI (see the module docstring)."""
  from absl import app
  from absl.flags import FLAGS as flags

  paths = argv[1:]
  if not paths:
    raise app.UsageError("name at least one run workdir or sweep folder")
  command = shlex.join(["python", "-m", "jaxvision.tools.report", *sys.argv[1:]])
  try:
    runs, notes = load_runs(paths)
  except FileNotFoundError as e:
    sys.exit(f"error: {e}")
  plots = None
  if flags.plots:
    images = plot_curves(group_runs(runs, tuple(flags.over)), flags.plots)
    base = os.path.dirname(os.path.abspath(flags.out)) if flags.out else os.getcwd()
    plots = {k: os.path.relpath(os.path.abspath(p), base) for k, p in images.items()}
  if flags.tb_hparams:
    for run in runs:
      path = write_hparams(os.path.join(run["workdir"], "tb", "hparams"), *run_hparams(run))
      print(f"wrote {path}", file=sys.stderr)
  text = render(runs, flags.title, command, [*notes, *flags.note], tuple(flags.over), plots)
  if flags.out:
    with open(flags.out, "w", encoding="utf-8") as f:
      f.write(text)
  else:
    print(text, end="")


if __name__ == "__main__":
  from absl import app

  _define_flags()
  app.run(main)
