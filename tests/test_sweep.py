"""Sweeps: grids and point names, the CLI's errors, a local sweep of real runs that is interrupted
and finished by a rerun, and the same sweep as a SLURM job array."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from jaxvision.tools import sweep
from tests.reliability import record

try:  # the fixture starts a real one-node SLURM cluster (and skips where it cannot)
  from tests.cluster import slurm_cluster  # noqa: F401
except ImportError:

  @pytest.fixture
  def slurm_cluster():
    pytest.skip("tests/cluster.py (the slurm_cluster fixture) is not there")


REPO = pathlib.Path(__file__).resolve().parents[1]
DIGITS = "experiments/digits_cnn.py"
TINY = [
  "--config.num_train_steps=10",
  "--config.eval_every_steps=10",
  "--config.checkpoint.every_steps=5",
  "--config.log_every_steps=5",
  "--config.schedule.warmup_steps=2",
]
SEEDS = ["seed=0", "seed=1", "seed=2", "seed=3"]  # experiments/digits_cnn.py's get_sweep


def test_product_is_the_grid_in_order():
  grid = sweep.product(seed=range(2), **{"optimizer.learning_rate": [1e-3, 3e-3]})
  assert grid == [
    {"seed": 0, "optimizer.learning_rate": 1e-3},
    {"seed": 0, "optimizer.learning_rate": 3e-3},
    {"seed": 1, "optimizer.learning_rate": 1e-3},
    {"seed": 1, "optimizer.learning_rate": 3e-3},
  ]
  assert sweep.product() == [{}]
  assert sweep.product(seed=[]) == []
  assert sweep.product(**{"model.name": "cnn_b", "data.fold": range(2)}) == [
    {"model.name": "cnn_b", "data.fold": 0},
    {"model.name": "cnn_b", "data.fold": 1},
  ]
  features = sweep.product(**{"model.features": [(32,), (32, 64)]})
  assert [p["model.features"] for p in features] == [(32,), (32, 64)]


def test_point_names_are_stable_and_filesystem_safe():
  assert sweep.point_name({"seed": 1, "optimizer.learning_rate": 0.003}) == (
    "seed=1,optimizer.learning_rate=0.003"
  )
  assert sweep.point_name({"seed": 1, "_name": "baseline"}) == "baseline"
  assert sweep.point_name({}) == "default"
  assert (
    sweep.point_name({"model.features": (32, 64), "lr": 1e-5}) == "model.features=32-64,lr=1e-05"
  )
  assert sweep.point_name({"data.name": "a b/c"}) == "data.name=a_b_c"
  assert sweep.point_name({"_name": ".."}) == "_.."
  long_a = sweep.point_name({"x": "a" * 300})
  long_b = sweep.point_name({"x": "a" * 299 + "b"})
  assert len(long_a) == 120 and long_a != long_b
  assert long_a == sweep.point_name({"x": "a" * 300})  # the same on every call


EXPERIMENT = """
import ml_collections

def get_config(arg=None):
  return ml_collections.ConfigDict(
    {"seed": 0, "trainer": "classifier", "variant": str(arg), "optimizer": {"learning_rate": 0.1}}
  )
"""


def _experiment(tmp_path, sweep_source="", name="toy.py"):
  path = tmp_path / name
  path.write_text(EXPERIMENT + sweep_source)
  return str(path)


def _main(capsys, *args):
  status = sweep.main(["sweep", *args])
  out = capsys.readouterr()
  return status, out.out, out.err


@pytest.mark.parametrize(
  "source, extra, message",
  [
    (None, [], "not found"),
    ("", [], "defines no get_sweep()"),
    ("def get_sweep(arg=None):\n  return []", [], "expected a non-empty list"),
    ("def get_sweep(arg=None):\n  return [{'optimizer.lr': 1}]", [], "unknown config key"),
    ("def get_sweep(arg=None):\n  return [{'seed': 'one'}]", [], "bad value 'one' for 'seed'"),
    ("def get_sweep(arg=None):\n  return [{'seed': 1}, {'seed': 1}]", [], "same name"),
    ("def get_sweep(arg=None):\n  return [{'seed': 1}]", ["--", "--config.seed=2"], "set by"),
    ("def get_sweep(arg=None):\n  return [{'seed': 1}]", ["--", "--config.nope=2"], "unknown"),
    ("def get_sweep(arg=None):\n  return [{'seed': 1}]", ["--", "--workdir=x"], "--workdir"),
    ("def get_sweep(arg=None):\n  return [{'seed': 1}]", ["--bogus"], "bogus"),
  ],
)
def test_bad_sweeps_are_one_line_and_exit_2(tmp_path, capsys, source, extra, message):
  path = str(tmp_path / "missing.py") if source is None else _experiment(tmp_path, source)
  status, out, err = _main(capsys, f"--config={path}", f"--root={tmp_path}", *extra)
  assert status == 2
  assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
  assert not list(tmp_path.glob("*/points-*.json"))  # nothing written


SWEEP = """
def get_sweep(arg=None):
  return [{"seed": s, "optimizer.learning_rate": 0.1 * (s + 1)} for s in range(3)]
