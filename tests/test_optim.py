"""SGD, Adam, AdamW and RAdam against straight-line NumPy versions of the papers' algorithms
(written here, independent of ``optim``), in float64 where they must agree to rounding; then
parameter groups, saving and resuming, the GPU path, and gradient clipping."""
import math

import numpy as np
import pytest

import minigrad
import optim
from minigrad import backend, nn
from optim.radam import rectification, rho

STEPS = 60
START = np.array([1.3, -0.7, 0.2, 2.1, -1.8, 0.9, -0.4])
TARGET = np.linspace(-1.0, 1.0, 7)
CURVATURE = np.linspace(0.5, 4.0, 7)
TIGHT = dict(rtol=1e-12, atol=0)
ADAM_BETAS = (0.9, 0.99)  # beta2 low enough that v falls within the run, so AMSGrad's maximum matters


def objective_grad(p):
    """Gradient of sum(curvature / 2 * (p - target)^2 + sin(3 p) / 3): a bumpy quadratic."""
    return CURVATURE * (p - TARGET) + np.cos(3.0 * p)


def run(make_optimizer, steps=STEPS, make_schedule=None):
    """Trajectory of ``optim`` on the objective, one row per step (and a schedule step after each)."""
    parameter = nn.Parameter(START.copy())
    optimizer = make_optimizer([parameter])
    schedule = make_schedule(optimizer) if make_schedule else None
    path = []
    for _ in range(steps):
        parameter.grad = objective_grad(parameter.data)
        optimizer.step()
        if schedule:
            schedule.step()
        path.append(parameter.data.copy())
    return np.array(path)


# ---- the papers, one loop each


def sgd_reference(lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, steps=STEPS):
    p, buffer, path = START.copy(), None, []
    for _ in range(steps):
        g = objective_grad(p) + weight_decay * p
        if momentum:
            buffer = g if buffer is None else momentum * buffer + (1 - dampening) * g
            g = g + momentum * buffer if nesterov else buffer
        p = p - lr * g
        path.append(p)
    return np.array(path)


def rates_per_step(lr, steps):
    """One rate per step: ``lr`` repeated, or ``lr`` itself where it already is one rate per step (a schedule's)."""
    return list(lr) if np.ndim(lr) else [lr] * steps


def adam_reference(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False,
                   steps=STEPS):
    """Kingma & Ba, Algorithm 1, with torch's eps placement, L2 or decoupled decay, and AMSGrad."""
    beta1, beta2 = betas
    p = START.copy()
    m, v, v_max, path = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p), []
    for t, lr in enumerate(rates_per_step(lr, steps), start=1):
        g = objective_grad(p)
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_max = np.maximum(v_max, v)
        second = v_max if amsgrad else v
        p = p - lr / (1 - beta1**t) * m / (np.sqrt(second) / np.sqrt(1 - beta2**t) + eps)
        path.append(p)
    return np.array(path)


def radam_reference(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False, steps=STEPS):
    """Liu et al. 2019, Algorithm 2, with torch's eps placement when rectifying."""
    beta1, beta2 = betas
    rho_inf = 2 / (1 - beta2) - 1
    p = START.copy()
    m, v, path = np.zeros_like(p), np.zeros_like(p), []
    for t, lr in enumerate(rates_per_step(lr, steps), start=1):
        g = objective_grad(p)
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        rho_t = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
        if rho_t > 5:
            r_t = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            p = p - lr * m_hat * r_t * math.sqrt(1 - beta2**t) / (np.sqrt(v) + eps)
        else:
            p = p - lr * m_hat
        path.append(p)
    return np.array(path)


# ---- each optimizer against its paper


SGD_SETTINGS = [dict(), dict(momentum=0.9), dict(momentum=0.9, dampening=0.5), dict(momentum=0.9, nesterov=True)]


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("settings", SGD_SETTINGS, ids=["plain", "momentum", "dampening", "nesterov"])
def test_sgd_matches_reference(settings, weight_decay):
    ours = run(lambda params: optim.SGD(params, lr=0.03, weight_decay=weight_decay, **settings))
    np.testing.assert_allclose(ours, sgd_reference(0.03, weight_decay=weight_decay, **settings), **TIGHT)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_matches_reference(amsgrad, weight_decay):
    ours = run(lambda params: optim.Adam(params, lr=0.05, betas=ADAM_BETAS, weight_decay=weight_decay,
                                         amsgrad=amsgrad))
    expected = adam_reference(0.05, ADAM_BETAS, weight_decay=weight_decay, amsgrad=amsgrad)
    np.testing.assert_allclose(ours, expected, **TIGHT)


def test_amsgrad_takes_a_different_path_here():
    """Guards the AMSGrad cases: on this objective v falls, so its running maximum matters."""
    assert np.abs(adam_reference(0.05, ADAM_BETAS, amsgrad=True) - adam_reference(0.05, ADAM_BETAS)).max() > 1e-2


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01, 0.5])
def test_adamw_matches_reference(weight_decay, amsgrad):
    ours = run(lambda params: optim.AdamW(params, lr=0.05, betas=ADAM_BETAS, weight_decay=weight_decay,
                                          amsgrad=amsgrad))
    expected = adam_reference(0.05, ADAM_BETAS, weight_decay=weight_decay, amsgrad=amsgrad, decoupled=True)
    np.testing.assert_allclose(ours, expected, **TIGHT)


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_radam_matches_reference_across_the_switch_over(weight_decay, decoupled):
    ours = run(lambda params: optim.RAdam(params, lr=0.05, weight_decay=weight_decay,
                                          decoupled_weight_decay=decoupled))
    expected = radam_reference(0.05, weight_decay=weight_decay, decoupled=decoupled)
    np.testing.assert_allclose(ours, expected, **TIGHT)


