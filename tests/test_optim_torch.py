"""Our optimizers and gradient clipping against PyTorch's, step for step, in float64 (skipped
without torch)."""
import inspect

import numpy as np
import pytest

import optim
from minigrad import nn

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

STEPS = 60
SHAPES = [(3, 4), (5,), (2, 2, 3), ()]


def objective_grad(p):
    """Gradient of sum(0.75 (p - 0.3)^2 + sin(3 p) / 3), an array also where p is 0-d."""
    return np.asarray(1.5 * (p - 0.3) + np.cos(3.0 * p))


CASES = [
    ("SGD", dict(lr=0.03)),
    ("SGD", dict(lr=0.03, momentum=0.9)),
    ("SGD", dict(lr=0.03, momentum=0.9, dampening=0.3, weight_decay=0.1)),
    ("SGD", dict(lr=0.03, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, betas=(0.9, 0.99))),
    ("Adam", dict(lr=0.05, betas=(0.9, 0.99), weight_decay=0.1)),
    ("Adam", dict(lr=0.05, betas=(0.9, 0.99), amsgrad=True)),
    ("Adam", dict(lr=0.05, betas=(0.9, 0.99), weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.05)),
    ("AdamW", dict(lr=0.05, betas=(0.9, 0.99), weight_decay=0.1, amsgrad=True)),
    ("RAdam", dict(lr=0.05)),
    ("RAdam", dict(lr=0.05, weight_decay=0.1)),
    ("RAdam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)),
    ("RAdam", dict(lr=0.05, betas=(0.9, 0.6))),
    ("RAdam", dict(lr=0.05, betas=(0.9, 0.8397685748659791))),  # rho_6 is exactly 5.0: step 6 not rectified
    ("SGD", dict(lr=0.03, momentum=0.9, weight_decay=0.1, maximize=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1, amsgrad=True, maximize=True)),
    ("AdamW", dict(lr=0.05, maximize=True)),
    ("RAdam", dict(lr=0.05, weight_decay=0.1, maximize=True)),
    ("RAdam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
]


@pytest.mark.parametrize("name, settings", CASES, ids=[f"{name}-{i}" for i, (name, _) in enumerate(CASES)])
def test_optimizer_matches_torch(name, settings):
    rng = np.random.default_rng(0)
    starts = [rng.uniform(-2.0, 2.0, shape) for shape in SHAPES]
    ours = [nn.Parameter(start.copy()) for start in starts]
    theirs = [torch.tensor(start, dtype=torch.float64, requires_grad=True) for start in starts]
    our_optimizer = getattr(optim, name)(ours, **settings)
    their_optimizer = getattr(torch.optim, name)(theirs, **settings)
    worst = 0.0
    for _ in range(STEPS):
        for our, their in zip(ours, theirs):
            our.grad = objective_grad(our.data)
            their.grad = torch.from_numpy(objective_grad(their.detach().numpy()))
        our_optimizer.step()
        their_optimizer.step()
        worst = max(worst, *(np.abs(our.data - their.detach().numpy()).max() for our, their in zip(ours, theirs)))
    assert worst < 1e-10


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RAdam"])
def test_arguments_have_torchs_names_order_and_defaults(name):
    """Positional arguments in torch's order, so torch-style calls mean the same here; keyword-only
    ones a subset of torch's (the rest, foreach, fused, ..., choose torch kernels)."""
    ours = inspect.signature(getattr(optim, name)).parameters.values()
    theirs = inspect.signature(getattr(torch.optim, name)).parameters
    positional = [(p.name, p.default) for p in ours if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert positional == [(p.name, p.default) for p in theirs.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
    for parameter in ours:
        if parameter.kind == parameter.KEYWORD_ONLY:
            assert theirs[parameter.name].kind == parameter.KEYWORD_ONLY
            assert theirs[parameter.name].default == parameter.default


def test_state_dict_numbers_parameters_and_keys_state_as_torchs():
    """Groups [a, b] and [c], a step in which b has no gradient: the same numbers, the same state keys."""
    ours = [nn.Parameter(np.ones(shape)) for shape in SHAPES]
    theirs = [torch.ones(shape, dtype=torch.float64, requires_grad=True) for shape in SHAPES]
    our_optimizer = optim.Adam([{"params": ours[:2]}, {"params": ours[2:], "lr": 0.1}])
    their_optimizer = torch.optim.Adam([{"params": theirs[:2]}, {"params": theirs[2:], "lr": 0.1}])
    for our, their in [(ours[0], theirs[0]), (ours[2], theirs[2])]:
        our.grad, their.grad = np.ones(our.shape), torch.ones(their.shape, dtype=torch.float64)
    our_optimizer.step()
    their_optimizer.step()
    our_state, their_state = our_optimizer.state_dict(), their_optimizer.state_dict()
    assert [g["params"] for g in our_state["param_groups"]] == [g["params"] for g in their_state["param_groups"]]
    assert our_state["state"].keys() == their_state["state"].keys()
    for key, state in their_state["state"].items():
        assert our_state["state"][key].keys() == state.keys()
        np.testing.assert_array_equal(our_state["state"][key]["exp_avg_sq"], state["exp_avg_sq"].numpy())


def test_clip_grad_norm_takes_torchs_positional_arguments():
    ours = [p.name for p in inspect.signature(optim.clip_grad_norm_).parameters.values()
            if p.kind == p.POSITIONAL_OR_KEYWORD]
    theirs = list(inspect.signature(torch.nn.utils.clip_grad_norm_).parameters)
    assert ours == theirs[:len(ours)]


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_matches_torch(max_norm):
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(shape) for shape in SHAPES]
    ours = [nn.Parameter(np.zeros(shape)) for shape in SHAPES]
    theirs = [torch.zeros(shape, dtype=torch.float64, requires_grad=True) for shape in SHAPES]
    for our, their, grad in zip(ours, theirs, grads):
        our.grad, their.grad = grad.copy(), torch.from_numpy(grad.copy())
    our_norm = optim.clip_grad_norm_(ours, max_norm)
    their_norm = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert abs(our_norm.item() - their_norm.item()) < 1e-10
    for our, their in zip(ours, theirs):
        assert np.abs(our.grad - their.grad.numpy()).max() < 1e-10


@pytest.mark.parametrize("bad, max_norm", [(np.inf, 1.0), (-np.inf, 1.0), (np.nan, 1.0), (0.0, 0.0)],
                         ids=["inf", "-inf", "nan", "max_norm-0"])
def test_clip_grad_norm_of_non_finite_gradients_or_to_zero_is_torchs(bad, max_norm):
    grads = [np.array([3.0, bad]), np.array([[4.0]])]
    ours = [nn.Parameter(np.zeros(grad.shape)) for grad in grads]
    theirs = [torch.zeros(grad.shape, dtype=torch.float64, requires_grad=True) for grad in grads]
    for our, their, grad in zip(ours, theirs, grads):
        our.grad, their.grad = grad.copy(), torch.from_numpy(grad.copy())
    with np.errstate(invalid="ignore"):
        our_norm = optim.clip_grad_norm_(ours, max_norm)
    their_norm = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    np.testing.assert_array_equal(our_norm.item(), their_norm.item())
    for our, their in zip(ours, theirs):
        np.testing.assert_array_equal(our.grad, their.grad.numpy())