"""


def test_dry_run_and_sbatch_script(tmp_path, capsys):
  path = _experiment(tmp_path, SWEEP)
  root = tmp_path / "runs"
  status, out, _ = _main(capsys, f"--config={path}:v", f"--root={root}", "--dry_run", "--", "-v=1")
  assert status == 0
  lines = out.splitlines()
  assert len(lines) == 3 and lines[1].startswith("[1] to run: ")
  assert lines[1].endswith(
    f"-m jaxvision.main --config={path}:v --workdir={root}/toy_v/seed=1,optimizer.learning_rate=0.2"
    " -v=1 --config.seed=1 --config.optimizer.learning_rate=0.2"
  )
  # Point 1 has finished: the array is submitted for points 0 and 2 only.
  finished = root / "toy_v" / "seed=1,optimizer.learning_rate=0.2"
  finished.mkdir(parents=True)
  (finished / "results.json").write_text("{}")
  args = ("--slurm", "--dry_run", "--parallel=2", "--sbatch=--time=10")
  status, out, _ = _main(capsys, f"--config={path}:v", f"--root={root}", *args)
  assert status == 0
  assert "submit with: sbatch --parsable --array=0,2%2 " in out
  script = (root / "toy_v" / "sweep.sbatch").read_text()
  assert "#SBATCH --array=0-2%2\n" in script and "#SBATCH --time=10\n" in script
  assert f"#SBATCH --cpus-per-task={os.cpu_count()}\n" in script  # never oversubscribed
  record(
    "`sweep --slurm` without `--parallel`",
    "`python -m jaxvision.tools.sweep --slurm` on a 2-core node",
    f"each array task asks SLURM for this machine's cores (`#SBATCH --cpus-per-task="
    f"{os.cpu_count()}`): the scheduler never runs more points than the node has cores for",
    "-",
  )
  (points_file,) = (root / "toy_v").glob("points-*.json")
  assert f"--points_file={points_file}" in script and '--point="$SLURM_ARRAY_TASK_ID"' in script
  points = json.loads(points_file.read_text())["points"]
  assert [p["overrides"]["seed"] for p in points] == [0, 1, 2]
  assert sweep.run_point(str(points_file), 1) == 0  # a finished point: nothing runs
  assert "already finished" in capsys.readouterr().out


def test_failing_points_do_not_stop_the_others(tmp_path, capsys):
  # jaxvision.main rejects --halt_after_steps=x at once: every point fails, and all are tried.
  path = _experiment(tmp_path, SWEEP)
  args = (f"--config={path}", f"--root={tmp_path}", "--parallel=2", "--", "--halt_after_steps=x")
  status, out, _ = _main(capsys, *args)
  assert status == 1
  assert "summary: 3 points, 0 ran, 0 already finished, 3 failed" in out
  failures = [line for line in out.splitlines() if line.startswith("failed: ")]
  assert len(failures) == 3 and all("halt_after_steps" in line for line in failures)
  log = tmp_path / "toy" / "seed=2,optimizer.learning_rate=0.30000000000000004" / "log.txt"
  assert "--halt_after_steps=x" in log.read_text().splitlines()[0]


def _env() -> dict:
  """The tests' environment, on one CPU device (conftest asks for 8: slower, and not needed)."""
  env = dict(os.environ)
  flags = env.get("XLA_FLAGS", "").split()
  env["XLA_FLAGS"] = " ".join(f for f in flags if "device_count" not in f)
  return env


def _sweep_command(root) -> list:
  return [sys.executable, "-m", "jaxvision.tools.sweep", f"--config={DIGITS}", f"--root={root}"]