def test_radam_first_adaptive_step_with_beta2_0_999_is_6():
    beta2 = 0.999
    rho_inf = 2 / (1 - beta2) - 1
    for t in range(1, 50):
        assert rho(t, beta2) == pytest.approx(rho_inf - 2 * t * beta2**t / (1 - beta2**t), rel=1e-14)
    assert rho(5, beta2) == pytest.approx(4.995998, abs=1e-6)
    assert rho(6, beta2) == pytest.approx(5.994164, abs=1e-6)
    assert [t for t in range(1, 50) if rectification(t, beta2) is not None][0] == 6
    rho_6 = rho(6, beta2)
    r_6 = math.sqrt((rho_6 - 4) * (rho_6 - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_6))
    assert rectification(6, beta2) == pytest.approx(r_6, rel=1e-14)


def test_radam_does_not_rectify_where_rho_t_is_exactly_5():
    """The rule is rho_t > 5 (the paper's, and torch's ``rho_t > 5.0``): with this beta2, rho_6 comes out
    exactly 5.0 in float64, so step 6 still takes the un-adapted step and step 7 is the first adaptive one."""
    beta2 = 0.8397685748659791
    assert rho(6, beta2) == 5.0 and rho(7, beta2) > 5.0
    assert rectification(6, beta2) is None and rectification(7, beta2) is not None
    ours = run(lambda params: optim.RAdam(params, lr=0.05, betas=(0.9, beta2)), steps=8)
    np.testing.assert_allclose(ours, radam_reference(0.05, betas=(0.9, beta2), steps=8), **TIGHT)


def test_radam_with_beta2_0_6_never_rectifies():
    """The lab's claim: rho_inf = 4 < 5, so RAdam is SGD with bias-corrected momentum for ever."""
    assert all(rho(t, 0.6) < 5 and rectification(t, 0.6) is None for t in range(1, 10_001))
    beta1, lr, p, m, expected = 0.9, 0.05, START.copy(), np.zeros_like(START), []
    for t in range(1, STEPS + 1):
        m = beta1 * m + (1 - beta1) * objective_grad(p)
        p = p - lr * m / (1 - beta1**t)
        expected.append(p)
    ours = run(lambda params: optim.RAdam(params, lr=lr, betas=(beta1, 0.6)))
    np.testing.assert_allclose(ours, np.array(expected), **TIGHT)


# ---- parameter groups


def test_each_group_uses_its_own_settings():
    a, b = nn.Parameter(START.copy()), nn.Parameter(START.copy())
    optimizer = optim.AdamW([{"params": [a], "lr": 0.05, "weight_decay": 0.1}, {"params": [b]}],
                            lr=0.02, weight_decay=0.0)
    assert optimizer.param_groups[1]["lr"] == 0.02 and optimizer.param_groups[1]["betas"] == (0.9, 0.999)
    for _ in range(STEPS):
        a.grad, b.grad = objective_grad(a.data), objective_grad(b.data)
        optimizer.step()
    np.testing.assert_allclose(a.data, adam_reference(0.05, weight_decay=0.1, decoupled=True)[-1], **TIGHT)
    np.testing.assert_allclose(b.data, adam_reference(0.02)[-1], **TIGHT)


GROUP_SETTINGS = [
    ("SGD", dict(lr=0.03), dict(momentum=0.9)),
    ("SGD", dict(lr=0.03, momentum=0.9), dict(nesterov=True)),
    ("SGD", dict(lr=0.03, momentum=0.9), dict(dampening=0.5)),
    ("SGD", dict(lr=0.03), dict(maximize=True)),
    ("Adam", dict(lr=0.05), dict(betas=ADAM_BETAS)),
    ("Adam", dict(lr=0.05), dict(eps=0.1)),
    ("Adam", dict(lr=0.05, betas=ADAM_BETAS), dict(amsgrad=True)),
    ("AdamW", dict(lr=0.05, betas=ADAM_BETAS), dict(amsgrad=True)),
    ("RAdam", dict(lr=0.05), dict(betas=(0.9, 0.6))),
    ("RAdam", dict(lr=0.05), dict(eps=0.1)),
    ("RAdam", dict(lr=0.05, weight_decay=0.1), dict(decoupled_weight_decay=True)),
    # the no-decay group of weight_decay_groups, under optimizers whose default decays
    ("SGD", dict(lr=0.03, weight_decay=0.3), dict(weight_decay=0.0)),
    ("Adam", dict(lr=0.05, weight_decay=0.3), dict(weight_decay=0.0)),
    ("AdamW", dict(lr=0.05, weight_decay=0.3), dict(weight_decay=0.0)),
    ("RAdam", dict(lr=0.05, weight_decay=0.3, decoupled_weight_decay=True), dict(weight_decay=0.0)),
]


