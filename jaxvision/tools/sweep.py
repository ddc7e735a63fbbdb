"""Sweeps as data: the experiment file says which points to run; this runs them.

An experiment file may define, beside `get_config`, a sweep: a list of override dicts keyed by
dotted config paths (without the `config.` prefix), each optionally naming itself with `"_name"`:

  from jaxvision.tools import sweep

  def get_sweep(arg=None):
    return sweep.product(seed=range(3), **{"optimizer.learning_rate": [1e-3, 3e-3]})

Running it, from the repository root:

  python -m jaxvision.tools.sweep --config=experiments/digits_cnn.py --parallel=2
  python -m jaxvision.tools.sweep --config=experiments/mnist1d_cnn.py:fast --root=runs -- \\
      --config.num_train_steps=500                    # after `--`: passed to every point
  python -m jaxvision.tools.sweep --config=experiments/mnist_cnn.py:idx --axis=data.fold=0:5 \\
      --axis=seed=0,1                     # axes from the command line, crossed with get_sweep
  python -m jaxvision.tools.sweep --config=experiments/digits_cnn.py --slurm    # a SLURM job array
  python -m jaxvision.tools.sweep --config=experiments/digits_cnn.py --dry_run  # print only
  python -m jaxvision.tools.report runs/digits_cnn          # mean +- std over seeds, per point

Every point is one `python -m jaxvision.main --config=FILE[:ARG] --workdir=WORKDIR
--config.k=v ...` with its own workdir, `<root>/<experiment>[_<ARG>]/<point name>` (e.g.
`runs/digits_cnn/seed=1`), and its output appended to `WORKDIR/log.txt`. A point whose
`results.json` exists is skipped, so rerunning the same sweep command finishes only what is
missing; a point that was interrupted resumes from its latest checkpoint (the trainer's own
resume). `--axis=KEY=VALUES` (repeatable) crosses the experiment's sweep (or its one default
point, for an experiment without `get_sweep`) with more values, replacing the experiment's values
of KEY: `--axis=data.fold=0:5` is folds 0..4, `--axis=model.name=cnn_a,cnn_b` two models.

A finished point whose recorded config differs from what the point would run now (a recipe
changed in the experiment file, or other arguments after `--`) in anything that changes the
computation is never taken as done: it is listed as stale, naming the keys, and counts as failed
until its workdir is deleted and the sweep rerun.

Locally, `--parallel=N` points run at a time as subprocesses; a failing point does not stop the
others, it is listed at the end and the exit status is 1. Ctrl-C (or SIGTERM) sends SIGTERM to the
running points, which save a checkpoint and stop; rerun the command to continue.

`--slurm` writes `<root>/<experiment>[_<ARG>]/sweep.sbatch`, an `#SBATCH --array=0-(P-1)` script
whose task i runs point i of a generated points file (`points-<hash>.json` beside it, frozen at
submission, so editing the experiment later does not renumber a queued array), and submits it
with `sbatch`, asking only for the unfinished points (a task whose point has finished by the
time it starts exits at once). `--parallel=N` becomes the array's `%N` throttle; `--sbatch=OPT`
(repeatable) adds an `#SBATCH OPT` line, e.g. `--sbatch=--time=1:00:00 --sbatch=--gres=gpu:1`.
`--dry_run` writes the script and prints the `sbatch` command without submitting. Each task asks
for `--cpus_per_task` CPUs (default: this machine's core count, since XLA:CPU uses every core), so
the scheduler never starts more points on a node than it has cores for.

Each finished point also writes its overrides and final metrics to TensorBoard's HParams
dashboard (`WORKDIR/tb/hparams`): `tensorboard --logdir runs/digits_cnn`.

Exit status: 0 all points finished, 1 a point failed, 2 a problem with the sweep itself (unknown
experiment file, no `get_sweep`, a bad override; one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import ast
import copy
import ctypes
import hashlib
import importlib.util
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

POINTS_FILE_PREFIX = "points-"
SBATCH_NAME = "sweep.sbatch"
LOG_NAME = "log.txt"
_MAX_NAME_LENGTH = 120  # a path component stays well under every filesystem's 255 bytes


class SweepError(Exception):
  """A problem with the sweep's definition or arguments: reported in one line, exit status 2."""


