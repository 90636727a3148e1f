"""Shared fixtures: the device parameter and a fixed seed for every test."""
import pytest

import minigrad
from minigrad import backend


def _skip_without_gpu() -> None:
    if not backend.is_gpu_available():
        pytest.skip(f"no GPU here: {backend.gpu_problem()} On a GPU machine install CuPy; "
                    "elsewhere set MINIGRAD_FAKE_GPU=1 for the stand-in.")


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def device(request) -> str:
    """Run the test on the CPU and on the GPU (real CuPy, or the stand-in with MINIGRAD_FAKE_GPU=1)."""
    if request.param == "gpu":
        _skip_without_gpu()
    return request.param


@pytest.fixture
def gpu() -> str:
    """Device "gpu" for tests that need it beside the CPU; skips where there is none."""
    _skip_without_gpu()
    return "gpu"


@pytest.hookimpl(tryfirst=True)  # before -m selects
def pytest_collection_modifyitems(items):
    """A test that takes the ``gpu`` fixture is marked ``gpu`` even where its mark was forgotten:
    unmarked, it would run in neither CI pass (skipped without a GPU, deselected by -m gpu)."""
    for item in items:
        if "gpu" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.gpu)


@pytest.fixture(autouse=True)
def _seed():
    minigrad.manual_seed(0)