@pytest.mark.parametrize("name, defaults, setting", GROUP_SETTINGS,
                         ids=[f"{name}-{next(iter(setting))}" for name, _, setting in GROUP_SETTINGS])
def test_a_setting_given_to_a_group_is_the_one_it_steps_with(name, defaults, setting):
    """Every setting is read from the parameter's group: set there, it acts as if given to the optimizer."""
    make = getattr(optim, name)
    in_its_group = run(lambda params: make([{"params": params, **setting}], **defaults))
    for_all = run(lambda params: make(params, **{**defaults, **setting}))
    np.testing.assert_array_equal(in_its_group, for_all)
    assert np.abs(for_all - run(lambda params: make(params, **defaults))).max() > 1e-3  # the setting matters here


@pytest.mark.parametrize("name", ["AdamW", "RAdam"])
def test_decoupled_decay_shrinks_by_the_scheduled_rate(name):
    """p <- p (1 - lr wd) with the lr of this step, as the schedule set it, not the rate the run began with."""
    def make(params):
        if name == "AdamW":
            return optim.AdamW(params, lr=0.05, weight_decay=0.5)
        return optim.RAdam(params, lr=0.05, weight_decay=0.5, decoupled_weight_decay=True)

    ours = run(make, make_schedule=lambda optimizer: optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9))
    rates = [0.05 * 0.9**k for k in range(STEPS)]
    reference = adam_reference if name == "AdamW" else radam_reference
    np.testing.assert_allclose(ours, reference(rates, weight_decay=0.5, decoupled=True), **TIGHT)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(4, 12)
        self.relative_position_bias_table = nn.Parameter(np.zeros((9, 2), dtype=np.float32))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(4)
        self.attn = Attention()
        self.shift = nn.Module()
        self.shift.bias = nn.Parameter(np.zeros((2, 4, 1), dtype=np.float32))  # 3-D, skipped by its name
        self.head = nn.Linear(4, 3, bias=False)
        self.bias_gate = nn.Linear(4, 4, bias=False)  # "bias" in its name, but a weight: it decays
        self.absolute_pos_embed = nn.Parameter(np.zeros((1, 5, 4), dtype=np.float32))  # Swin's ape, 3-D
        self.temperature = nn.Parameter(np.array(1.0, dtype=np.float32))  # 0-d: spared, as timm spares ndim <= 1


def decay_and_no_decay_names(model, **skip):
    names = {id(p): name for name, p in model.named_parameters()}
    decay, no_decay = optim.weight_decay_groups(model, 0.3, **skip)
    assert decay["weight_decay"] == 0.3 and no_decay["weight_decay"] == 0.0
    return sorted(names[id(p)] for p in decay["params"]), sorted(names[id(p)] for p in no_decay["params"])


def test_weight_decay_groups_spare_biases_norms_bias_tables_and_position_embedding():
    assert decay_and_no_decay_names(Block()) == (
        ["attn.qkv.weight", "bias_gate.weight", "head.weight"],
        ["absolute_pos_embed", "attn.qkv.bias", "attn.relative_position_bias_table", "norm.bias", "norm.weight",
         "shift.bias", "temperature"])
    assert len(optim.AdamW(optim.weight_decay_groups(Block(), 0.05)).param_groups) == 2


def test_weight_decay_groups_skip_every_name_that_contains_a_skip_name():
    """Module names too, as Swin V2's recipe skips its whole ``cpb_mlp``: here all of ``attn`` (and the
    position embedding, no longer named, decays)."""
    decay, no_decay = decay_and_no_decay_names(Block(), skip_names=("attn",))
    assert decay == ["absolute_pos_embed", "bias_gate.weight", "head.weight"]
    assert "attn.qkv.weight" in no_decay


def test_zero_grad_clears_every_gradient():
    a, b = nn.Parameter(START.copy()), nn.Parameter(START.copy())
    optimizer = optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1)
    a.grad, b.grad = objective_grad(a.data), objective_grad(b.data)
    optimizer.zero_grad()
    assert a.grad is None and b.grad is None


def test_zero_grad_can_fill_with_zeros_in_place():
    """... the gradients there are: a parameter without one keeps None (and is skipped by step), as in torch."""
    a, b = nn.Parameter(START.copy()), nn.Parameter(START.copy())
    optimizer = optim.SGD([a, b], lr=0.1)
    a.grad = objective_grad(a.data)
    held = a.grad
    optimizer.zero_grad(set_to_none=False)
    assert a.grad is held and not held.any()
    assert b.grad is None


MAKERS = {"SGD": lambda p, **kw: optim.SGD(p, lr=0.03, momentum=0.9, weight_decay=0.1, **kw),
          "Adam": lambda p, **kw: optim.Adam(p, lr=0.05, weight_decay=0.1, amsgrad=True, **kw),
          "AdamW": lambda p, **kw: optim.AdamW(p, lr=0.05, **kw),
          "RAdam": lambda p, **kw: optim.RAdam(p, lr=0.05, weight_decay=0.1, **kw)}


CLIMBERS = {**MAKERS, "RAdam-decoupled": lambda p, **kw: optim.RAdam(p, lr=0.05, weight_decay=0.1,
                                                                     decoupled_weight_decay=True, **kw)}