def product(**axes) -> list[dict]:
  """The grid over `axes`: every combination, the last axis varying fastest.

  Args:
    **axes: dotted config path -> values (a list, tuple, range or other iterable; a str, number,
      bool or None is one value). Dotted names go through a dict: `**{"data.fold": range(5)}`.
      To sweep over tuple-valued settings, list them: `**{"model.features": [(32,), (64,)]}`.

  Returns:
    One override dict per point; `[{}]` (one point, the config's defaults) for no axes.
  """
  keys = list(axes)
  values = [_axis_values(k, v) for k, v in axes.items()]
  return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def _axis_values(key: str, values) -> list:
  if isinstance(values, (str, bytes, int, float, bool)) or values is None:
    return [values]
  try:
    return list(values)
  except TypeError:
    raise SweepError(f"axis {key!r}: expected a list of values, got {values!r}") from None


def parse_axis(text: str) -> tuple[str, list]:
  """A command-line axis, `KEY=VALUES`, as (dotted key, values).

  VALUES is `START:STOP[:STEP]` (integers, a Python range) or a comma-separated list whose items
  are read as Python literals where they parse (`1e-3`, `(32, 64)`, `True`) and as strings
  otherwise (`cnn_b`); `seed=3` is one value. A tuple-valued item keeps its commas inside its
  parentheses: `model.features=(32,),(32,64)`.

  Raises:
    SweepError: no `=`, an empty key or no values.
  """
  key, sep, values = text.partition("=")
  key = key.strip().removeprefix("config.")
  if not sep or not key or not values.strip():
    raise SweepError(f"--axis={text!r}: expected KEY=VALUES, e.g. data.fold=0:5 or seed=0,1")
  if re.fullmatch(r"-?\d+:-?\d+(:-?\d+)?", values.strip()):
    bounds = [int(v) for v in values.split(":")]
    if len(bounds) == 3 and bounds[2] == 0:
      raise SweepError(f"--axis={text!r}: a range step of 0")
    items = list(range(*bounds))
    if not items:
      raise SweepError(f"--axis={text!r}: the range {values} is empty")
    return key, items
  return key, [_literal(item) for item in _split_top_level(values)]


def _split_top_level(text: str) -> list[str]:
  """`a,(1, 2),b` -> ["a", "(1, 2)", "b"]: commas inside brackets do not split."""
  items, depth, current = [], 0, ""
  for char in text:
    depth += char in "([{"
    depth -= char in ")]}"
    if char == "," and depth == 0:
      items.append(current)
      current = ""
    else:
      current += char
  items.append(current)
  return [item.strip() for item in items if item.strip()]


def _literal(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def with_axes(points: list[dict], axes: list[tuple[str, list]]) -> list[dict]:
  """Each point of `points` crossed with the grid of `axes` (as Hydra's multirun): an axis
  replaces the values its key has in the experiment's points, other keys keep theirs; points that
  then coincide are one. No axes: `points` unchanged."""
  if not axes:
    return points
  grid = product(**dict(axes))
  keys = {k for k, _ in axes}
  out, seen = [], set()
  for point in points:
    base = {k: v for k, v in point.items() if k not in keys and k != "_name"}
    for combo in grid:
      merged = {**base, **combo}
      name = point_name(merged)
      if name not in seen:
        seen.add(name)
        out.append(merged)
  return out


def _name_value(value) -> str:
  """A value as it appears in a point name: short and free of spaces and slashes."""
  if isinstance(value, (tuple, list)):
    return "-".join(_name_value(v) for v in value) or "none"
  return repr(value) if isinstance(value, float) else str(value)


def point_name(overrides: dict) -> str:
  """A stable, filesystem-safe name for a point: its `_name`, else `k=v,k=v` in the given order.

  Args:
    overrides: the point's dotted config path -> value (and optionally "_name").

  Returns:
    E.g. `seed=1,optimizer.learning_rate=0.003`; "default" for no overrides. Characters outside
    `[A-Za-z0-9._=,+-]` become `_`; a name over 120 characters is cut and suffixed with a hash
    of the whole, so distinct points keep distinct names.
  """
  if "_name" in overrides:
    name = str(overrides["_name"])
  else:
    parts = [f"{k}={_name_value(v)}" for k, v in overrides.items()]
    name = ",".join(parts) or "default"
  safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)
  if safe in ("", ".", ".."):
    safe = f"_{safe}"
  if len(safe) > _MAX_NAME_LENGTH:
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    safe = f"{safe[: _MAX_NAME_LENGTH - 11]}+{digest}"
  return safe


