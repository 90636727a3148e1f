"""Optimizers over packed parameters (optim/flat.py): one pass over a flat array per group, dtype
and device, bit for bit the result of stepping each parameter on its own."""
import math

import numpy as np
import pytest

import minigrad
import optim
from minigrad import backend, kernels
from minigrad.nn import Parameter
from minigrad.testing import fake_gpu

SHAPES = [(3, 4), (4,), (), (2, 3, 2), (1,)]

OPTIMIZERS = {
    "adam": lambda params: optim.Adam(params, lr=0.01, weight_decay=0.1),
    "adamw-amsgrad": lambda params: optim.AdamW(params, lr=0.01, weight_decay=0.1, amsgrad=True),
    "radam-decoupled": lambda params: optim.RAdam(params, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    "sgd-nesterov": lambda params: optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam-maximize": lambda params: optim.Adam(params, lr=0.01, maximize=True),
}


def parameters(device, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [Parameter(backend.to_device(rng.standard_normal(shape).astype(dtype), device)) for shape in SHAPES]


def gradients(step, dtype=np.float64):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]


def host(values):
    return [backend.asnumpy(v.data if isinstance(v, minigrad.Tensor) else v) for v in values]


def step_both(packed_optimizer, packed, alone_optimizers, alone, step, device, skip=()):
    """Give both sets the same gradients (none where ``skip``) and step them."""
    for i, grad in enumerate(gradients(step)):
        for params in (packed, alone):
            params[i].grad = None if i in skip else backend.to_device(grad, device)
    packed_optimizer.step()
    for optimizer in alone_optimizers:
        optimizer.step()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_packed_steps_equal_one_optimizer_per_parameter_bit_for_bit(name, device):
    packed, alone = parameters(device), parameters(device)
    packed_optimizer = OPTIMIZERS[name](packed)
    alone_optimizers = [OPTIMIZERS[name]([p]) for p in alone]
    for step in range(8):  # past RAdam's first rectified step (t = 6)
        step_both(packed_optimizer, packed, alone_optimizers, alone, step, device)
    for mine, reference in zip(host(packed), host(alone)):
        np.testing.assert_array_equal(mine, reference)


def test_an_optimizer_packs_each_group_by_dtype_into_one_array(device):
    first, second = parameters(device), parameters(device, np.float32, seed=1)
    before = host(first + second)
    optimizer = optim.Adam([{"params": first + second[:2]}, {"params": second[2:], "lr": 0.1}])
    blocks = [block for index in range(2) for block in optimizer._blocks_of_group(index, optimizer.param_groups[index])]
    assert [(len(b.parameters), b.data.dtype) for b in blocks] == [(5, np.float64), (2, np.float32), (3, np.float32)]
    for block in blocks:
        assert all(p.data is view for p, view in zip(block.parameters, block.data_views))
        assert block.data.size == sum(p.size for p in block.parameters)
    for value, expected in zip(host(first + second), before):
        np.testing.assert_array_equal(value, expected)  # packing moves nothing


def test_backward_writes_each_gradient_into_the_packed_buffer(device):
    weights = parameters(device)
    optimizer = optim.SGD(weights, lr=0.1)
    loss = sum(((w * w).sum() for w in weights), minigrad.tensor(0.0, device=device, dtype=np.float64))
    loss.backward()
    (block,) = optimizer._blocks_of_group(0, optimizer.param_groups[0])
    assert all(w.grad is view for w, view in zip(weights, block.grad_views))
    for w, grad in zip(host(weights), host([w.grad for w in weights])):
        np.testing.assert_array_equal(grad, 2 * w)
    second = sum(((w * 3.0).sum() for w in weights), minigrad.tensor(0.0, device=device, dtype=np.float64))
    second.backward()  # accumulates, in place
    for w, grad in zip(host(weights), host([w.grad for w in weights])):
        np.testing.assert_array_equal(grad, 2 * w + 3.0)


def test_a_parameter_without_a_gradient_is_skipped_as_torch_skips_it(device):
    packed, alone = parameters(device), parameters(device)
    packed_optimizer = optim.Adam(packed, lr=0.01)
    alone_optimizers = [optim.Adam([p], lr=0.01) for p in alone]
    step_both(packed_optimizer, packed, alone_optimizers, alone, 0, device)
    frozen = host([packed[1]])[0]
    step_both(packed_optimizer, packed, alone_optimizers, alone, 1, device, skip={1})
    np.testing.assert_array_equal(host([packed[1]])[0], frozen)
    assert packed_optimizer.state[packed[1]]["step"] == 1 and packed_optimizer.state[packed[0]]["step"] == 2
    for step in range(2, 5):  # the steps now disagree: stepped one parameter at a time, still exactly
        step_both(packed_optimizer, packed, alone_optimizers, alone, step, device)
    for mine, reference in zip(host(packed), host(alone)):
        np.testing.assert_array_equal(mine, reference)


def test_arrays_put_where_views_were_are_packed_again(device):
    packed, alone = parameters(device), parameters(device)
    packed_optimizer = optim.AdamW(packed, lr=0.01)
    alone_optimizers = [optim.AdamW([p], lr=0.01) for p in alone]
    step_both(packed_optimizer, packed, alone_optimizers, alone, 0, device)
    for params in (packed, alone):
        for p in params:
            p.data = p.data.copy()  # as load_state_dict or model.to(...) rebinds them
    saved = packed_optimizer.state_dict()
    packed_optimizer.load_state_dict(saved)  # fresh state arrays too
    for step in range(1, 4):
        step_both(packed_optimizer, packed, alone_optimizers, alone, step, device)
    for mine, reference in zip(host(packed), host(alone)):
        np.testing.assert_array_equal(mine, reference)
    (block,) = packed_optimizer._blocks_of_group(0, packed_optimizer.param_groups[0])
    assert all(p.data is view for p, view in zip(packed, block.data_views))


def test_state_dict_keeps_one_entry_per_parameter_and_resumes_exactly(device):
    weights = parameters(device)
    optimizer = optim.RAdam(weights, lr=0.01)
    for step in range(3):
        for w, grad in zip(weights, gradients(step)):
            w.grad = backend.to_device(grad, device)
        optimizer.step()
    saved = optimizer.state_dict()
    assert sorted(saved["state"]) == list(range(len(SHAPES)))
    for index, shape in enumerate(SHAPES):
        state = saved["state"][index]
        assert state["step"] == 3 and type(state["exp_avg"]) is np.ndarray and state["exp_avg"].shape == shape
    resumed_weights = [Parameter(backend.to_device(v, device)) for v in host(weights)]
    resumed = optim.RAdam(resumed_weights, lr=0.01)
    resumed.load_state_dict(saved)
    for step in range(3, 8):
        for params in (weights, resumed_weights):
            for w, grad in zip(params, gradients(step)):
                w.grad = backend.to_device(grad, device)
        optimizer.step()
        resumed.step()
    for mine, reference in zip(host(resumed_weights), host(weights)):
        np.testing.assert_array_equal(mine, reference)


def test_clipping_packed_gradients_scales_them_all_together(device):
    weights = parameters(device)
    optim.SGD(weights, lr=0.1)  # packs them
    for w, grad in zip(weights, gradients(0)):
        w.grad = backend.to_device(grad, device)
    expected_norm = np.sqrt(sum((g * g).sum() for g in gradients(0)))
    norm = optim.clip_grad_norm_(weights, 1.0)
    assert norm.item() == pytest.approx(expected_norm, rel=1e-13)
    for grad, original in zip(host([w.grad for w in weights]), gradients(0)):
        np.testing.assert_allclose(grad, original * (1.0 / (expected_norm + 1e-6)), rtol=1e-13)


def test_clipping_a_part_of_a_packed_group_touches_only_that_part(device):
    weights = parameters(device)
    optim.SGD(weights, lr=0.1)
    for w, grad in zip(weights, gradients(0)):
        w.grad = backend.to_device(grad, device)
    optim.clip_grad_norm_(weights[:2], 1e-3)
    for grad, original in zip(host([w.grad for w in weights[2:]]), gradients(0)[2:]):
        np.testing.assert_array_equal(grad, original)


@pytest.mark.gpu
def test_a_step_of_a_packed_optimizer_is_a_handful_of_gpu_operations(monkeypatch):
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "1")
    weights = [Parameter(backend.to_device(np.ones((4, 4), dtype=np.float32), "gpu")) for _ in range(50)]
    optimizer = optim.AdamW(weights, lr=0.01, weight_decay=0.05)
    for w in weights:
        w.grad = backend.to_device(np.ones((4, 4), dtype=np.float32), "gpu")
    optimizer.step()  # the first step makes the moments
    before = fake_gpu.operation_count.count
    optimizer.step()
    assert fake_gpu.operation_count.count - before <= 15  # one parameter's worth (it was 13 each)
    before = fake_gpu.operation_count.count
    optim.clip_grad_norm_(weights, 1.0)
    assert fake_gpu.operation_count.count - before <= 12  # (it was 3 a gradient)