@pytest.mark.parametrize("name", CLIMBERS)
def test_maximize_climbs_where_the_negated_objective_descends(name):
    """maximize follows -grad: on f it takes exactly the path that minimising -f takes (the decay,
    L2 or decoupled, still shrinks p)."""
    climber, descender = nn.Parameter(START.copy()), nn.Parameter(START.copy())
    climbing, descending = CLIMBERS[name]([climber], maximize=True), CLIMBERS[name]([descender])
    for _ in range(STEPS):
        climber.grad, descender.grad = -objective_grad(climber.data), objective_grad(descender.data)
        climbing.step()
        descending.step()
    np.testing.assert_array_equal(climber.data, descender.data)
    assert not np.array_equal(climber.data, START)


UNTOUCHED = {**MAKERS, "SGD-momentum-only": lambda p, **kw: optim.SGD(p, lr=0.03, momentum=0.9, **kw)}


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("name", UNTOUCHED)
def test_step_never_writes_into_the_gradients(name, maximize):
    """The gradients stay the caller's (logged, compared, reused): no step changes one, nor keeps it as state."""
    parameter = nn.Parameter(START.copy())
    optimizer = UNTOUCHED[name]([parameter], maximize=maximize)
    given = []
    for _ in range(3):
        parameter.grad = objective_grad(parameter.data)
        given.append((parameter.grad, parameter.grad.copy()))
        optimizer.step()
    for grad, original in given:
        np.testing.assert_array_equal(grad, original)


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("name", UNTOUCHED)
def test_0d_parameters_step_as_the_elements_of_a_vector_do(name, maximize):
    """As torch steps them (a learnt temperature, say): each 0-d parameter takes its element's path.
    (NumPy gives a scalar, not a 0-d array, for -grad or grad + wd p: it must not end up as state.)"""
    scalars = [nn.Parameter(np.array(x)) for x in START]
    optimizer = UNTOUCHED[name](scalars, maximize=maximize)
    path = []
    for _ in range(STEPS):
        for scalar, grad in zip(scalars, objective_grad(np.array([scalar.data for scalar in scalars]))):
            scalar.grad = np.array(grad)
        optimizer.step()
        path.append([scalar.data.item() for scalar in scalars])
    assert all(type(scalar.data) is np.ndarray and scalar.shape == () for scalar in scalars)
    np.testing.assert_array_equal(np.array(path), run(lambda params: UNTOUCHED[name](params, maximize=maximize)))


def test_sgd_momentum_survives_zero_grad_in_place():
    """zero_grad(set_to_none=False) zeroes the gradient arrays: the momentum buffer must not be one of them."""
    paths = []
    for set_to_none in (True, False):
        model = make_model(0)
        optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for step in range(3):
            x, y = batch(step, "cpu", np.float64)
            optimizer.zero_grad(set_to_none=set_to_none)
            ((model(x) - y) ** 2).mean().backward()
            optimizer.step()
        paths.append(np.concatenate([p.numpy().ravel() for p in model.parameters()]))
    np.testing.assert_array_equal(paths[1], paths[0])


@pytest.mark.parametrize("name", MAKERS)
def test_named_parameters_train_as_the_parameters_do(name):
    models = [make_model(0), make_model(0)]
    optimizers = [MAKERS[name](models[0].parameters()), MAKERS[name](models[1].named_parameters())]
    for model, optimizer in zip(models, optimizers):
        for step in range(3):
            x, y = batch(step, "cpu", np.float64)
            optimizer.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            optimizer.step()
    for ours, theirs in zip(models[0].parameters(), models[1].parameters()):
        np.testing.assert_array_equal(ours.data, theirs.data)


def test_sgd_takes_its_arguments_in_torchs_order():
    group = optim.SGD([nn.Parameter(START.copy())], 0.1, 0.9, 0.0, 1e-4).param_groups[0]
    assert (group["lr"], group["momentum"], group["dampening"], group["weight_decay"], group["nesterov"]) == (
        0.1, 0.9, 0.0, 1e-4, False)


# torch.optim's documented defaults (torch >= 2.2 for SGD's lr), which DESIGN.md promises; the torch
# tests compare the signatures themselves, these hold where torch is not installed.
TORCH_DEFAULTS = {
    "SGD": dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False),
    "Adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False),
    "AdamW": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False),
    "RAdam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
                  maximize=False),
}


@pytest.mark.parametrize("name", TORCH_DEFAULTS)
def test_defaults_are_torchs(name):
    group = getattr(optim, name)([nn.Parameter(START.copy())]).param_groups[0]
    assert {key: group[key] for key in TORCH_DEFAULTS[name]} == TORCH_DEFAULTS[name]
    assert set(group) == set(TORCH_DEFAULTS[name]) | {"params"}


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RAdam"])
def test_zero_lr_is_accepted_and_moves_nothing(name):
    """As torch allows: a warm-up may start from 0."""
    parameter = nn.Parameter(START.copy())
    optimizer = getattr(optim, name)([parameter], lr=0.0, weight_decay=0.1)
    for _ in range(3):
        parameter.grad = objective_grad(parameter.data)
        optimizer.step()
    np.testing.assert_array_equal(parameter.data, START)