def format_value(value) -> str:
  """A value as a `--config.k=VALUE` argument: strings as they are, the rest as Python literals
  (what ml_collections parses back, e.g. `0.003`, `(32, 64)`, `True`)."""
  return value if isinstance(value, str) else repr(value)


def split_config_arg(config_arg: str) -> tuple[str, str | None]:
  """`experiments/x.py:ARG` -> ("experiments/x.py", "ARG"); no colon -> (path, None)."""
  path, sep, arg = config_arg.partition(":")
  return path, (arg if sep else None)


def sweep_dir(root: str, config_arg: str) -> str:
  """`<root>/<experiment>[_<ARG>]`, the folder holding one workdir per point."""
  path, arg = split_config_arg(config_arg)
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join(root, f"{name}_{arg}" if arg else name)


def _load_experiment(path: str):
  if not os.path.isfile(path):
    raise SweepError(f"experiment file {path!r} not found")
  spec = importlib.util.spec_from_file_location(f"_jaxvision_experiment_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # a broken experiment file: say where, in one line
    raise SweepError(f"{path}: {type(e).__name__}: {e}") from None
  return module


def set_dotted(config, key: str, value, where: str) -> None:
  """Sets `config.<key> = value` on a locked ConfigDict, as the command line would."""
  *parents, leaf = key.split(".")
  node = config
  try:
    for part in parents:
      node = node[part]
    if leaf not in node:
      raise KeyError(leaf)
    node[leaf] = value
  except (KeyError, AttributeError, TypeError, ValueError) as e:
    if isinstance(e, (KeyError, AttributeError)):
      raise SweepError(f"{where}: unknown config key {key!r}") from None
    raise SweepError(f"{where}: bad value {value!r} for {key!r}: {e}") from None


def load_points(config_arg: str, axes=()) -> tuple[list[dict], object, list]:
  """The experiment's `get_sweep(ARG)` crossed with `axes`, checked against its `get_config(ARG)`.

  Args:
    config_arg: `experiments/X.py[:ARG]`.
    axes: (dotted key, values) pairs from the command line (`parse_axis`); with axes, an
      experiment without `get_sweep` is one point crossed with them.

  Returns:
    (the override dicts in order, without any `config.` prefix; the config; each point's resolved
    config as a dict).

  Raises:
    SweepError: no such file, no `get_sweep` and no axes, an empty sweep, an override of an unknown
      key or of the wrong type, or two points with the same name.
  """
  path, arg = split_config_arg(config_arg)
  module = _load_experiment(path)
  has_sweep = callable(getattr(module, "get_sweep", None))
  if not has_sweep and not axes:
    raise SweepError(f"{path} defines no get_sweep() and no --axis is given: nothing to sweep")
  call = (lambda f: f(arg)) if arg is not None else (lambda f: f())
  try:
    points = call(module.get_sweep) if has_sweep else [{}]
    config = call(module.get_config)
  except SweepError as e:
    raise SweepError(f"{path}: {e}") from None
  except Exception as e:
    raise SweepError(f"{path}: {type(e).__name__}: {e}") from None
  if not isinstance(points, (list, tuple)) or not points:
    raise SweepError(f"{path}: get_sweep() returned {points!r}, expected a non-empty list")
  for i, point in enumerate(points):
    if not isinstance(point, dict) or not all(isinstance(k, str) for k in point):
      raise SweepError(f"{path} point {i}: expected a dict of dotted config paths, got {point!r}")
  points = [{k.removeprefix("config."): v for k, v in p.items()} for p in points]
  points = with_axes(points, list(axes))
  config.lock()
  names, resolved = {}, []
  for i, point in enumerate(points):
    where = f"{path} point {i}"
    checked = copy.deepcopy(config)
    for key, value in point.items():
      if key != "_name":
        set_dotted(checked, key, value, where)
    resolved.append(json.loads(checked.to_json_best_effort()))
    name = point_name(point)
    if name in names:
      raise SweepError(f"{where} has the same name as point {names[name]}: {name!r}")
    names[name] = i
  return points, config, resolved


def _check_extra(extra: list[str], points: list[dict], config) -> None:
  """Arguments after `--` name real config keys that no point sets, and leave --workdir alone."""
  swept = {k for p in points for k in p if k != "_name"}
  for item in extra:
    flag = item.split("=", 1)[0]
    if flag in ("--workdir", "--config") or flag.startswith(("--workdir", "--config=")):
      raise SweepError(f"{item!r} after --: the sweep sets --config and --workdir itself")
    if flag.startswith("--config."):
      key = flag.removeprefix("--config.")
      if key in swept:
        raise SweepError(f"{item!r} after --: {key!r} is set by the sweep's points")
      node = config
      for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
          raise SweepError(f"{item!r} after --: unknown config key {key!r}")
        node = node[part]


def point_command(config_arg: str, workdir: str, overrides: dict, extra=(), python=None) -> list:
  """The `jaxvision.main` command line of one point.

  Args:
    config_arg: `experiments/X.py[:ARG]`.
    workdir: the point's workdir.
    overrides: dotted config path -> value ("_name" is ignored).
    extra: arguments for every point (e.g. `--config.num_train_steps=10`), before the overrides.
    python: the interpreter (default: this one).

  Returns:
    The argument list.
  """
  args = [python or sys.executable, "-m", "jaxvision.main", f"--config={config_arg}"]
  args += [f"--workdir={workdir}", *extra]
  args += [f"--config.{k}={format_value(v)}" for k, v in overrides.items() if k != "_name"]
  return args


def plan(
  config_arg: str, root: str, extra=(), python=None, axes=(), pack_members: bool = False
) -> dict:
  """The points file's content: every point's name, overrides, workdir and command.

  Args:
    config_arg: `experiments/X.py[:ARG]`.
    root: the folder holding every sweep (e.g. `runs`).
    extra: arguments passed to every point.
    python: the interpreter the points run with (default: this one).
    axes: command-line axes (`parse_axis`), crossed with the experiment's own sweep.
    pack_members: points that differ only in their seed run as one command whose members are
      those seeds (`config.members`, see `jaxvision.train.members`): one point per group, its
      workdir holding `member=seed=K/` for each.

  Returns:
    {"config", "extra", "cwd", "sweep_dir", "points": [{"index", "name", "overrides",
    "workdir", "command", "config"}, ...]}; paths relative to `cwd`; each point's "config" is its
    resolved config before the `extra` arguments (what `stale` compares a finished run with).
  """
  overrides, config, resolved = load_points(config_arg, axes)
  _check_extra(list(extra), overrides, config)
  directory = sweep_dir(root, config_arg)
  points = []
  for i, (point, point_config) in enumerate(zip(overrides, resolved, strict=True)):
    workdir = os.path.join(directory, point_name(point))
    points.append(
      {
        "index": i,
        "name": point_name(point),
        "overrides": {k: _jsonable(v) for k, v in point.items()},
        "workdir": workdir,
        "command": point_command(config_arg, workdir, point, extra, python),
        "config": _with_extra(point_config, extra),
      }
    )
  if pack_members:
    points = _pack_members(points, config_arg, directory, extra, python)
  return {
    "config": config_arg,
    "extra": list(extra),
    "cwd": os.getcwd(),
    "sweep_dir": directory,
    "points": points,
  }


def _pack_members(points: list[dict], config_arg: str, directory: str, extra, python) -> list:
  """Points grouped by everything but their seed: each group of two or more (unnamed points)
  becomes one point running its seeds as members; the rest stay as they are."""
  groups: dict = {}
  for point in points:
    overrides = point["overrides"]
    if "_name" in overrides or "seed" not in overrides:
      key = ("single", point["name"])
    else:
      key = ("group", json.dumps({k: v for k, v in overrides.items() if k != "seed"}))
    groups.setdefault(key, []).append(point)
  packed = []
  for (kind, _), group in groups.items():
    if kind == "single" or len(group) < 2:
      packed += group
      continue
    seeds = [p["overrides"]["seed"] for p in group]
    rest = {k: v for k, v in group[0]["overrides"].items() if k != "seed"}
    overrides = {**rest, "members": "seed=" + ",".join(str(s) for s in seeds)}
    workdir = os.path.join(directory, point_name(overrides))
    members = [
      {
        "name": p["name"],
        "workdir": os.path.join(workdir, f"member=seed={s}"),
        "config": p["config"],
      }
      for p, s in zip(group, seeds, strict=True)
    ]
    packed.append(
      {
        "name": point_name(overrides),
        "overrides": overrides,
        "workdir": workdir,
        "command": point_command(config_arg, workdir, overrides, extra, python),
        "members": members,
      }
    )
  for i, point in enumerate(packed):
    point["index"] = i
  return packed


def _with_extra(config: dict, extra) -> dict:
  """`config` with the `--config.k=v` arguments of `extra` applied (as literals where they
  parse), so that a finished point is compared with what it was really run with."""
  config = copy.deepcopy(config)
  for item in extra:
    flag, sep, value = item.partition("=")
    if not sep or not flag.startswith("--config."):
      continue
    *parents, leaf = flag.removeprefix("--config.").split(".")
    node = config
    for part in parents:
      node = node.setdefault(part, {})
    old = node.get(leaf)
    new = _literal(value)
    node[leaf] = value if isinstance(old, str) else (list(new) if isinstance(new, tuple) else new)
  return config


def stale(point: dict) -> list[str]:
  """For a finished point: the computation-changing keys whose recorded value (results.json's
  config) differs from what the sweep would run now (`workdir.config_changes`); [] when the run is
  current, unfinished, or recorded no config."""
  from jaxvision import workdir as workdir_lib

  if "members" in point:  # a packed point: each member against its own config
    return sorted({change for member in point["members"] for change in stale(member)})
  record = workdir_lib.read_results(point["workdir"])
  if not record or not isinstance(record.get("config"), dict) or "config" not in point:
    return []
  return workdir_lib.config_changes(record["config"], point["config"])


def _jsonable(value):
  if isinstance(value, (str, int, float, bool)) or value is None:
    return value
  if isinstance(value, (tuple, list)):
    return [_jsonable(v) for v in value]
  return repr(value)


def write_points_file(sweep: dict) -> str:
  """Writes `<sweep_dir>/points-<hash>.json` (named by its content, so a queued array keeps
  reading the points it was submitted with); returns its path."""
  text = json.dumps(sweep, indent=2) + "\n"
  digest = hashlib.sha1(text.encode()).hexdigest()[:10]
  os.makedirs(sweep["sweep_dir"], exist_ok=True)
  path = os.path.join(sweep["sweep_dir"], f"{POINTS_FILE_PREFIX}{digest}.json")
  if not os.path.isfile(path):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, path)
  return path


