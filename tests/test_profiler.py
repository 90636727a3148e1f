"""minigrad.profile(): per op and phase, calls, array operations (on the stand-in GPU) and time."""
import numpy as np
import pytest

import minigrad
import optim
from minigrad import backend, nn, profiler
from minigrad import functional as F
from minigrad.testing import fake_gpu


def two_layers(device):
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3)).to(device)
    images = backend.to_device(np.random.default_rng(0).random((5, 4), dtype=np.float32), device)
    labels = backend.to_device(np.array([0, 1, 2, 1, 0]), device)
    return model, images, labels


def train_step(model, optimizer, images, labels):
    loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optim.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def test_every_op_is_recorded_in_its_phase(device):
    model, images, labels = two_layers(device)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    with minigrad.profile() as prof:
        train_step(model, optimizer, images, labels)
    calls = {key: row.calls for key, row in prof.rows.items()}
    assert calls[("Linear", "forward")] == calls[("Linear", "backward")] == 2
    assert calls[("GELU", "forward")] == calls[("GELU", "backward")] == 1
    assert calls[("CrossEntropy", "forward")] == 1
    assert calls[("AccumulateGrad", "backward")] == 4  # two weights, two biases
    assert calls[("SGD.step", "optimizer")] == 1 and calls[("clip_grad_norm_", "clipping")] == 1
    assert all(row.seconds >= 0 for row in prof.rows.values())
    totals = prof.totals()
    assert sum(totals[phase]["seconds"] for phase in profiler.PHASES) <= totals["total"]["seconds"]
    if device == "gpu" and not backend.fake_gpu_enabled():  # timed by CUDA events, the total too
        assert totals["total"]["seconds"] == prof.gpu_seconds > 0
    else:
        assert prof.gpu_seconds is None and totals["total"]["seconds"] == prof.wall_seconds


def test_the_table_names_each_op_and_totals_each_phase(device):
    model, images, labels = two_layers(device)
    optimizer = optim.Adam(model.parameters())
    with minigrad.profile() as prof:
        train_step(model, optimizer, images, labels)
    table = prof.table()
    lines = table.splitlines()
    assert lines[0].split() == ["op", "phase", "calls", "array", "ops", "time", "ms", "share"]
    assert any(line.split()[:3] == ["Linear", "forward", "2"] for line in lines)
    assert any(line.split()[:3] == ["Adam.step", "optimizer", "1"] for line in lines)
    for phase in profiler.PHASES + ("other", "total"):
        assert any(line.split()[:1] == [phase] for line in lines), phase
    assert len(prof.table(limit=2).splitlines()) < len(lines) and "more" in prof.table(limit=2)


@pytest.mark.gpu
def test_array_operations_are_counted_on_the_stand_in(monkeypatch):
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "1")
    model, images, labels = two_layers("gpu")
    optimizer = optim.Adam(model.parameters())
    before = fake_gpu.operation_count.count
    with minigrad.profile() as prof:
        train_step(model, optimizer, images, labels)
    counted = fake_gpu.operation_count.count - before
    totals = prof.totals()
    assert totals["total"]["operations"] == counted > 0
    assert sum(totals[phase]["operations"] for phase in profiler.PHASES + ("other",)) == counted
    assert prof.rows["GELU", "forward"].operations > 0
    assert "counted on the stand-in GPU" in prof.table()


def test_on_real_devices_array_operations_show_a_dash(monkeypatch):
    monkeypatch.delenv("MINIGRAD_FAKE_GPU", raising=False)
    model, images, labels = two_layers("cpu")
    with minigrad.profile() as prof:
        model(images)
    assert prof.total_operations is None
    assert prof.table().splitlines()[1].split()[3] == "-"


def test_profiles_do_not_nest_and_nothing_is_recorded_outside_one():
    with minigrad.profile():
        with pytest.raises(RuntimeError, match="do not nest"):
            with minigrad.profile():
                pass
    assert profiler._active is None
    assert profiler.measured("Anything", "forward", lambda x: x + 1, 1) == 2  # runs, records nothing


def test_a_failing_block_still_ends_the_profile():
    with pytest.raises(ZeroDivisionError):
        with minigrad.profile():
            1 / 0
    assert profiler._active is None
