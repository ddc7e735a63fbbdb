"""Side-by-side speed benchmark: jaxvision's real train steps against plain PyTorch references.

  python -m benchmarks.bench --out=benchmarks/RESULTS.md   # needs the `bench` extra (torch, keras)

For each model (CNN A, the seeds' 3 x LSTM(64), the DCGAN D+G step, the MNIST-1D CNN) it builds
jaxvision's model and train step exactly as the trainers do (same compiler options), the same
model in PyTorch eager, and for the seeds' CNN A and LSTM the same model in Keras 3 on the JAX
backend, on the same batch size and optimizer (Adam). Timing windows of the frameworks
alternate, after warm-up; the table reports the median steps/s of >= 5 windows each, the ratios,
first-step (compile) time, and each framework's peak memory (a fresh process per framework on
CPU, so one's allocations do not hide the other's; allocator peaks on GPU). It then measures the
start-up of the default experiment's command (process start to its first step done, from its
results.json, with a cold and a warm compilation cache) and trains the MNIST-1D CNN recipe
(`experiments/mnist1d_cnn.py:fast`) with the real trainer on several seeds: accuracy and wall
time.

The load average is recorded before and after each model; a section measured while other work
shared the machine (`is_loaded`) says so and is not a result.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags, logging

from benchmarks import bench_models

FLAGS = flags.FLAGS
FRAMEWORKS = ("pytorch", "keras")
NAMES = {"jaxvision": "jaxvision", "pytorch": "PyTorch eager", "keras": "Keras 3 (JAX)"}
DEFAULT_EXPERIMENT = "experiments/mnist1d_cnn.py"  # the README's first command


def _define_flags() -> None:
  """Flags are defined only when this runs as a program: importing it defines nothing."""
  flags.DEFINE_list("models", list(bench_models.CASES), "Which models to time.")
  flags.DEFINE_list(
    "frameworks", list(FRAMEWORKS), "Which frameworks to time beside jaxvision (always timed)."
  )
  flags.DEFINE_bool("startup", True, "Time the default experiment's start-up (subprocesses).")
  flags.DEFINE_integer("windows", 7, "Timed windows per framework and model (median reported).")
  flags.DEFINE_float("window_seconds", 1.0, "Approximate length of one timed window.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the MNIST-1D time-to-accuracy runs.")
  flags.DEFINE_bool("memory", True, "Measure peak memory in separate processes.")
  flags.DEFINE_string("out", None, "Markdown file whose section for this device to (re)write.")
  flags.DEFINE_string("_memory_probe", None, "Internal: MODEL:FRAMEWORK to probe for peak memory.")


def device_description() -> str:
  import jax

  device = jax.devices()[0]
  if device.platform == "cpu":
    try:
      with open("/proc/cpuinfo", encoding="utf-8") as f:
        model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
      model = platform.processor() or platform.machine()
    return f"CPU: {model}, {os.cpu_count()} cores"
  return f"{device.platform.upper()}: {device.device_kind}"


def load() -> float:
  """The 1-minute load average."""
  return os.getloadavg()[0]


def is_loaded(loads) -> bool:
  """Whether other work shared the machine (timings not a result): a 1-minute load average of 1
  or more before the first measurement, or above the core count plus one at any point (the
  benchmark's own threads alone bring it up to about the core count)."""
  loads = list(loads)
  return bool(loads) and (loads[0] >= 1.0 or max(loads) > (os.cpu_count() or 1) + 1)


def time_windows(runner, n_calls: int) -> float:
  """Makes `n_calls` calls of `runner`, waits for the last, and returns train steps/s."""
  start = time.perf_counter()
  for _ in range(n_calls):
    runner()
  runner.sync()
  return n_calls * runner.steps_per_call / (time.perf_counter() - start)


def speed(name: str, windows: int, window_seconds: float, frameworks=FRAMEWORKS) -> dict:
  """Interleaved steps/s of jaxvision and the other frameworks (those that define the model) for
  one model, their first-step times, and the load average before and after."""
  case = bench_models.CASES[name]
  before = load()
  names = ["jaxvision"] + [f for f in frameworks if f != "keras" or case.keras is not None]
  runners = {k: case.runner(k) for k in names}
  first = {k: r.first_step_seconds for k, r in runners.items()}
  for r in runners.values():  # warm-up, and a window length (in calls) for each framework
    r.calls_per_window = max(2, round(window_seconds * time_windows(r, 3) / r.steps_per_call))
  rates = {k: [] for k in runners}
  for _ in range(windows):
    for k, r in runners.items():
      rates[k].append(time_windows(r, r.calls_per_window))
  return {
    "model": name,
    "batch": case.batch,
    "steps_per_call": runners["jaxvision"].steps_per_call,
    "steps_s": {k: statistics.median(v) for k, v in rates.items()},
    "spread": {k: (min(v), max(v)) for k, v in rates.items()},
    "first_step_s": first,
    "load": (before, load()),
  }


def startup(config: str = DEFAULT_EXPERIMENT) -> dict:
  """Process start to the first step done of `python -m jaxvision.main --config=CONFIG`, with
  an empty compilation cache and then a warm one (the data cache filled first: data generation
  is not in these times), from each run's results.json; and the compile time of every program
  of the cold run."""
  rows = {}
  with tempfile.TemporaryDirectory() as tmp:
    env = {**os.environ, "JAXVISION_CACHE_DIR": tmp, "JAX_LOG_COMPILES": "1"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    run = lambda name, *extra: subprocess.run(
      [sys.executable, "-m", "jaxvision.main", f"--config={config}", f"--workdir={tmp}/{name}",
       *extra], env=env, capture_output=True, text=True, timeout=900, check=True,
    )  # fmt: skip
    run(
      "data",
      "--config.num_train_steps=1",
      "--config.schedule.warmup_steps=0",
      "--compilation_cache_dir=",
    )  # fmt: skip  (fills the data cache)
    for name in ("cold", "warm"):
      done = run(name)
      with open(f"{tmp}/{name}/results.json", encoding="utf-8") as f:
        rows[f"{name}_s"] = json.load(f)["startup_s"]
      if name == "cold":
        compiles = re.findall(r"Finished XLA compilation of (\S+) in ([0-9.e-]+) sec", done.stderr)
        rows["compile_s"] = {}
        for fn, seconds in compiles:
          rows["compile_s"][fn] = max(rows["compile_s"].get(fn, 0.0), float(seconds))
  rows["config"] = config
  return rows


def probe_memory(name: str, framework: str) -> float | None:
  """Peak memory in MiB of a fresh process that builds and runs one framework's step."""
  out = subprocess.run(
    [sys.executable, "-m", "benchmarks.bench", f"--_memory_probe={name}:{framework}"],
    capture_output=True,
    text=True,
    timeout=600,
  )
  match = re.search(r"PEAK_MIB (\S+)", out.stdout)
  return float(match.group(1)) if match else None


def run_probe(spec: str) -> None:
  name, framework = spec.split(":")
  case = bench_models.CASES[name]
  runner = case.runner(framework)
  time_windows(runner, 5)
  peak = runner.device_peak_mib()
  if peak is None:  # CPU: this process's peak resident set
    peak = peak_rss_mib()
  print(f"PEAK_MIB {peak:.1f}")


def peak_rss_mib() -> float:
  """Peak resident memory of this process. `ru_maxrss` would not do: Linux carries the parent's
  peak across fork + exec, while VmHWM belongs to this address space alone."""
  try:
    with open("/proc/self/status", encoding="utf-8") as f:
      return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
  except (OSError, StopIteration):
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mnist1d_time_to_accuracy(seeds) -> list[dict]:
  """Trains experiments/mnist1d_cnn.py:fast with the real trainer; accuracy and wall time."""
  from experiments import mnist1d_cnn  # run from the repository root (`-m`)
  from jaxvision.data import load_dataset
  from jaxvision.train import trainer

  start = time.perf_counter()
  load_dataset(mnist1d_cnn.get_config("fast").data)
  generate_s = time.perf_counter() - start
  rows = []
  for seed in seeds:
    config = mnist1d_cnn.get_config("fast")
    config.seed = int(seed)
    with tempfile.TemporaryDirectory() as workdir:
      start = time.perf_counter()
      final = trainer.train_and_evaluate(config, workdir).final
      total = time.perf_counter() - start
      with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
        train_s = json.load(f)["wall_time_s"]
    rows.append(
      {
        "seed": int(seed),
        "eval_accuracy": final["eval_accuracy"],
        "train_s": train_s,  # init + compile + 1,000 steps + final eval + checkpoint
        "total_s": total,  # the above plus generating MNIST-1D
        "generate_s": generate_s,
      }
    )
  return rows


def render(
  speeds: list[dict], memory: dict, mnist1d: list[dict], header: str, start: dict | None = None
) -> str:
  import jax

  loads = [x for s in speeds for x in s["load"]]
  others = [f for f in FRAMEWORKS if any(f in s["steps_s"] for s in speeds)]
  versions = {"pytorch": f"torch {bench_models.torch_version()}",
              "keras": f"keras {bench_models.keras_version()}"}  # fmt: skip
  lines = [
    f"## {header}",
    "",
    f"`{' '.join(['python -m benchmarks.bench', *sys.argv[1:]])}` on {time.strftime('%Y-%m-%d')}"
    f"; Python {platform.python_version()}, jax {jax.__version__}, "
    + ", ".join(versions[f] for f in others)
    + f", float32, Adam. Load average {min(loads):.2f}-{max(loads):.2f} on {os.cpu_count()} cores"
    + (" (**loaded: not a result**)." if is_loaded(loads) else "."),
    "",
    "| model | batch | jaxvision steps/s | "
    + " | ".join(f"{NAMES[f]} steps/s | jaxvision / {NAMES[f].split()[0]}" for f in others)
    + " | first step (compile) s, "
    + " / ".join(NAMES[f].split()[0] for f in ("jaxvision", *others))
    + " | peak memory MiB | load before / after |",
    "| " + " | ".join(["---"] * (6 + 2 * len(others))) + " |",
  ]
  cell = lambda s, k: (
    f"{s['steps_s'][k]:.1f} ({s['spread'][k][0]:.1f}-{s['spread'][k][1]:.1f})"
    if k in s["steps_s"]
    else "—"
  )
  for s in speeds:
    j = s["steps_s"]["jaxvision"]
    mem = memory.get(s["model"], {})
    scanned = f", {s['steps_per_call']} steps per call" if s["steps_per_call"] > 1 else ""
    ratios = []
    for f in others:
      ratio = f"**{j / s['steps_s'][f]:.2f}**" if f in s["steps_s"] else "—"
      ratios.append(f"{cell(s, f)} | {ratio}")
    firsts = " / ".join(
      f"{s['first_step_s'][k]:.2f}" if k in s["first_step_s"] else "—"
      for k in ("jaxvision", *others)
    )
    mems = " / ".join(
      "?" if mem.get(k) is None else f"{mem[k]:.0f}"
      for k in ("jaxvision", *others)
      if k in s["steps_s"]
    )
    lines.append(
      f"| {bench_models.CASES[s['model']].title}{scanned} | {s['batch']} | {cell(s, 'jaxvision')}"
      f" | {' | '.join(ratios)} | {firsts} | {mems} | {s['load'][0]:.2f} / {s['load'][1]:.2f} |"
    )
  lines += ["", "Steps/s: median (min-max) of the timed windows, the frameworks alternating."]
  if start:
    compiles = sorted(start["compile_s"].items(), key=lambda kv: -kv[1])
    lines += [
      "",
      f"Start-up of `python -m jaxvision.main --config={start['config']}` (process start to its"
      f" first step done, data already generated): **{start['cold_s']:.2f} s** with an empty"
      f" compilation cache, **{start['warm_s']:.2f} s** with the cache of an earlier run."
      " Compile times of the cold run: "
      + ", ".join(f"{fn} {sec:.2f} s" for fn, sec in compiles[:6])
      + ".",
    ]
  if mnist1d:
    lines += [
      "",
      "MNIST-1D CNN, `experiments/mnist1d_cnn.py:fast` through the real trainer (1,000 steps):",
      "",
      "| seed | test accuracy | wall s (init, compile, train, eval, checkpoint) |"
      " + data generation s |",
      "| --- | --- | --- | --- |",
    ]
    for r in mnist1d:
      lines.append(
        f"| {r['seed']} | {100 * r['eval_accuracy']:.1f}% | {r['train_s']:.2f} |"
        f" {r['total_s']:.2f} |"
      )
  return "\n".join(lines) + "\n"


def write_section(path: str, header: str, text: str) -> None:
  """Replaces the `## header` section of `path` with `text` (appends it if absent)."""
  old = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Benchmarks\n\n"
  pattern = re.compile(rf"^## {re.escape(header)}\n.*?(?=^## |\Z)", re.M | re.S)
  new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old + "\n" + text
  with open(path, "w", encoding="utf-8") as f:
    f.write(re.sub(r"\n{3,}", "\n\n", new))


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax's INFO logs would bury the table
  if FLAGS._memory_probe:
    run_probe(FLAGS._memory_probe)
    return
  unknown = set(FLAGS.models) - set(bench_models.CASES)
  if unknown:
    raise app.UsageError(f"unknown models {sorted(unknown)}; known: {list(bench_models.CASES)}")
  unknown = set(FLAGS.frameworks) - set(FRAMEWORKS)
  if unknown:
    raise app.UsageError(f"unknown frameworks {sorted(unknown)}; known: {list(FRAMEWORKS)}")
  import jax

  header = f"{device_description()}, Python {platform.python_version()}, jax {jax.__version__}"
  print(f"Benchmarking on {header}", flush=True)
  speeds = []
  for name in FLAGS.models:
    speeds.append(speed(name, FLAGS.windows, FLAGS.window_seconds, FLAGS.frameworks))
    print(json.dumps(speeds[-1]), flush=True)
  memory = {}
  if FLAGS.memory:
    for s in speeds:
      name = s["model"]
      memory[name] = {fw: probe_memory(name, fw) for fw in s["steps_s"]}
      print(name, "peak MiB", memory[name], flush=True)
  start = startup() if FLAGS.startup else None
  if start:
    print(json.dumps(start), flush=True)
  mnist1d = mnist1d_time_to_accuracy(FLAGS.seeds) if FLAGS.seeds else []
  text = render(speeds, memory, mnist1d, header, start)
  print(text)
  if FLAGS.out:
    write_section(FLAGS.out, header, text)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