def linear_and_norm(device):
    minigrad.manual_seed(3)
    return minigrad.nn.Sequential(minigrad.nn.Linear(6, 5), minigrad.nn.LayerNorm(5)).to(device, np.float64)


@pytest.mark.parametrize("used_twice", [False, True], ids=["once", "twice"])
def test_gradients_written_into_the_packed_buffer_equal_those_of_an_unpacked_model(device, used_twice):
    """Linear and LayerNorm write a packed parameter's gradient straight into its buffer (no copy),
    unless the parameter gets a second gradient in the pass, which must then be added."""
    packed, plain = linear_and_norm(device), linear_and_norm(device)
    optimizer = optim.SGD(packed.parameters(), lr=0.1)
    x = backend.to_device(np.random.default_rng(4).standard_normal((3, 6)), device)
    for model in (packed, plain):
        out = model(x)
        if used_twice:  # the first layer applied again: its weight and bias get two gradients
            out = out + model[0](x)
        (out * out).sum().backward()
    (block,) = optimizer._blocks_of_group(0, optimizer.param_groups[0])
    assert all(p.grad is view for p, view in zip(packed.parameters(), block.grad_views))
    for mine, reference in zip(packed.parameters(), plain.parameters()):
        np.testing.assert_array_equal(backend.asnumpy(mine.grad), backend.asnumpy(reference.grad))