def _finished(root) -> dict:
  """Point name -> its results.json's modification time, for the finished points."""
  out = {}
  for name in SEEDS:
    path = pathlib.Path(root) / "digits_cnn" / name / "results.json"
    if path.exists():
      out[name] = path.stat().st_mtime_ns
  return out


def _processes_mentioning(text: str) -> list[str]:
  found = []
  for proc in pathlib.Path("/proc").glob("[0-9]*"):
    try:
      cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
      continue
    if text in cmdline and int(proc.name) != os.getpid():
      found.append(cmdline)
  return found


def _summary(output: str, prefix: str) -> set:
  line = next(line for line in output.splitlines() if line.startswith(prefix))
  names = line.removeprefix(prefix).strip()
  return set() if names == "-" else set(names.split(", "))


@pytest.fixture(scope="module")
def digits_sweep(tmp_path_factory):
  """The digits sweep (4 points), interrupted by Ctrl-C once two points have finished and a
  third is training, then rerun: what each step left behind."""
  root = tmp_path_factory.mktemp("sweep") / "runs"
  command = [*_sweep_command(root), "--parallel=2", "--", *TINY]
  first_log = root.parent / "first.txt"
  with open(first_log, "w") as out:
    # Started as a non-interactive shell starts a background job, with SIGINT ignored: the
    # sweep must still stop on `kill -INT` (CI itself may run in the background).
    proc = subprocess.Popen(
      command,
      cwd=REPO,
      env=_env(),
      stdout=out,
      stderr=subprocess.STDOUT,
      start_new_session=True,
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
  deadline = time.monotonic() + 400
  training = None
  try:
    while proc.poll() is None and time.monotonic() < deadline:
      done = _finished(root)
      # A point has its writers, and so its signal handlers, once its TensorBoard events exist.
      started = [
        n for n in SEEDS if n not in done and list(root.glob(f"digits_cnn/{n}/tb/events.*"))
      ]
      if len(done) >= 2 and started:
        training = started[0]
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        break
      time.sleep(0.1)
    first_status = proc.wait(timeout=180)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  after_interrupt = _finished(root)
  checkpointed = {
    n
    for n in SEEDS
    if n not in after_interrupt
    and any(p.name.isdigit() for p in (root / "digits_cnn" / n / "checkpoints").glob("*"))
  }
  leftovers = _processes_mentioning(str(root))
  # What each point left, for the failure message of the test.
  listing = {str(p.relative_to(root)): p.name for p in root.glob("digits_cnn/*/checkpoints/*")}
  rerun = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=400)
  return dict(
    root=root,
    first_status=first_status,
    first_output=first_log.read_text(),
    training=training,
    after_interrupt=after_interrupt,
    checkpointed=checkpointed,
    leftovers=leftovers,
    listing=listing,
    rerun=rerun,
    after_rerun=_finished(root),
  )


@pytest.mark.slow
def test_interrupted_sweep_resumes_and_reruns_only_missing_points(digits_sweep):
  s = digits_sweep
  output = s["first_output"]
  assert s["training"] is not None, f"the sweep never reached a third point:\n{output}"
  assert s["first_status"] == 130, output
  assert "interrupted" in output and "not finished (interrupted; rerun to continue)" in output
  assert s["leftovers"] == []  # Ctrl-C stopped every point
  finished = set(s["after_interrupt"])
  missing = set(SEEDS) - finished
  assert len(finished) >= 2 and missing, output
  # The point that was training when interrupted stopped cleanly: finished, or checkpointed.
  assert s["training"] in finished | s["checkpointed"], (output, s["listing"])

  rerun = s["rerun"]
  assert rerun.returncode == 0, rerun.stdout + rerun.stderr
  summary = f"summary: 4 points, {len(missing)} ran, {len(finished)} already finished, 0 failed"
  assert summary in rerun.stdout, rerun.stdout
  assert _summary(rerun.stdout, "ran: ") == missing
  assert _summary(rerun.stdout, "skipped: ") == finished
  assert set(s["after_rerun"]) == set(SEEDS)
  for name in finished:  # finished points were not run again
    assert s["after_rerun"][name] == s["after_interrupt"][name]
  for name in s["checkpointed"]:  # an interrupted point resumed from its checkpoint
    log = (s["root"] / "digits_cnn" / name / "log.txt").read_text()
    assert "Resumed from" in log, log
  losses = []
  for i, name in enumerate(SEEDS):
    workdir = s["root"] / "digits_cnn" / name
    results = json.loads((workdir / "results.json").read_text())
    assert results["seed"] == i and results["num_train_steps"] == 10
    assert results["overrides"]["seed"] == repr(i)
    losses.append(results["final"]["eval_loss"])
    assert list((workdir / "tb" / "hparams").glob("events.out.tfevents.*"))  # HParams written
  assert len(set(losses)) == len(SEEDS), losses  # each point trained with its own seed