def is_finished(workdir: str) -> bool:
  """Whether the run in `workdir` finished, or, for a members run, every member did."""
  if os.path.isfile(os.path.join(workdir, "results.json")):
    return True
  members = member_workdirs(workdir)
  return bool(members) and all(is_finished(m) for m in members)


def member_workdirs(workdir: str) -> list[str]:
  """The member runs of a members run in `workdir` (`member=NAME/`), none for a plain run."""
  if not os.path.isdir(workdir):
    return []
  names = sorted(n for n in os.listdir(workdir) if n.startswith("member="))
  return [os.path.join(workdir, n) for n in names]


def _die_with_parent() -> None:
  """In a child before exec: SIGTERM it when the sweep dies, even by SIGKILL (Linux), so that a
  killed sweep leaves no point running on its own next to the rerun that will resume it."""
  try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def _write_hparams(workdir: str) -> None:
  from jaxvision.tools import report  # here: tensorboardX loads only once a point has finished

  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    record = json.load(f)
  report.write_hparams(os.path.join(workdir, "tb", "hparams"), *report.run_hparams(record))


def run_point(points_file: str, index: int) -> int:
  """Runs point `index` of a points file (what each local subprocess and SLURM task does).

  Skips a finished point; appends the trainer's output to `<workdir>/log.txt`; once finished,
  writes the point's HParams for TensorBoard. SIGTERM and SIGINT are passed on to the trainer,
  which checkpoints and stops, and this returns its exit status.

  Args:
    points_file: a file written by `write_points_file`.
    index: the point's index.

  Returns:
    The trainer's exit status (0 for an already finished point).
  """
  with open(points_file, encoding="utf-8") as f:
    sweep = json.load(f)
  cwd = sweep["cwd"]  # the sweep's paths are relative to where it was started
  if not 0 <= index < len(sweep["points"]):
    print(f"error: point {index} not in {points_file} ({len(sweep['points'])} points)")
    return 2
  point = sweep["points"][index]
  workdir = os.path.join(cwd, point["workdir"])
  if is_finished(workdir):
    print(f"point {index} ({point['name']}) already finished: {workdir}/results.json", flush=True)
    return 0
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, LOG_NAME), "a", encoding="utf-8") as log:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    log.write(f"# {stamp} point {index}: {shlex.join(point['command'])}\n")
    log.flush()
    child = subprocess.Popen(
      point["command"],
      cwd=cwd,
      stdout=log,
      stderr=subprocess.STDOUT,
      preexec_fn=_die_with_parent,
    )
  forward = lambda signum, frame: child.send_signal(signal.SIGTERM)
  previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    status = child.wait()
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  if status < 0:  # killed by a signal: report it the way a shell would
    status = 128 - status
  if status == 0 and is_finished(workdir):
    for run in member_workdirs(workdir) or [workdir]:
      try:
        _write_hparams(run)
      except Exception as e:  # TensorBoard extras never fail a finished point
        print(f"warning: no HParams for {run}: {type(e).__name__}: {e}", flush=True)
  return status