@pytest.mark.parametrize("make, message", [
    (lambda p: optim.Adam(p), "got a single tensor"),
    (lambda p: optim.SGD([{"params": p}], lr=0.1), "got a single tensor"),
    (lambda p: optim.RAdam([p * 2.0]), "leaf tensors"),
    (lambda p: optim.Adam([START.copy()]), "leaf tensors"),
], ids=["bare tensor", "bare tensor in a group", "not a leaf", "an array"])
def test_what_is_not_a_list_of_parameters_raises_type_error(make, message):
    with pytest.raises(TypeError, match=message):
        make(nn.Parameter(START.copy()))


def test_frozen_parameters_are_taken_and_left_alone():
    """As in fine-tuning with a frozen backbone: requires_grad=False, so backward gives no gradient."""
    frozen, trained = nn.Parameter(START.copy()), nn.Parameter(START.copy())
    frozen.requires_grad = False
    optimizer = optim.AdamW([frozen, trained], lr=0.05)
    trained.grad = objective_grad(trained.data)
    optimizer.step()
    np.testing.assert_array_equal(frozen.data, START)
    assert not np.array_equal(trained.data, START)


def test_a_subclass_without_maximize_in_its_defaults_steps():
    class SignDescent(optim.Optimizer):
        def __init__(self, params, lr):
            super().__init__(params, dict(lr=lr))

        def update(self, parameter, grad, state, group):
            parameter.data -= group["lr"] * np.sign(grad)

    parameter = nn.Parameter(np.array([1.0, -1.0]))
    parameter.grad = np.array([2.0, -3.0])
    SignDescent([parameter], lr=0.5).step()
    np.testing.assert_array_equal(parameter.data, [0.5, -0.5])


def test_parameters_without_grad_are_skipped():
    a, b = nn.Parameter(START.copy()), nn.Parameter(START.copy())
    optimizer = optim.Adam([a, b], lr=0.05)
    a.grad = objective_grad(a.data)
    optimizer.step()
    assert np.array_equal(b.data, START) and b not in optimizer.state
    a.grad, b.grad = None, objective_grad(b.data)
    optimizer.step()
    assert optimizer.state[a]["step"] == 1 and optimizer.state[b]["step"] == 1
    np.testing.assert_allclose(b.data, adam_reference(0.05, steps=1)[0], **TIGHT)
    np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize("make", [
    lambda p: optim.SGD([{"params": p, "betas": (0.9, 0.99)}], lr=0.1),
    lambda p: optim.Adam([{"params": p, "momentum": 0.9}]),
    lambda p: optim.RAdam([{"params": p, "amsgrad": True}]),
    lambda p: optim.SGD([], lr=0.1),
    lambda p: optim.Adam([]),
    lambda p: optim.AdamW(nn.Module().parameters()),
    lambda p: optim.RAdam([]),
    lambda p: optim.SGD([{"params": p}, {"params": p}], lr=0.1),
    lambda p: optim.Adam(p + p),
    lambda p: optim.Adam(p, lr=-1.0),
    lambda p: optim.Adam(p, betas=(0.9, 1.0)),
    lambda p: optim.AdamW(p, betas=(1.0, 0.999)),
    lambda p: optim.RAdam(p, betas=(-0.1, 0.999)),
    lambda p: optim.Adam(p, eps=-1e-8),
    lambda p: optim.RAdam(p, weight_decay=-0.1),
    lambda p: optim.SGD(p, lr=0.1, momentum=-0.9),
    lambda p: optim.SGD(p, lr=0.1, weight_decay=-0.1),
    lambda p: optim.SGD(p, lr=0.1, nesterov=True),
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
], ids=["sgd-unknown", "adam-unknown", "radam-unknown", "sgd-empty", "adam-empty", "adamw-empty-model",
        "radam-empty", "twice", "twice-in-a-group", "negative-lr", "beta2-1", "beta1-1", "negative-beta1",
        "negative-eps", "negative-decay", "sgd-negative-momentum", "sgd-negative-decay", "nesterov-no-momentum",
        "nesterov-dampening"])
def test_bad_settings_raise_value_error(make):
    with pytest.raises(ValueError):
        make([nn.Parameter(START.copy())])


# ---- saving and resuming


def make_model(seed):
    minigrad.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)).to(dtype=np.float64)


def batch(step, device, dtype):
    rng = np.random.default_rng(step)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    return minigrad.tensor(x, device=device, dtype=dtype), minigrad.tensor(y, device=device, dtype=dtype)


RESUMABLE = {
    "sgd-momentum": lambda model: optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3),
    "adam": lambda model: optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3, amsgrad=True),
    "adamw": lambda model: optim.AdamW(optim.weight_decay_groups(model, 0.05), lr=0.01),
    "radam": lambda model: optim.RAdam(model.parameters(), lr=0.01, weight_decay=0.01,
                                       decoupled_weight_decay=True),
}


def make_training(name, model):
    optimizer = RESUMABLE[name](model)
    schedule = optim.lr_scheduler.WarmupCosineLR(optimizer, total_steps=12, warmup_steps=4, warmup_lr=1e-3)
    return optimizer, schedule


