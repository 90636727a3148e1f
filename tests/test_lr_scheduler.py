"""Learning-rate schedules: closed-form values, per-group base rates, driving the optimizer, resuming."""
import math

import numpy as np
import pytest

import minigrad
import optim
from minigrad import nn
from optim.lr_scheduler import ConstantLR, StepLR, WarmupCosineLR


def sgd(*lrs):
    """SGD over one scalar parameter per group, group i at rate lrs[i]."""
    return optim.SGD([{"params": [nn.Parameter(np.zeros(1))], "lr": lr} for lr in lrs])


def rates(schedule, steps):
    """The first group's rate at iterations 0 .. steps-1."""
    found = []
    for _ in range(steps):
        found.append(schedule.optimizer.param_groups[0]["lr"])
        schedule.step()
    return found


# base 1, warm-up from 0.1 over 10 iterations, cosine down to 0.01 at iteration 110.
WARMUP_COSINE = [
    (0, 0.1), (5, 0.55), (9, 0.91), (10, 1.0),
    (35, 0.01 + 0.495 * (1 + math.sqrt(0.5))),  # a quarter of the way: cos(pi/4)
    (60, 0.505),  # half way: cos(pi/2) = 0
    (85, 0.01 + 0.495 * (1 - math.sqrt(0.5))),
    (110, 0.01), (111, 0.01), (300, 0.01),
]


def test_warmup_cosine_closed_form():
    schedule = WarmupCosineLR(sgd(1.0), total_steps=110, warmup_steps=10, warmup_lr=0.1, min_lr=0.01)
    found = rates(schedule, 301)
    for step, expected in WARMUP_COSINE:
        assert found[step] == pytest.approx(expected, rel=1e-14), step


def test_warmup_cosine_without_warmup_starts_at_the_base_rate():
    schedule = WarmupCosineLR(sgd(0.5), total_steps=4)
    expected = [0.5, 0.25 * (1 + math.sqrt(0.5)), 0.25, 0.25 * (1 - math.sqrt(0.5)), 0.0, 0.0]
    assert rates(schedule, 6) == pytest.approx(expected, rel=1e-14, abs=1e-17)


def test_warmup_cosine_with_warmup_over_the_whole_run():
    """warmup_steps == total_steps (the training script clips the warm-up to the run): a linear
    warm-up, then min_lr from total_steps on, as with any other warm-up."""
    schedule = WarmupCosineLR(sgd(1.0), total_steps=4, warmup_steps=4, warmup_lr=0.2, min_lr=0.05)
    assert rates(schedule, 7) == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.05, 0.05, 0.05], rel=1e-14)


def test_constant_lr():
    schedule = ConstantLR(sgd(0.3))
    assert rates(schedule, 5) == [0.3] * 5 and schedule.get_last_lr() == [0.3]


def test_step_lr():
    schedule = StepLR(sgd(1.0), step_size=3, gamma=0.5)
    assert rates(schedule, 9) == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]


def test_step_lr_default_gamma_is_torchs_tenth():
    assert rates(StepLR(sgd(1.0), step_size=2), 6) == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01], rel=1e-14)


@pytest.mark.parametrize("make", [
    lambda optimizer: WarmupCosineLR(optimizer, total_steps=5, warmup_steps=6),
    lambda optimizer: WarmupCosineLR(optimizer, total_steps=5, warmup_steps=-1),
    lambda optimizer: StepLR(optimizer, step_size=0),
])
def test_bad_schedules_raise_value_error(make):
    with pytest.raises(ValueError):
        make(sgd(1.0))


def test_each_group_keeps_its_own_base_rate():
    optimizer = sgd(1.0, 0.2)
    schedule = WarmupCosineLR(optimizer, total_steps=20, warmup_steps=5, min_lr=0.0)
    assert schedule.base_lrs == [1.0, 0.2]
    for _ in range(25):
        first, second = schedule.get_last_lr()
        assert second == pytest.approx(0.2 * first, rel=1e-14, abs=1e-17)
        schedule.step()
    # A schedule made later starts from the groups' initial rates, as torch's does.
    assert StepLR(optimizer, step_size=2).get_last_lr() == [1.0, 0.2]


def test_the_schedule_drives_the_optimizer():
    optimizer = sgd(1.0)
    parameter = optimizer.param_groups[0]["params"][0]
    schedule = StepLR(optimizer, step_size=2, gamma=0.5)
    for _ in range(5):
        parameter.grad = np.ones(1)
        optimizer.step()
        schedule.step()
    assert parameter.data[0] == -(1.0 + 1.0 + 0.5 + 0.5 + 0.25)


def test_resuming_a_schedule(tmp_path):
    def make():
        return WarmupCosineLR(sgd(1.0, 0.1), total_steps=30, warmup_steps=8, warmup_lr=0.01, min_lr=1e-3)

    uninterrupted = make()
    expected = [uninterrupted.get_last_lr()]
    for _ in range(20):
        uninterrupted.step()
        expected.append(uninterrupted.get_last_lr())

    schedule = make()
    for _ in range(11):
        schedule.step()
    minigrad.save({"optimizer": schedule.optimizer.state_dict(), "scheduler": schedule.state_dict()},
                  tmp_path / "schedule.npz")
    checkpoint = minigrad.load(tmp_path / "schedule.npz")
    resumed = make()
    resumed.optimizer.load_state_dict(checkpoint["optimizer"])
    resumed.load_state_dict(checkpoint["scheduler"])
    found = [resumed.get_last_lr()]
    for _ in range(9):
        resumed.step()
        found.append(resumed.get_last_lr())
    assert found == expected[11:]


def test_a_restored_schedule_sets_the_rates_itself():
    """Its state carries the base rates and the iteration: restored over an optimizer made with other
    rates (and no optimizer state loaded), it sets the saved schedule's rates at once and after."""
    def make(*lrs):
        return WarmupCosineLR(sgd(*lrs), total_steps=30, warmup_steps=8, warmup_lr=0.01, min_lr=1e-3)

    saved = make(1.0, 0.1)
    for _ in range(11):
        saved.step()
    resumed = make(0.5, 0.5)
    resumed.load_state_dict(saved.state_dict())
    for _ in range(3):
        assert resumed.get_last_lr() == saved.get_last_lr()
        saved.step()
        resumed.step()