def _runner_command(points_file: str, index: int, python=None) -> list[str]:
  python = python or sys.executable
  return [python, "-m", "jaxvision.tools.sweep", f"--points_file={points_file}", f"--point={index}"]


def _stop(running: dict, grace_s: float) -> None:
  """SIGTERM every running point (its runner passes it on to the trainer, once), then SIGKILL
  the process groups of those still there after `grace_s`."""
  for proc in running:
    proc.send_signal(signal.SIGTERM)
  deadline = time.monotonic() + grace_s
  try:
    for proc in running:
      proc.wait(timeout=max(0.0, deadline - time.monotonic()))
  except (subprocess.TimeoutExpired, KeyboardInterrupt):  # too slow, or a second Ctrl-C
    for proc in running:
      if proc.poll() is None:
        try:
          os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
          pass
        proc.wait()


def run_local(sweep: dict, points_file: str, parallel: int = 1, grace_s: float = 60.0) -> int:
  """Runs a sweep's unfinished points `parallel` at a time; prints progress and a summary.

  Args:
    sweep: what `plan` returned.
    points_file: its file (`write_points_file`), which the point subprocesses read.
    parallel: how many points run at once.
    grace_s: after Ctrl-C, how long the points get to checkpoint before they are killed.

  Returns:
    The exit status: 0 all finished, 1 a point failed, 130 interrupted.
  """
  points = sweep["points"]
  total = len(points)
  finished = [p for p in points if is_finished(p["workdir"])]
  outdated = [(p, stale(p)) for p in finished]
  outdated = [(p, keys) for p, keys in outdated if keys]
  skipped = [p for p in finished if all(p is not q for q, _ in outdated)]
  todo = [p for p in points if not is_finished(p["workdir"])]
  ran, failed = [], []
  for point, keys in outdated:  # a finished run of another config never stands for this point
    reason = f"finished with another config ({'; '.join(keys)}): delete {point['workdir']} to rerun"
    failed.append((point, reason))
    print(f"[{point['index']}] STALE {point['name']}: {reason}", flush=True)
  running = {}  # Popen -> (point, start time)

  def on_signal(signum, frame):
    raise KeyboardInterrupt  # stop like Ctrl-C: the points checkpoint and stop

  # SIGINT too, explicitly: a sweep started in the background by a non-interactive shell
  # (`nohup ... &`) inherits SIGINT ignored, and `kill -INT` would then do nothing.
  previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
  print(
    f"sweep {sweep['config']}: {total} points in {sweep['sweep_dir']}, {len(skipped)} already "
    f"finished, {len(todo)} to run, {parallel} at a time",
    flush=True,
  )
  interrupted = False
  try:
    while todo or running:
      while todo and len(running) < parallel:
        point = todo.pop(0)
        os.makedirs(point["workdir"], exist_ok=True)
        with open(os.path.join(point["workdir"], LOG_NAME), "a", encoding="utf-8") as log:
          # A session of its own: Ctrl-C reaches only the sweep, which stops points in order.
          proc = subprocess.Popen(
            _runner_command(points_file, point["index"]),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
          )
        running[proc] = (point, time.monotonic())
        print(f"[{point['index']}] start {point['name']} (log: {point['workdir']}/log.txt)")
      for proc in [p for p in running if p.poll() is not None]:
        point, start = running.pop(proc)
        seconds = time.monotonic() - start
        if proc.returncode == 0 and is_finished(point["workdir"]):
          ran.append(point)
          print(f"[{point['index']}] done {point['name']} in {seconds:.1f} s")
        else:
          failed.append((point, f"exit {proc.returncode}: {_last_line(point['workdir'])}"))
          print(f"[{point['index']}] FAILED {point['name']} (exit {proc.returncode})")
      sys.stdout.flush()
      time.sleep(0.2)
  except KeyboardInterrupt:
    interrupted = True
    print(f"interrupted: stopping {len(running)} running points (SIGTERM)...", flush=True)
    stop_start = time.monotonic()
    _stop(running, grace_s)
    print(f"stopped in {time.monotonic() - stop_start:.1f} s", flush=True)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  names = lambda ps: ", ".join(p["name"] for p in ps) or "-"
  print(
    f"summary: {total} points, {len(ran)} ran, {len(skipped)} already finished, "
    f"{len(failed)} failed or stale"
    + (
      f", {total - len(ran) - len(skipped) - len(failed)} not finished "
      "(interrupted; rerun to continue)"
      if interrupted
      else ""
    )
  )
  print(f"ran: {names(ran)}")
  print(f"skipped: {names(skipped)}")
  for point, reason in failed:
    print(f"failed: {point['name']} ({reason})")
  sys.stdout.flush()
  if interrupted:
    return 130
  return 1 if failed else 0