def train(model, optimizer, schedule, steps, device="cpu"):
    """Run ``steps`` (their indices pick the batches); return the parameters after each, on the host."""
    path, dtype = [], next(model.parameters()).dtype
    for step in steps:
        x, y = batch(step, device, dtype)
        loss = ((model(x) - y) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        path.append(np.concatenate([p.numpy().ravel() for p in model.parameters()]))
    return np.array(path)


@pytest.mark.parametrize("name", list(RESUMABLE))
def test_resuming_from_a_checkpoint_is_bit_identical(name, tmp_path):
    """Split at step 3 of 12: RAdam's switch to the adaptive rate (t = 6) happens after resuming."""
    model = make_model(0)
    uninterrupted = train(model, *make_training(name, model), range(12))

    model = make_model(0)
    optimizer, schedule = make_training(name, model)
    before = train(model, optimizer, schedule, range(3))
    minigrad.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                   "scheduler": schedule.state_dict()}, tmp_path / "checkpoint.npz")

    checkpoint = minigrad.load(tmp_path / "checkpoint.npz")
    model = make_model(1)
    model.load_state_dict(checkpoint["model"])
    optimizer, schedule = make_training(name, model)
    optimizer.load_state_dict(checkpoint["optimizer"])
    schedule.load_state_dict(checkpoint["scheduler"])
    after = train(model, optimizer, schedule, range(3, 12))
    assert np.array_equal(np.concatenate([before, after]), uninterrupted)


def host_state(optimizer_state):
    return {key: {k: np.array(v) if hasattr(v, "shape") else v for k, v in state.items()}
            for key, state in optimizer_state["state"].items()}


def assert_same_state(found, expected):
    assert found.keys() == expected.keys()
    for key in expected:
        assert found[key].keys() == expected[key].keys()
        for k in expected[key]:
            np.testing.assert_array_equal(found[key][k], expected[key][k])


@pytest.mark.parametrize("name", list(RESUMABLE))
def test_state_dict_is_a_snapshot_and_loading_copies_it(name):
    """Training on after state_dict(), or after loading it elsewhere, leaves the saved state as it was."""
    model = make_model(0)
    optimizer, schedule = make_training(name, model)
    train(model, optimizer, schedule, range(2))
    saved = optimizer.state_dict()
    kept = host_state(saved)
    train(model, optimizer, schedule, range(2, 4))
    assert_same_state(host_state(saved), kept)

    other = make_model(0)
    resumed, schedule = make_training(name, other)
    resumed.load_state_dict(saved)
    train(other, resumed, schedule, range(2, 4))
    assert_same_state(host_state(saved), kept)


@pytest.mark.parametrize("name", list(RESUMABLE))
def test_state_takes_the_parameters_dtype(name):
    """float32 parameters get float32 state, also when it is restored from a float64 run."""
    def state_dtypes(optimizer):
        return {value.dtype for state in optimizer.state.values() for value in state.values()
                if hasattr(value, "shape")}

    model = make_model(0).to(dtype=np.float32)
    optimizer, schedule = make_training(name, model)
    train(model, optimizer, schedule, range(2))
    assert state_dtypes(optimizer) == {np.dtype(np.float32)}

    model64 = make_model(0)
    optimizer64, schedule64 = make_training(name, model64)
    train(model64, optimizer64, schedule64, range(2))
    optimizer.load_state_dict(optimizer64.state_dict())
    assert state_dtypes(optimizer) == {np.dtype(np.float32)}


def test_loading_replaces_the_whole_state():
    """Loading the state of an optimizer that has not stepped yet starts over: the next step is a first one."""
    parameter = nn.Parameter(START.copy())
    optimizer = optim.Adam([parameter], lr=0.05)
    fresh = optimizer.state_dict()
    parameter.grad = objective_grad(parameter.data)
    optimizer.step()
    optimizer.load_state_dict(fresh)
    assert optimizer.state == {}
    parameter.data[...] = START
    optimizer.step()  # the same gradient, at the same point
    np.testing.assert_allclose(parameter.data, adam_reference(0.05, steps=1)[0], **TIGHT)


def test_loading_restores_each_groups_settings():
    a, b = nn.Parameter(START.copy()), nn.Parameter(START.copy())
    saved = optim.Adam([{"params": [a], "lr": 0.05, "betas": (0.8, 0.9)}, {"params": [b], "weight_decay": 0.1}],
                       lr=0.02, amsgrad=True)
    state = saved.state_dict()
    state["param_groups"][0]["betas"] = [0.8, 0.9]  # as a JSON manifest, or torch's own files, may give it
    resumed = optim.Adam([{"params": [a]}, {"params": [b]}], lr=0.3)
    resumed.load_state_dict(state)
    for found, expected in zip(resumed.param_groups, saved.param_groups):
        assert {k: v for k, v in found.items() if k != "params"} == {k: v for k, v in expected.items()
                                                                      if k != "params"}
        assert found["params"][0] is expected["params"][0]
    assert type(resumed.param_groups[0]["betas"]) is tuple


def stepped_in_two_groups():
    """Adam over groups [a, b] and [c] after one step in which b had no gradient."""
    a, b, c = (nn.Parameter(START.copy()) for _ in range(3))
    optimizer = optim.Adam([{"params": [a, b]}, {"params": [c], "lr": 0.05}])
    a.grad, c.grad = objective_grad(a.data), 2.0 * objective_grad(c.data)
    optimizer.step()
    return optimizer, (a, b, c)