def test_a_group_of_two_dtypes_with_a_parameter_never_given_a_gradient_steps_the_others(device):
    """A frozen parameter in the group: each block steps one parameter at a time, for ever, as exactly."""
    packed = parameters(device) + parameters(device, np.float32, seed=1)
    alone = parameters(device) + parameters(device, np.float32, seed=1)
    packed_optimizer = optim.Adam(packed, lr=0.01)
    alone_optimizers = [optim.Adam([p], lr=0.01) for p in alone]
    never = {0, len(SHAPES)}  # one parameter of each dtype
    frozen = host([packed[i] for i in sorted(never)])
    for step in range(4):
        for i, params in enumerate(zip(packed, alone)):
            grad = None if i in never else gradients(step)[i % len(SHAPES)].astype(params[0].dtype)
            for p in params:
                p.grad = None if grad is None else backend.to_device(grad, device)
        packed_optimizer.step()
        for optimizer in alone_optimizers:
            optimizer.step()
    for mine, reference in zip(host(packed), host(alone)):
        np.testing.assert_array_equal(mine, reference)
    for value, before in zip(host([packed[i] for i in sorted(never)]), frozen):
        np.testing.assert_array_equal(value, before)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_large_packed_block_stepped_in_pieces_on_the_cpu_equals_the_whole_bit_for_bit(name, monkeypatch):
    """Over four blocks of elements, the CPU updates a packed block a block at a time, in threads
    (from its second step: the first makes the state); the whole array at once is the reference."""
    from minigrad import kernels

    shapes = [(300, 700), (4 * kernels.BLOCK + 3,), (5,)]  # the flat array ends in a short block
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    grads = [[rng.standard_normal(shape).astype(np.float32) for shape in shapes] for _ in range(8)]
    results = []
    for block in (kernels.BLOCK, 1 << 40):  # in pieces; then whole, every array shorter than 4 blocks
        monkeypatch.setattr(kernels, "BLOCK", block)
        params = [Parameter(array.copy()) for array in start]
        optimizer = OPTIMIZERS[name](params)
        for step in range(8):
            for parameter, grad in zip(params, grads[step]):
                parameter.grad = grad.copy()
            optimizer.step()
        results.append((host(params), optimizer.state_dict()["state"]))
    (pieces, pieces_state), (whole, whole_state) = results
    for mine, reference in zip(pieces, whole):
        np.testing.assert_array_equal(mine, reference)
    for index, state in whole_state.items():
        assert pieces_state[index].keys() == state.keys()
        for key, value in state.items():
            np.testing.assert_array_equal(pieces_state[index][key], value, err_msg=key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("factor, added, amsgrad", [(1.0, 0.0, False), (0.999, 0.0, True), (1.0, 0.1, False)],
                         ids=["plain", "adamw-amsgrad", "adam-l2"])
def test_adams_fused_step_is_bit_for_bit_its_numpy_reference(device, dtype, factor, added, amsgrad):
    """On a GPU, Adam's step is one kernel (kernels.adam_update); on every device it equals
    optim.adam.adam_step_, NumPy's passes, to the last bit (also where amsgrad's maximum meets NaN)."""
    from optim.adam import adam_step_

    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal(1000).astype(dtype) for _ in range(3)] + [rng.random(1000).astype(dtype)]
    arrays.append(np.maximum(arrays[3], rng.random(1000).astype(dtype)) if amsgrad else None)
    if amsgrad:
        arrays[4][:2] = np.nan
    scalars = (factor, added, 0.9, 0.999, 1e-8, 1e-3 / (1 - 0.9**3), math.sqrt(1 - 0.999**3))
    assert_fused_step_equals_its_reference("adam_update", adam_step_, kernels.adam_update, arrays, scalars, device)