def _last_line(workdir: str) -> str:
  """The log's last non-empty line: usually the one-line error that ended the point."""
  try:
    with open(os.path.join(workdir, LOG_NAME), encoding="utf-8", errors="replace") as f:
      lines = [line.strip() for line in f if line.strip()]
  except OSError:
    return "no log"
  return lines[-1] if lines else "empty log"


def write_sbatch(
  sweep: dict, points_file: str, parallel: int = 0, options=(), python=None, cpus_per_task=0
) -> str:
  """Writes `<sweep_dir>/sweep.sbatch`: a job array whose task i runs point i.

  Args:
    sweep: what `plan` returned.
    points_file: its file, which the tasks read.
    parallel: the array's throttle (`%N`: at most N tasks at once; 0: no limit).
    options: extra `#SBATCH` options, e.g. ("--time=1:00:00", "--gres=gpu:1").
    python: the interpreter the tasks run (default: this one).
    cpus_per_task: CPUs each task asks for (`--cpus-per-task`), so the scheduler never runs more
      points on a node than its cores hold; 0: this machine's core count (XLA:CPU uses them
      all), unless `options` sets it.

  Returns:
    The script's path.
  """
  directory = os.path.abspath(sweep["sweep_dir"])
  n = len(sweep["points"])
  name = os.path.basename(sweep["sweep_dir"])
  runner = _runner_command(os.path.abspath(points_file), 0, python)[:-1]
  lines = [
    "#!/bin/bash",
    f"# Generated by python -m jaxvision.tools.sweep --config={sweep['config']} --slurm;",
    f"# task i runs point i of {os.path.basename(points_file)} (a finished point exits at once).",
    f"#SBATCH --job-name={name}",
    f"#SBATCH --array=0-{n - 1}" + (f"%{parallel}" if parallel > 0 else ""),
    *(
      []
      if any(o.startswith("--cpus-per-task") for o in options)
      else [f"#SBATCH --cpus-per-task={cpus_per_task or os.cpu_count() or 1}"]
    ),
    f"#SBATCH --output={directory}/slurm-%A_%a.out",
    "#SBATCH --open-mode=append",
    *[f"#SBATCH {opt}" for opt in options],
    "set -euo pipefail",
    f"cd {shlex.quote(sweep['cwd'])}",
    f'exec {shlex.join(runner)} --point="$SLURM_ARRAY_TASK_ID"',
  ]
  path = os.path.join(sweep["sweep_dir"], SBATCH_NAME)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return path