def test_state_dict_numbers_parameters_in_group_order_as_torch_does():
    optimizer, (a, b, c) = stepped_in_two_groups()
    saved = optimizer.state_dict()
    assert [group["params"] for group in saved["param_groups"]] == [[0, 1], [2]]
    assert sorted(saved["state"]) == [0, 2]
    np.testing.assert_allclose(saved["state"][0]["exp_avg"], 0.1 * objective_grad(START), **TIGHT)
    np.testing.assert_allclose(saved["state"][2]["exp_avg"], 0.1 * 2.0 * objective_grad(START), **TIGHT)


def test_state_keyed_by_strings_loads_as_when_keyed_by_numbers():
    """A JSON manifest gives the parameter numbers back as strings."""
    optimizer, (a, b, c) = stepped_in_two_groups()
    saved = optimizer.state_dict()
    saved["state"] = {str(key): state for key, state in saved["state"].items()}
    resumed = optim.Adam([{"params": [a, b]}, {"params": [c]}])
    resumed.load_state_dict(saved)
    assert set(resumed.state) == {a, c}
    np.testing.assert_array_equal(resumed.state[c]["exp_avg"], optimizer.state[c]["exp_avg"])


@pytest.mark.parametrize("shape", [(3,), (7, 1)], ids=["other-size", "same-size"])
def test_loading_state_of_another_shape_raises_and_changes_nothing(shape):
    """Refused, the load leaves the optimizer as it was: its own state and settings, ready to go on."""
    a, b = nn.Parameter(START.copy()), nn.Parameter(np.ones(shape))
    saving, loading = optim.Adam([a], lr=0.05), optim.Adam([b], lr=0.01)
    a.grad, b.grad = objective_grad(a.data), np.ones(shape)
    saving.step()
    loading.step()
    kept = host_state(loading.state_dict())
    with pytest.raises(ValueError, match="does not fit"):
        loading.load_state_dict(saving.state_dict())
    assert loading.param_groups[0]["lr"] == 0.01
    assert_same_state(host_state(loading.state_dict()), kept)


OTHER_KINDS = [(saved_by, loaded_by) for saved_by in MAKERS for loaded_by in MAKERS
               if saved_by != loaded_by and {saved_by, loaded_by} != {"Adam", "AdamW"}]


@pytest.mark.parametrize("saved_by, loaded_by", OTHER_KINDS, ids=[f"{a}-into-{b}" for a, b in OTHER_KINDS])
def test_loading_state_of_another_kind_of_optimizer_raises(saved_by, loaded_by):
    """Taken, its settings and state would mix two methods in the next steps. (Adam and AdamW, with the
    same settings and the same state, cannot be told apart, here as in torch.)"""
    parameter = nn.Parameter(START.copy())
    saving = MAKERS[saved_by]([parameter])
    parameter.grad = objective_grad(parameter.data)
    saving.step()
    with pytest.raises(ValueError, match=f"settings .* that {loaded_by} does not take"):
        MAKERS[loaded_by]([parameter]).load_state_dict(saving.state_dict())


def test_loading_state_with_different_groups_raises():
    a, b, c = (nn.Parameter(START.copy()) for _ in range(3))
    saved = optim.Adam([{"params": [a, b]}, {"params": [c]}]).state_dict()
    with pytest.raises(ValueError, match="different parameter groups"):
        optim.Adam([{"params": [a]}, {"params": [b, c]}]).load_state_dict(saved)
    with pytest.raises(ValueError, match="different parameter groups"):
        optim.Adam([a, b, c]).load_state_dict(saved)


# ---- on the GPU


@pytest.mark.parametrize("name", list(RESUMABLE))
def test_optimizers_on_device_follow_the_float64_cpu_run(name, device):
    """float32 on ``device`` against float64 on the CPU, from the same initial weights."""
    model = make_model(0)
    expected = train(model, *make_training(name, model), range(6))
    model = make_model(0).to(device, dtype=np.float32)
    path = train(model, *make_training(name, model), range(6), device)
    assert {p.device for p in model.parameters()} == {device}
    np.testing.assert_allclose(path, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(RESUMABLE))
def test_state_is_saved_on_the_host_and_restored_on_device(name, device, tmp_path):
    model = make_model(0).to(device)
    uninterrupted = train(model, *make_training(name, model), range(8), device)

    model = make_model(0).to(device)
    optimizer, schedule = make_training(name, model)
    before = train(model, optimizer, schedule, range(4), device)
    saved = optimizer.state_dict()
    arrays = [value for state in saved["state"].values() for value in state.values() if hasattr(value, "shape")]
    assert arrays and all(type(array) is np.ndarray for array in arrays)
    minigrad.save({"model": model.state_dict(), "optimizer": saved, "scheduler": schedule.state_dict()},
                  tmp_path / "checkpoint.npz")

    checkpoint = minigrad.load(tmp_path / "checkpoint.npz")
    model = make_model(1).to(device)
    model.load_state_dict(checkpoint["model"])
    optimizer, schedule = make_training(name, model)
    optimizer.load_state_dict(checkpoint["optimizer"])
    schedule.load_state_dict(checkpoint["scheduler"])
    restored = [value for state in optimizer.state.values() for value in state.values() if hasattr(value, "shape")]
    assert restored and {backend.device_of(array) for array in restored} == {device}
    after = train(model, optimizer, schedule, range(4, 8), device)
    assert np.array_equal(np.concatenate([before, after]), uninterrupted)


