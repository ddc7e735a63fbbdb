"""Multi-process JAX: jaxvision.distributed.initialize under a real SLURM srun and locally.

Each case runs JAX in fresh subprocesses (2 processes x 2 virtual CPU devices), so that the
backend of the test process stays uninitialized and single-process.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from jaxvision.data import BatchSampler
from jaxvision.distributed import NO_CLUSTER
from tests.cluster import slurm_cluster  # noqa: F401 (the fixture)
from tests.conftest import REPO

# Sums a global array sharded over every device of every process, and gathers the process ids:
# with 2 processes x 2 devices holding 1, 2, 3, 4 the sum is 10 only if the processes talk.
PROGRAM = textwrap.dedent(
  """\
  import sys

  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.experimental import multihost_utils
  from jax.sharding import NamedSharding, PartitionSpec

  from jaxvision import distributed

  distributed.initialize(*sys.argv[1:2], *map(int, sys.argv[2:4]))
  index, local = jax.process_index(), jax.local_device_count()
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  values = np.arange(1, local + 1, dtype=np.float32) + index * local
  array = jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("data")), values)
  total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, PartitionSpec()))(array)
  ids = multihost_utils.process_allgather(np.array([index]))
  print(
    f"RESULT process={index} count={jax.process_count()} devices={jax.device_count()}"
    f" sum={float(total.addressable_data(0))} ids={ids.ravel().tolist()}",
    flush=True,
  )
  """
)
# Variables by which JAX would detect a cluster (or be handed a coordinator) by itself.
CLUSTER_VARS = ("SLURM_", "OMPI_", "PMI_", "TPU_", "MEGASCALE_", "JAX_COORDINATOR", "KUBERNETES_")


def expected(process: int) -> str:
  """The line that process `process` of 2 (2 devices each) prints when all went right."""
  return f"RESULT process={process} count=2 devices=4 sum=10.0 ids=[0, 1]"


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def jax_env(**extra: str) -> dict[str, str]:
  """This environment without cluster variables, with 2 virtual CPU devices per process."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(CLUSTER_VARS)}
  env.update(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
  return {**env, **extra}


@pytest.fixture
def program(tmp_path: pathlib.Path) -> pathlib.Path:
  """PROGRAM as a file: `python allreduce.py [COORDINATOR NUM_PROCESSES PROCESS_ID]`."""
  path = tmp_path / "allreduce.py"
  path.write_text(PROGRAM)
  return path


def test_srun_two_processes_initialize_without_arguments(slurm_cluster, program, tmp_path):  # noqa: F811
  # JAX's default coordinator port derives from the job id, which starts at 1 in every test
  # cluster: a free port keeps concurrent sessions on one machine apart, and the bind address
  # keeps the coordinator on loopback. Process count, id and host still come from SLURM.
  port = free_port()
  env = jax_env(JAX_COORDINATOR_PORT=str(port), JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}")
  # One output file per task: srun interleaves the tasks' streams mid-line (Gloo's C++ logging
  # writes to stdout too), so a merged stdout cannot be parsed line by line.
  output = tmp_path / "task-%t.out"
  result = slurm_cluster.srun(
    ["-n", "2", "--kill-on-bad-exit=1", f"--output={output}", sys.executable, str(program)],
    timeout=300,
    env=env,
  )
  texts = [(tmp_path / f"task-{task}.out").read_text() for task in range(2)]
  assert result.returncode == 0, result.stderr + "".join(texts)
  lines = sorted(line for text in texts for line in text.splitlines() if line.startswith("RESULT"))
  assert lines == [expected(0), expected(1)], "".join(texts)


def test_local_processes_with_explicit_coordinator(program):
  address = f"127.0.0.1:{free_port()}"
  processes = [
    subprocess.Popen(
      [sys.executable, str(program), address, "2", str(i)],
      env=jax_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  outputs = []
  try:
    for process in processes:
      outputs.append(process.communicate(timeout=300)[0])
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.wait()
  for i, (process, output) in enumerate(zip(processes, outputs, strict=True)):
    assert process.returncode == 0, output
    assert expected(i) in output.splitlines(), output


def test_initialize_outside_a_cluster_is_one_line_value_error():
  code = (
    "from jaxvision import distributed\n"
    "try:\n"
    "  distributed.initialize()\n"
    "except ValueError as e:\n"
    "  print(f'VALUE_ERROR {e}')\n"
  )
  result = subprocess.run(
    [sys.executable, "-c", code], env=jax_env(), capture_output=True, text=True, timeout=60
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [f"VALUE_ERROR {NO_CLUSTER}"], result.stdout + result.stderr
  assert "\n" not in NO_CLUSTER and "./launch.sh -n" in NO_CLUSTER


def test_launch_help_exits_zero():
  result = subprocess.run(
    [str(REPO / "launch.sh"), "--help"], capture_output=True, text=True, timeout=10
  )
  assert result.returncode == 0, result.stderr
  assert "experiments/NAME.py" in result.stdout and "-n N" in result.stdout


def test_launch_n_passes_coordinates_and_stops_all_when_one_fails(tmp_path: pathlib.Path):
  # A stand-in for python: records its arguments and environment; process 1 fails, process 0
  # would run for a minute unless launch.sh stops it.
  fake_python = tmp_path / "python"
  fake_python.write_text(
    textwrap.dedent(
      f"""\
      #!/usr/bin/env bash
      if [[ "$1" == -c ]]; then exec {sys.executable} "$@"; fi  # launch.sh's free-port lookup
      id="${{*: -1}}"
      echo "$* XLA_FLAGS=$XLA_FLAGS" > "{tmp_path}/args.${{id#--process_id=}}"
      echo $$ > "{tmp_path}/pid.${{id#--process_id=}}"
      if [[ "$id" == --process_id=1 ]]; then exit 3; fi
      exec sleep 60
      """
    )
  )
  fake_python.chmod(0o755)
  env = {**os.environ, "PYTHON": str(fake_python), "XLA_FLAGS": "--passed_through"}
  start = time.monotonic()
  result = subprocess.run(
    [str(REPO / "launch.sh"), "-n", "2", "experiments/x.py:a", "--config.b=1"],
    env=env,
    capture_output=True,
    text=True,
    timeout=30,
    cwd=tmp_path,
  )
  assert result.returncode == 3, result.stderr
  assert time.monotonic() - start < 15
  assert "process 1 exited with status 3" in result.stderr
  args = [(tmp_path / f"args.{i}").read_text().split() for i in range(2)]
  for i in range(2):
    assert args[i][:5] == [
      "-m",
      "jaxvision.main",
      "--config=experiments/x.py:a",
      "--workdir=runs/x_a",
      "--config.b=1",
    ]
    assert args[i][5] == "--jax_distributed"
    assert args[i][6].startswith("--coordinator_address=127.0.0.1:")
    assert args[i][7:] == ["--num_processes=2", f"--process_id={i}", "XLA_FLAGS=--passed_through"]
  assert args[0][6] == args[1][6]
  with pytest.raises(ProcessLookupError):  # process 0 (the 60 s sleep) was stopped
    os.kill(int((tmp_path / "pid.0").read_text()), 0)


# Each of 2 processes (2 devices each) builds the train batches of 4 steps through the trainer's
# input, under both strategies, from a source that records which examples it is asked for.
INPUT_PROGRAM = textwrap.dedent(
  """\
  import json
  import sys

  import jax
  import numpy as np
  from jax.experimental import multihost_utils

  from jaxvision import data, distributed, parallel
  from jaxvision.train import trainer

  distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
  n = 64
  source = data.ArraySource(inputs=np.arange(n * 3, dtype=np.float32).reshape(n, 3),
                            targets=np.arange(n))
  read = []

  class Counting:
    def get(self, indices):
      read.extend(int(i) for i in indices)
      return source.get(indices)

  sampler = data.BatchSampler(n, 16, seed=3)
  same = True
  for strategy in (parallel.Strategy(), parallel.PmapStrategy()):
    make = trainer.host_batches(Counting(), sampler, strategy)
    for step in range(4):
      batch = make(step)
      whole = strategy.fetch_rows(batch)
      expected = source.get(sampler.indices(step))
      same &= all(np.array_equal(whole[k], expected[k]) for k in expected)
  print("RESULT " + json.dumps({"read": read, "same": bool(same)}), flush=True)
  """
)


def test_each_process_reads_only_its_rows_of_every_train_batch(tmp_path):
  """The global batch is assembled from the processes' shares: each reads 8 of the 16 examples
  of a step, the two shares are disjoint and together the batch, which equals the one-process
  batch (under jit and pmap)."""
  program = tmp_path / "input.py"
  program.write_text(INPUT_PROGRAM)
  address = f"127.0.0.1:{free_port()}"
  processes = [
    subprocess.Popen(
      [sys.executable, str(program), address, str(i)],
      env=jax_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )  # fmt: skip
    for i in range(2)
  ]
  try:
    outputs = [p.communicate(timeout=120)[0] for p in processes]
  finally:
    for p in processes:
      p.kill()
  results = []
  for process, output in zip(processes, outputs, strict=True):
    assert process.returncode == 0, output
    line = next(x for x in output.splitlines() if x.startswith("RESULT "))
    results.append(json.loads(line.removeprefix("RESULT ")))
  assert all(r["same"] for r in results)
  sampler = BatchSampler(64, 16, seed=3)
  for strategy in range(2):
    for step in range(4):
      shares = [
        r["read"][(strategy * 4 + step) * 8 : (strategy * 4 + step + 1) * 8] for r in results
      ]
      assert len(shares[0]) == len(shares[1]) == 8
      assert not set(shares[0]) & set(shares[1])
      assert shares[0] + shares[1] == sampler.indices(step).tolist()
  assert [len(r["read"]) for r in results] == [64, 64]  # 2 strategies x 4 steps x 8 rows each