def assert_fused_step_equals_its_reference(name, reference, kernel, arrays, scalars, device):
    """``reference`` on host copies of ``arrays`` (None: an absent state) and ``kernel``, as
    ``backend.fused`` runs it on ``device``, leave every array the same, bit for bit."""
    expected = [None if a is None else a.copy() for a in arrays]
    reference(*expected, *scalars)
    on_device = [None if a is None else backend.to_device(a.copy(), device) for a in arrays]
    backend.fused(name, reference, kernel, *on_device, *scalars)
    for got, wanted in zip(on_device, expected):
        if wanted is not None:
            np.testing.assert_array_equal(backend.asnumpy(got), wanted)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("factor, added, rect", [(1.0, 0.0, None), (0.999, 0.0, 0.3), (1.0, 0.1, 0.7)],
                         ids=["momentum-steps", "decoupled-rectified", "l2-rectified"])
def test_radams_fused_step_is_bit_for_bit_its_numpy_reference(device, dtype, factor, added, rect):
    """RAdam's step, one kernel on a GPU (kernels.radam_update), equals optim.radam.radam_step_ to
    the last bit on every device, before its rectification starts and after."""
    from optim.radam import radam_step_

    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(1000).astype(dtype) for _ in range(3)] + [rng.random(1000).astype(dtype)]
    scalars = (factor, added, 0.9, 0.999, 1 - 0.9**7, 1e-3, 1e-8, math.sqrt(1 - 0.999**7), rect)
    assert_fused_step_equals_its_reference("radam_update", radam_step_, kernels.radam_update, arrays, scalars, device)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight_decay, momentum, first, nesterov", [
    (0.0, 0.0, False, False), (0.01, 0.9, True, False), (0.01, 0.9, False, False), (0.0, 0.9, False, True)],
    ids=["plain", "first-momentum-step", "momentum", "nesterov"])
def test_sgds_fused_step_is_bit_for_bit_its_numpy_reference(device, dtype, weight_decay, momentum, first, nesterov):
    """SGD's step, one kernel on a GPU (kernels.sgd_update), equals optim.sgd.sgd_step_ to the last
    bit on every device."""
    from optim.sgd import sgd_step_

    rng = np.random.default_rng(6)
    arrays = [rng.standard_normal(1000).astype(dtype) for _ in range(3)]
    if not momentum:
        arrays[2] = None
    scalars = (weight_decay, momentum, 1 - 0.1, first, nesterov, 0.05)
    assert_fused_step_equals_its_reference("sgd_update", sgd_step_, kernels.sgd_update, arrays, scalars, device)