# ---- gradient clipping (torch.nn.utils.clip_grad_norm_)


def parameters_with_grads(grads, device):
    parameters = []
    for grad in grads:
        parameter = nn.Parameter(minigrad.tensor(np.zeros(1) if grad is None else np.zeros_like(grad), device=device))
        parameter.grad = None if grad is None else backend.to_device(grad.copy(), device)
        parameters.append(parameter)
    return parameters


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_grad_norm_scales_all_gradients_together(device, dtype):
    """The norm comes in the gradients' dtype, as torch's does."""
    grads = [np.array([3.0, 0.0], dtype), np.array([[4.0], [12.0]], dtype), None]  # joint norm 13
    parameters = parameters_with_grads(grads, device)
    norm = optim.clip_grad_norm_(parameters, max_norm=6.5)
    assert isinstance(norm, minigrad.Tensor) and norm.shape == () and norm.dtype == dtype
    assert norm.device == device and norm.item() == 13.0
    for parameter, grad in zip(parameters[:2], grads):
        assert parameter.grad.dtype == dtype
        np.testing.assert_allclose(backend.asnumpy(parameter.grad), grad * (6.5 / (13.0 + 1e-6)),
                                   rtol=np.finfo(dtype).eps)
    assert parameters[2].grad is None


def test_clip_grad_norm_below_max_norm_changes_nothing(device):
    grads = [np.array([3.0, 0.0]), np.array([[4.0], [12.0]])]
    parameters = parameters_with_grads(grads, device)
    assert optim.clip_grad_norm_(parameters, max_norm=13.5).item() == 13.0
    for parameter, grad in zip(parameters, grads):
        assert np.array_equal(backend.asnumpy(parameter.grad), grad)


def test_clip_grad_norm_scales_gradients_of_two_dtypes_together_each_in_its_own(device):
    grads = [np.array([3.0, 4.0], dtype=np.float32), np.array([[12.0]])]  # joint norm 13
    parameters = parameters_with_grads(grads, device)
    assert optim.clip_grad_norm_(parameters, max_norm=6.5).item() == 13.0
    for parameter, grad in zip(parameters, grads):
        assert parameter.grad.dtype == grad.dtype
        np.testing.assert_allclose(backend.asnumpy(parameter.grad), grad * (6.5 / (13.0 + 1e-6)),
                                   rtol=np.finfo(grad.dtype).eps)


def test_clip_grad_norm_to_zero_zeroes_the_gradients(device):
    """max_norm = 0: the scale min(1, 0 / (norm + eps)) is 0, as in torch."""
    parameters = parameters_with_grads([np.array([3.0, 0.0]), np.array([[4.0], [12.0]])], device)
    assert optim.clip_grad_norm_(parameters, max_norm=0.0).item() == 13.0
    for parameter in parameters:
        assert not backend.asnumpy(parameter.grad).any()


@pytest.mark.parametrize("bad, norm, clipped", [
    (np.inf, np.inf, [[0.0, np.nan], [0.0]]),  # scale max_norm / inf = 0, and inf * 0 is NaN
    (np.nan, np.nan, [[np.nan, np.nan], [np.nan]]),  # a NaN norm makes a NaN scale
], ids=["inf", "nan"])
def test_clip_grad_norm_of_non_finite_gradients_is_torchs(bad, norm, clipped):
    """torch (error_if_nonfinite=False) returns the non-finite norm and scales by
    min(max_norm / (norm + 1e-6), 1) all the same; NaN does not pass for small."""
    parameters = parameters_with_grads([np.array([3.0, bad]), np.array([4.0])], "cpu")
    with np.errstate(invalid="ignore"):
        found = optim.clip_grad_norm_(parameters, max_norm=1.0).item()
    np.testing.assert_array_equal(found, norm)
    for parameter, expected in zip(parameters, clipped):
        np.testing.assert_array_equal(parameter.grad, expected)


def test_clip_grad_norm_of_a_single_tensor():
    parameter = parameters_with_grads([np.array([3.0, 4.0])], "cpu")[0]
    assert optim.clip_grad_norm_(parameter, max_norm=1.0).item() == 5.0
    np.testing.assert_allclose(parameter.grad, [3.0 / (5.0 + 1e-6), 4.0 / (5.0 + 1e-6)], rtol=1e-15)


def test_clip_grad_norm_takes_no_third_positional_argument():
    """torch's third is norm_type: clip_grad_norm_(params, 1.0, 2.0) must not pass 2.0 as eps here."""
    parameters = parameters_with_grads([np.array([3.0, 4.0])], "cpu")
    with pytest.raises(TypeError):
        optim.clip_grad_norm_(parameters, 1.0, 2.0)
    np.testing.assert_array_equal(parameters[0].grad, [3.0, 4.0])


def test_clip_grad_norm_without_gradients_raises():
    with pytest.raises(ValueError, match="no parameter has a gradient"):
        optim.clip_grad_norm_(parameters_with_grads([None], "cpu"), 1.0)