@pytest.mark.slow
def test_slurm_job_array_finishes_the_sweep(digits_sweep, slurm_cluster, tmp_path):
  root = tmp_path / "runs"
  shutil.copytree(digits_sweep["root"] / "digits_cnn", root / "digits_cnn")
  kept = {n: m for n, m in _finished(root).items() if n in ("seed=0", "seed=2")}
  for name in ("seed=1", "seed=3"):
    shutil.rmtree(root / "digits_cnn" / name)
  env = {**slurm_cluster.env, "XLA_FLAGS": _env()["XLA_FLAGS"]}  # tasks get this environment
  command = [*_sweep_command(root), "--slurm", "--parallel=2", "--", *TINY]
  submitted = subprocess.run(
    command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120
  )
  assert submitted.returncode == 0, submitted.stdout + submitted.stderr
  assert "--array=1,3%2" in submitted.stdout  # only the unfinished points are asked for
  job = submitted.stdout.split("submitted job array ")[1].split(":")[0]
  deadline = time.monotonic() + 400
  while time.monotonic() < deadline:
    queue = slurm_cluster.run(["squeue", "--noheader", f"--jobs={job}"], timeout=30)
    if queue.returncode == 0 and not queue.stdout.strip():
      break
    time.sleep(1)
  else:
    pytest.fail(f"job array {job} still queued after 400 s: {queue.stdout}")
  outputs = {p.name: p.read_text() for p in (root / "digits_cnn").glob("slurm-*.out")}
  assert set(_finished(root)) == set(SEEDS), outputs
  for name, mtime in kept.items():
    assert _finished(root)[name] == mtime
  for name, i in (("seed=1", 1), ("seed=3", 3)):
    results = json.loads((root / "digits_cnn" / name / "results.json").read_text())
    assert results["seed"] == i and results["num_train_steps"] == 10
  assert len(outputs) == 2  # one SLURM task per unfinished point


def test_pack_members_runs_the_seeds_of_a_point_as_one_members_command(tmp_path):
  root = str(tmp_path / "runs")
  plain = sweep.plan("experiments/mnist_cnn.py:idx", root, axes=[("seed", [0, 1])])
  packed = sweep.plan(
    "experiments/mnist_cnn.py:idx", root, axes=[("seed", [0, 1])], pack_members=True
  )
  assert len(plain["points"]) == 10 and len(packed["points"]) == 5  # 5 folds x 2 seeds
  first = packed["points"][0]
  assert first["name"] == "data.fold=0,members=seed=0,1" and first["index"] == 0
  assert "--config.members=seed=0,1" in first["command"]
  assert "--config.data.fold=0" in first["command"]
  by_name = {p["name"]: p for p in plain["points"]}
  for member, seed in zip(first["members"], (0, 1), strict=True):
    assert member["workdir"] == os.path.join(first["workdir"], f"member=seed={seed}")
    assert member["config"] == by_name[f"data.fold=0,seed={seed}"]["config"]
  # Finished when every member has finished; stale when a member's recorded config differs.
  assert not sweep.is_finished(first["workdir"])
  for i, member in enumerate(first["members"]):
    os.makedirs(member["workdir"])
    if i == 0:
      with open(os.path.join(member["workdir"], "results.json"), "w") as f:
        json.dump({"config": {**member["config"], "seed": 7}}, f)
  assert not sweep.is_finished(first["workdir"])
  with open(os.path.join(first["members"][1]["workdir"], "results.json"), "w") as f:
    json.dump({"config": first["members"][1]["config"]}, f)
  assert sweep.is_finished(first["workdir"])
  assert sweep.stale(first) == ["seed: 7 -> 0"]
  # Named points and lone seeds are not packed.
  named = sweep._pack_members(
    [{"name": "a", "overrides": {"_name": "a", "seed": 0}}], "x.py", root, (), None
  )
  assert named == [{"name": "a", "overrides": {"_name": "a", "seed": 0}, "index": 0}]