def sbatch_command(sweep: dict, script: str, parallel: int = 0) -> list[str] | None:
  """`sbatch --parsable [--array=unfinished] SCRIPT`, or None when every point has finished."""
  todo = [p["index"] for p in sweep["points"] if not is_finished(p["workdir"])]
  if not todo:
    return None
  command = ["sbatch", "--parsable"]
  if len(todo) < len(sweep["points"]):  # the command line overrides the script's --array
    command.append("--array=" + ",".join(map(str, todo)) + (f"%{parallel}" if parallel else ""))
  return [*command, script]


def submit(
  sweep: dict, points_file: str, parallel: int, options, dry_run: bool, cpus_per_task: int = 0
) -> int:
  """Writes the sbatch script and submits it (prints the command instead with `dry_run`)."""
  script = write_sbatch(sweep, points_file, parallel, options, cpus_per_task=cpus_per_task)
  command = sbatch_command(sweep, script, parallel)
  print(f"wrote {script} ({len(sweep['points'])} points, points file {points_file})")
  if command is None:
    print(f"all {len(sweep['points'])} points finished: nothing to submit")
    return 0
  if dry_run:
    print(f"dry run; submit with: {shlex.join(command)}")
    return 0
  if shutil.which("sbatch") is None:
    raise SweepError("sbatch not found on PATH: is this a SLURM login node?")
  print(f"submitting: {shlex.join(command)}", flush=True)
  done = subprocess.run(command, capture_output=True, text=True)
  if done.returncode != 0:
    print(f"error: {shlex.join(command)} failed: {done.stderr.strip()}", file=sys.stderr)
    return 1
  job = done.stdout.strip().split(";")[0]
  print(f"submitted job array {job}: squeue -j {job}; logs in {sweep['sweep_dir']}/*/log.txt")
  return 0


