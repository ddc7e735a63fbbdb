"""A results campaign: the sweeps behind a results file, run in order, then the report.

  python -m jaxvision.tools.campaign --campaign=experiments/campaign.py        # runs, then writes
  python -m jaxvision.tools.campaign --campaign=experiments/campaign.py --report_only
  python -m jaxvision.tools.campaign --campaign=experiments/campaign.py --only=mnist_cnn,seed_lstm

A campaign file defines `get_campaign()`, a list of `Sweep`s and `Analysis`es, and may set
`TITLE`, `OUT` (the Markdown file, relative to the repository root, e.g. `experiments/RESULTS.md`),
`PLOTS` (a folder for learning-curve PNGs) and `NOTES` (lines printed under the tables). Each sweep
is `python -m jaxvision.tools.sweep --config=CONFIG --axis=...` with its points in
`<root>/<experiment>[_<ARG>]/<point>`, so the same points are shared with sweeps run by hand. An
`Analysis` runs a tool over every finished point of one of the campaign's sweeps (e.g.
`jaxvision.tools.inpaint` on each seed of a GAN recipe, once per mask) and tabulates the records
the tool writes, `<point>/<folder>/<flag>=<value>/results.json`, like runs (mean +- std over the
sweep's seeds); a record is redone when the analysis's arguments change.

Rerunning the command finishes only what is missing: finished points are skipped, interrupted
ones resume from their checkpoints, and a finished point whose recorded config no longer matches
the experiment is listed as stale (never reported as current). The report is rewritten from every
finished point at the end of each invocation, also when points failed or the run was interrupted,
so the file always shows what has been measured, with a note for each sweep not yet complete.
A table none of whose runs is on this machine (a fresh clone, another machine's runs) is carried
from the file being replaced, marked as carried and renumbered with the rest, so that rows can
be added or redone anywhere without dropping the others; a table with any run here is
regenerated from its runs alone.

Exit status: 0 every point finished, 1 a point failed or is stale, 2 a problem with the campaign
file or its arguments (one line), 130 interrupted (rerun to continue).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys


@dataclasses.dataclass(frozen=True)
class Sweep:
  """One sweep of a campaign.

  Attributes:
    config: `experiments/X.py[:ARG]` (with its `get_sweep`, or `axes`).
    axes: dotted config key -> values, crossed with the experiment's own sweep.
    extra: arguments for every point (`--config.k=v`).
    published: a published number for this experiment (shown beside ours), e.g. "94% (paper)".
    table: the name of the table its rows go in (sweeps may share one); default: its config
      file's own table.
    replicates: config keys that vary with the replicate axes (seed, data.fold) and are part
      of them, e.g. a teacher run per fold: the points that differ only in them are one row.
  """

  config: str
  axes: dict = dataclasses.field(default_factory=dict)
  extra: tuple = ()
  published: str = ""
  table: str = ""
  replicates: tuple = ()

  @property
  def name(self) -> str:
    axes = " ".join(f"--axis={k}={_values(v)}" for k, v in self.axes.items())
    return f"{self.config} {axes}".strip()


@dataclasses.dataclass(frozen=True)
class Analysis:
  """A tool run on each finished point of a campaign sweep: `python -m MODULE --workdir=POINT
  --FLAG=VALUE --record_dir=POINT/FOLDER/FLAG=VALUE *args` for each value of `flag`; the tool
  writes `results.json` (a run's record) into its record_dir.

  Attributes:
    of: the campaign's sweep whose points it analyses: its `name` (config and axes, e.g.
      "experiments/x.py:idx --axis=seed=0,1"), or its `config` (the first sweep of it).
    module: the tool, e.g. "jaxvision.tools.inpaint".
    flag: the tool's flag that varies, e.g. "mask".
    values: its values.
    args: arguments for every call.
    folder: the records' folder in each point (default: the module's last name).
    table: the name of its table.
  """

  of: str
  module: str
  flag: str
  values: tuple
  args: tuple = ()
  folder: str = ""
  table: str = ""

  @property
  def name(self) -> str:
    return f"{self.module} on {self.of}"

  @property
  def key(self) -> str:
    """What its records are grouped and labelled by: analyses with one module and one table
    share it, so that their rows (e.g. a dense and a pruned sweep's) are labelled together."""
    return f"{self.module}: {self.table}" if self.table else self.name

  def record_dir(self, point_workdir: str, value) -> str:
    folder = self.folder or self.module.rsplit(".", 1)[-1]
    return os.path.join(point_workdir, folder, f"{self.flag}={value}")

  def command(self, point_workdir: str, value) -> list[str]:
    return [
      sys.executable,
      "-m",
      self.module,
      f"--workdir={point_workdir}",
      f"--{self.flag}={value}",
      f"--record_dir={self.record_dir(point_workdir, value)}",
      *self.args,
    ]


def analysis_done(record_path: str, command: list[str]) -> bool:
  """Whether the record at `record_path` exists and was made by this command's arguments (the
  tool's flags after the module; not the interpreter's path)."""
  try:
    with open(record_path, encoding="utf-8") as f:
      recorded = shlex.split(json.load(f).get("command", ""))
  except (OSError, ValueError):
    return False
  return recorded[3:] == command[3:]


def _values(values) -> str:
  from jaxvision.tools import sweep

  return ",".join(sweep.format_value(v) for v in values)


CARRIED = (
  "Carried from the previous report: none of this table's runs is on the machine that wrote "
  "this one, so its rows are as they were measured (by the commit and machine each names); "
  "rerun its sweeps to regenerate it."
)


class CampaignError(Exception):
  """A problem with the campaign file or arguments: one line, exit status 2."""


def load(path: str):
  """The campaign module at `path` (its `get_campaign()` checked to return Sweeps)."""
  if not os.path.isfile(path):
    raise CampaignError(f"campaign file {path!r} not found")
  spec = importlib.util.spec_from_file_location("_jaxvision_campaign", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    sweeps = module.get_campaign()
  except Exception as e:
    raise CampaignError(f"{path}: {type(e).__name__}: {e}") from None
  if not sweeps or not all(isinstance(s, (Sweep, Analysis)) for s in sweeps):
    raise CampaignError(f"{path}: get_campaign() must return a non-empty list of Sweep or Analysis")
  configs = {n for s in sweeps if isinstance(s, Sweep) for n in (s.name, s.config)}
  for a in sweeps:
    if isinstance(a, Analysis) and a.of not in configs:
      raise CampaignError(f"{path}: analysis {a.name}: no sweep of {a.of!r} in the campaign")
  return module, sweeps


def plan(sweeps, root: str) -> list[dict]:
  """Each entry's plan (`jaxvision.tools.sweep.plan`; an analysis has its sweep's); raises
  CampaignError on a bad sweep."""
  from jaxvision.tools import sweep as sweep_lib

  plans, by_config = [], {}
  for s in sweeps:
    if isinstance(s, Analysis):
      plans.append(None)
      continue
    try:
      axes = [(k, list(v)) for k, v in s.axes.items()]
      plans.append(sweep_lib.plan(s.config, root, list(s.extra), axes=axes))
    except sweep_lib.SweepError as e:
      raise CampaignError(f"sweep {s.name}: {e}") from None
    plans[-1]["replicates"] = list(s.replicates)  # an analysis of it shares its plan
    by_config.setdefault(s.name, plans[-1])
    by_config.setdefault(s.config, plans[-1])
  return [by_config[s.of] if p is None else p for s, p in zip(sweeps, plans, strict=True)]


def current_points(p: dict) -> list[dict]:
  """The points of a plan that have finished with the experiment's current config."""
  from jaxvision.tools import sweep as sweep_lib

  finished = [pt for pt in p["points"] if sweep_lib.is_finished(pt["workdir"])]
  return [pt for pt in finished if not sweep_lib.stale(pt)]


def analysed_workdirs(p: dict) -> list[tuple[str, str]]:
  """(name, workdir) of each run an analysis covers: the plan's current points, a members
  point's members each."""
  from jaxvision.tools import sweep as sweep_lib

  out = []
  for pt in current_points(p):
    members = sweep_lib.member_workdirs(pt["workdir"])
    out += [(f"{pt['name']}/{os.path.basename(m)}", m) for m in members] or [
      (pt["name"], pt["workdir"])
    ]
  return out


def run_analysis(a: Analysis, p: dict) -> int:
  """Runs the tool for each finished run of its sweep and each value whose record is missing
  or was made with other arguments; returns the exit status (130 interrupted)."""
  status = 0
  for name, workdir in analysed_workdirs(p):
    for value in a.values:
      command = a.command(workdir, value)
      record = os.path.join(a.record_dir(workdir, value), "results.json")
      if analysis_done(record, command):
        print(f"skip {name} {a.flag}={value} (done)", flush=True)
        continue
      print(f"run {name} {a.flag}={value}: {shlex.join(command[1:])}", flush=True)
      try:
        rc = subprocess.run(command, check=False).returncode
      except KeyboardInterrupt:
        return 130
      if rc in (130, -2):
        return 130
      if rc:
        print(f"failed {name} {a.flag}={value} (exit {rc})", flush=True)
        status = 1
  return status


def run(sweeps, plans, only=()) -> int:
  """Runs every plan's unfinished points in order (one at a time), and each analysis after
  them; returns the exit status.

  `only`: run just the entries whose name contains one of these strings (all when empty)."""
  from jaxvision.tools import sweep as sweep_lib

  status = 0
  for s, p in zip(sweeps, plans, strict=True):
    if only and not any(o in s.name for o in only):
      continue
    print(f"== {s.name}", flush=True)
    if isinstance(s, Analysis):
      rc = run_analysis(s, p)
    else:
      rc = sweep_lib.run_local(p, sweep_lib.write_points_file(p), parallel=1)
    if rc == 130:
      return 130
    status = max(status, rc)
  return status


def analysis_records(a: Analysis, p: dict) -> tuple[list[dict], list[str]]:
  """The records an analysis has written for its sweep's current runs (each as a run of the
  report, its table keyed by the analysis), and a note on what is missing."""
  from jaxvision.tools import report as report_lib

  records, missing = [], []
  for name, workdir in analysed_workdirs(p):
    for value in a.values:
      directory = a.record_dir(workdir, value)
      path = os.path.join(directory, "results.json")
      if not analysis_done(path, a.command(workdir, value)):
        missing.append(f"{name} {a.flag}={value}")
        continue
      with open(path, encoding="utf-8") as f:
        record = json.load(f)
      analysed = report_lib.load_results(workdir)
      records.append(
        {
          **record,
          "workdir": directory,
          "config_file": a.key,
          "table": a.table,
          "replicates": p.get("replicates", []),
          # labelled by the analysed run's experiment and overrides, not by the tool's command
          "experiment": report_lib.experiment_of(analysed),
          "overrides": analysed.get("overrides") or {},
        }
      )
  notes = []
  if missing:
    notes.append(f"{a.name}: {len(missing)} records missing or stale ({', '.join(missing)}).")
  return records, notes


def _table_of(entry) -> str:
  """The table an entry's rows go in: its own, else its config file's (`report.config_table`)."""
  from jaxvision.tools import report as report_lib

  return entry.table or report_lib.config_table(entry.config.partition(":")[0])


def report(module, sweeps, plans, out: str, plots: str | None, command: str) -> str:
  """Writes the report of every finished, current point to `out`; returns its text. A table
  none of whose runs is here (another machine ran them) is carried from the `out` it replaces,
  marked as such (`jaxvision.tools.report.carry_tables`)."""
  from jaxvision.tools import report as report_lib

  runs, notes, curves, absent = [], [], [], []  # notes: (table, text)
  for s, p in zip(sweeps, plans, strict=True):
    if isinstance(s, Analysis):
      records, missing = analysis_records(s, p)
      runs += records
      notes += [(s.table, n) for n in missing]
      absent += [] if records else [s.table]
      continue
    current = current_points(p)
    loaded = [
      {
        **report_lib.load_results(pt["workdir"]),
        "workdir": pt["workdir"],
        "table": s.table,
        "replicates": list(s.replicates),
      }
      for pt in current
    ]
    runs += loaded
    curves += loaded
    table = _table_of(s)
    absent += [] if current else [table]
    missing = [pt["name"] for pt in p["points"] if pt not in current]
    if missing:
      notes.append(
        (
          table,
          f"`{p['config']}` ({p['sweep_dir']}): {len(missing)} of {len(p['points'])} points not "
          f"finished or stale ({', '.join(missing)})"
          + ("; its row shows the finished ones." if current else "; no row yet."),
        )
      )
  previous = ""
  if os.path.isfile(out):
    with open(out, encoding="utf-8") as f:
      previous = f.read()
  here = {r.get("table") for r in runs}
  headings = set(re.findall(r"^## (.+)$", previous, flags=re.M))
  carry = [t for t in dict.fromkeys(absent) if t not in here and t in headings]
  notes = [n for t, n in notes if t not in carry] + list(getattr(module, "NOTES", ()))
  references = {s.config: s.published for s in sweeps if isinstance(s, Sweep) and s.published}
  names = {s.config: s.table for s in sweeps if isinstance(s, Sweep) and s.table}
  names.update({s.key: s.table for s in sweeps if isinstance(s, Analysis) and s.table})
  table_plots = None
  if plots and curves:  # learning curves: runs only (an analysis has none)
    base = os.path.dirname(os.path.abspath(out))
    table_plots = report_lib.plot_tables(curves, plots, base, table_names=names)
  title = getattr(module, "TITLE", "Results")
  text = report_lib.render(
    runs, title, command, notes, references=references, table_plots=table_plots, table_names=names
  )
  order = [_table_of(s) for s in sweeps]  # the campaign's
  text, _ = report_lib.carry_tables(text, previous, carry, CARRIED, order)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    f.write(text)
  return text


def _parse_flags(argv):
  from absl import flags

  f = flags.FlagValues()
  flags.DEFINE_string("campaign", "experiments/campaign.py", "The campaign file.", flag_values=f)
  flags.DEFINE_string("root", "runs", "Folder of the sweeps' folders.", flag_values=f)
  flags.DEFINE_string("out", None, "The report (default: the campaign's OUT).", flag_values=f)
  flags.DEFINE_string(
    "plots", None, "Folder for learning-curve PNGs (default: the campaign's PLOTS).", flag_values=f
  )
  flags.DEFINE_bool("report_only", False, "Write the report; run nothing.", flag_values=f)
  flags.DEFINE_list(
    "only",
    [],
    "Run only the sweeps whose name contains one of these (comma-separated); the report has all.",
    flag_values=f,
  )
  try:
    rest = f(argv)[1:]
  except flags.Error as e:
    raise CampaignError(str(e).splitlines()[0]) from None
  if rest:
    raise CampaignError(f"unexpected arguments: {shlex.join(rest)}")
  return f


def main(argv: list[str]) -> int:
  """The CLI (see the module docstring); returns the exit status."""
  if "--help" in argv or "-h" in argv:
    print(__doc__)
    return 0
  try:
    f = _parse_flags(argv)
    module, sweeps = load(f.campaign)
    out = f.out or getattr(module, "OUT", None)
    if not out:
      raise CampaignError(f"no --out and {f.campaign} sets no OUT")
    plots = f.plots if f.plots is not None else getattr(module, "PLOTS", None)
    plans = plan(sweeps, f.root)
  except CampaignError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  status = 0 if f.report_only else run(sweeps, plans, f.only)
  command = shlex.join(
    ["python", "-m", "jaxvision.tools.campaign", f"--campaign={f.campaign}"]
    + ([f"--root={f.root}"] if f.root != "runs" else [])
  )
  report(module, sweeps, plans, out, plots, command)
  print(f"wrote {out}" + ("" if status == 0 else f"; exit {status}"), flush=True)
  return status


if __name__ == "__main__":
  # Through the importable module: campaign files build `jaxvision.tools.campaign.Sweep`s, which are
  # not this `__main__` module's class.
  from jaxvision.tools import campaign

  sys.exit(campaign.main(sys.argv))
