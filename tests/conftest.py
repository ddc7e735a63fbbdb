"""Test setup: 8 virtual CPU devices (set before JAX is imported) and shared fixtures."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Enough XLA:CPU threads for 8 virtual devices on a 2-core machine: with the default pool (sized
# by the core count) a collective can wait forever for a device whose program is queued behind
# the others, and XLA aborts the process after 40 s (see jaxvision.parallel.ensure_cpu_threads).
os.environ.setdefault("PJRT_NPROC", "16")
# Generated data sets are cached (jaxvision.data.cache): in the tests, under the temp folder.
os.environ.setdefault(
  "JAXVISION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"jaxvision-test-cache-{os.getuid()}")
)

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def mnist_dir() -> pathlib.Path:
  """The offline MNIST IDX folder: $JAXVISION_MNIST_DIR, else ../shared/data/mnist."""
  return pathlib.Path(os.environ.get("JAXVISION_MNIST_DIR", REPO.parent / "shared/data/mnist"))


@pytest.fixture
def mnist_path() -> pathlib.Path:
  path = mnist_dir()
  if not all((path / f).is_file() for f in MNIST_FILES):
    pytest.skip(f"offline MNIST IDX files not found in {path} (set JAXVISION_MNIST_DIR)")
  return path
