"""A results campaign: the sweeps behind a results file, run in order, then the report.

  python -m jaxvision.tools.campaign --campaign=experiments/campaign.py        # runs, then writes
  python -m jaxvision.tools.campaign --campaign=experiments/campaign.py --report_only
  python -m jaxvision.tools.campaign --campaign=experiments/campaign.py --only=mnist_cnn,seed_lstm

A campaign file defines `get_campaign()`, a list of `Sweep`s, and may set `TITLE`, `OUT` (the
Markdown file, relative to the repository root, e.g. `experiments/RESULTS.md`), `PLOTS` (a folder
for learning-curve PNGs) and `NOTES` (lines printed under the tables). Each sweep is
`python -m jaxvision.tools.sweep --config=CONFIG --axis=...` with its points in
`<root>/<experiment>[_<ARG>]/<point>`, so the same points are shared with sweeps run by hand.

Rerunning the command finishes only what is missing: finished points are skipped, interrupted
ones resume from their checkpoints, and a finished point whose recorded config no longer matches
the experiment is listed as stale (never reported as current). The report is rewritten from every
finished point at the end of each invocation, also when points failed or the run was interrupted,
so the file always shows what has been measured, with a note for each sweep not yet complete.

Exit status: 0 every point finished, 1 a point failed or is stale, 2 a problem with the campaign
file or its arguments (one line), 130 interrupted (rerun to continue).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shlex
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
  """

  config: str
  axes: dict = dataclasses.field(default_factory=dict)
  extra: tuple = ()
  published: str = ""
  table: str = ""

  @property
  def name(self) -> str:
    axes = " ".join(f"--axis={k}={_values(v)}" for k, v in self.axes.items())
    return f"{self.config} {axes}".strip()


def _values(values) -> str:
  from jaxvision.tools import sweep

  return ",".join(sweep.format_value(v) for v in values)


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
  if not sweeps or not all(isinstance(s, Sweep) for s in sweeps):
    raise CampaignError(f"{path}: get_campaign() must return a non-empty list of Sweep")
  return module, sweeps


def plan(sweeps, root: str) -> list[dict]:
  """Each sweep's plan (`jaxvision.tools.sweep.plan`); raises CampaignError on a bad sweep."""
  from jaxvision.tools import sweep as sweep_lib

  plans = []
  for s in sweeps:
    try:
      axes = [(k, list(v)) for k, v in s.axes.items()]
      plans.append(sweep_lib.plan(s.config, root, list(s.extra), axes=axes))
    except sweep_lib.SweepError as e:
      raise CampaignError(f"sweep {s.name}: {e}") from None
  return plans


def run(sweeps, plans, only=()) -> int:
  """Runs every plan's unfinished points in order (one at a time); returns the exit status.

  `only`: run just the sweeps whose name contains one of these strings (all when empty)."""
  from jaxvision.tools import sweep as sweep_lib

  status = 0
  for s, p in zip(sweeps, plans, strict=True):
    if only and not any(o in s.name for o in only):
      continue
    print(f"== {s.name}", flush=True)
    rc = sweep_lib.run_local(p, sweep_lib.write_points_file(p), parallel=1)
    if rc == 130:
      return 130
    status = max(status, rc)
  return status


def report(module, sweeps, plans, out: str, plots: str | None, command: str) -> str:
  """Writes the report of every finished, current point to `out`; returns its text."""
  from jaxvision.tools import report as report_lib
  from jaxvision.tools import sweep as sweep_lib

  runs, notes = [], []
  for p in plans:
    finished = [pt for pt in p["points"] if sweep_lib.is_finished(pt["workdir"])]
    current = [pt for pt in finished if not sweep_lib.stale(pt)]
    for pt in current:
      runs.append({**report_lib.load_results(pt["workdir"]), "workdir": pt["workdir"]})
    missing = [pt["name"] for pt in p["points"] if pt not in current]
    if missing:
      notes.append(
        f"`{p['config']}` ({p['sweep_dir']}): {len(missing)} of {len(p['points'])} points not "
        f"finished or stale ({', '.join(missing)})"
        + ("; its row shows the finished ones." if current else "; no row yet.")
      )
  notes += list(getattr(module, "NOTES", ()))
  references = {s.config: s.published for s in sweeps if s.published}
  names = {s.config: s.table for s in sweeps if s.table}
  table_plots = None
  if plots and runs:
    base = os.path.dirname(os.path.abspath(out))
    table_plots = report_lib.plot_tables(runs, plots, base, table_names=names)
  title = getattr(module, "TITLE", "Results")
  text = report_lib.render(
    runs, title, command, notes, references=references, table_plots=table_plots, table_names=names
  )
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
