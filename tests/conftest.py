"""Shared fixtures (the device parameter, a fixed seed for every test) and the report's header
(which GPU the tests run on) and summary (what was skipped, grouped by reason)."""
import collections

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


def pytest_report_header(config) -> str:
    if backend.fake_gpu_enabled():
        from minigrad.testing import fake_gpu

        return f"device 'gpu': the stand-in (MINIGRAD_FAKE_GPU=1), playing {fake_gpu.truth_source()}"
    problem = backend.gpu_problem()
    return f"device 'gpu': {'CuPy on a real GPU' if problem is None else 'none (' + problem + ')'}"


def pytest_terminal_summary(terminalreporter) -> None:
    """One line per reason for skipping, with how many tests it skipped, instead of a line per
    test (-rs): a run without a GPU skips hundreds for the same reason."""
    skipped = terminalreporter.stats.get("skipped", [])
    reasons = collections.Counter(_skip_reason(report) for report in skipped)
    if reasons:
        terminalreporter.section(f"{len(skipped)} skipped, by reason")
        for reason, count in reasons.most_common():
            terminalreporter.write_line(f"{count:5d}  {reason}")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")
