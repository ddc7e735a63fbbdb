"""Test setup: 8 virtual CPU devices (set before JAX is imported) and shared fixtures."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
