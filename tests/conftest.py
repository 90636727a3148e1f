"""Shared fixtures: the device parameter and a fixed seed for every test."""
import pytest

import minigrad
from minigrad import backend


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def device(request) -> str:
    """Run the test on the CPU and on the GPU (real CuPy, or the stand-in with MINIGRAD_FAKE_GPU=1)."""
    if request.param == "gpu" and not backend.is_gpu_available():
        pytest.skip("no GPU here: install CuPy on a GPU machine, or set MINIGRAD_FAKE_GPU=1 for the stand-in")
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    minigrad.manual_seed(0)