def _parse_flags(argv: list[str]):
  """(flag values, the arguments after `--`); a fresh FlagValues, so main() can run again."""
  from absl import flags

  f = flags.FlagValues()
  flags.DEFINE_string(
    "config", None, "Experiment file with get_sweep(): experiments/X.py[:ARG].", flag_values=f
  )
  flags.DEFINE_string(
    "root", "runs", "Folder for the sweep's folder of point workdirs.", flag_values=f
  )
  flags.DEFINE_integer(
    "parallel", 1, "Points at a time (locally; with --slurm: the %N throttle).", flag_values=f
  )
  flags.DEFINE_bool(
    "slurm", False, "Write and submit a SLURM job array instead of running.", flag_values=f
  )
  flags.DEFINE_bool(
    "dry_run", False, "Print what would run (--slurm: write, do not submit).", flag_values=f
  )
  flags.DEFINE_multi_string(
    "sbatch", [], "With --slurm: an extra #SBATCH option (repeatable).", flag_values=f
  )
  flags.DEFINE_integer(
    "cpus_per_task",
    0,
    "With --slurm: CPUs each point asks SLURM for (0: this machine's core count).",
    flag_values=f,
  )
  flags.DEFINE_multi_string(
    "axis",
    [],
    "KEY=VALUES, repeatable: crosses the experiment's sweep with these values (START:STOP[:STEP] "
    "or a,b,c), e.g. --axis=data.fold=0:5 --axis=seed=0,1.",
    flag_values=f,
  )
  flags.DEFINE_bool(
    "pack_members",
    False,
    "Run the points that differ only in seed as one command with those seeds as members "
    "(config.members; where benchmarks/members.py shows it faster on this backend).",
    flag_values=f,
  )
  flags.DEFINE_string(
    "points_file", None, "Internal: run one point of this points file.", flag_values=f
  )
  flags.DEFINE_integer("point", None, "Internal: the point of --points_file to run.", flag_values=f)
  try:
    extra = f(argv)[1:]
  except flags.Error as e:
    raise SweepError(str(e).splitlines()[0]) from None
  return f, extra


def main(argv: list[str]) -> int:
  """The CLI (see the module docstring); returns the exit status."""
  own = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
  if "--help" in own or "-h" in own:
    print(__doc__)
    return 0
  try:
    f, extra = _parse_flags(argv)
  except SweepError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if f.points_file is not None:
    return run_point(f.points_file, f.point or 0)
  try:
    if not f.config:
      raise SweepError("--config=experiments/X.py[:ARG] is required")
    if f.parallel < 1:
      raise SweepError(f"--parallel must be >= 1, got {f.parallel}")
    axes = [parse_axis(a) for a in f.axis]
    sweep = plan(f.config, f.root, extra, axes=axes, pack_members=f.pack_members)
    if f.dry_run and not f.slurm:
      for point in sweep["points"]:
        state = "finished" if is_finished(point["workdir"]) else "to run"
        print(f"[{point['index']}] {state}: {shlex.join(point['command'])}")
      return 0
    points_file = write_points_file(sweep)
    if f.slurm:
      throttle = f.parallel if f["parallel"].present else 0
      return submit(sweep, points_file, throttle, f.sbatch, f.dry_run, f.cpus_per_task)
    return run_local(sweep, points_file, f.parallel)
  except SweepError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main(sys.argv))
