"""Tensor and the autograd engine: graph recording, backward, accumulation, memory, dtypes."""
import gc
import weakref

import numpy as np
import pytest

import minigrad
from minigrad import Function, Tensor, backend

needs_gpu = pytest.mark.skipif(not backend.is_gpu_available(), reason="no GPU and no MINIGRAD_FAKE_GPU=1")


def host(array):
    return backend.asnumpy(array)


def leaf(values, device="cpu", dtype=np.float64):
    return minigrad.tensor(np.asarray(values, dtype=dtype), requires_grad=True, device=device)


# ---- backward: the chain rule over a graph


def test_long_chain_backprops_without_recursion_error():
    x = leaf([1.5])
    y = x
    for _ in range(100_000):
        y = y * 1.00001
    y.sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_allclose(x.grad, [1.00001 ** 100_000], rtol=1e-9)


def test_tensor_used_twice_accumulates(device):
    x = leaf([1.0, -2.0, 3.0], device)
    (x * x + x).sum().backward()
    np.testing.assert_array_equal(host(x.grad), 2 * np.array([1.0, -2.0, 3.0]) + 1)


def test_diamond_graph_waits_for_every_path(device):
    # A = f(B, C) with C = g(B): B's gradient is complete only after C's backward has run.
    x = leaf([0.3, -0.7], device)
    b = x * 2.0
    c = b.exp()
    a = b * c
    a.sum().backward()
    bv = 2 * np.array([0.3, -0.7])
    np.testing.assert_allclose(host(x.grad), 2 * (np.exp(bv) + bv * np.exp(bv)), rtol=1e-12)


def test_paths_of_different_lengths():
    x = leaf([0.5])
    short = x * 3.0
    long = x
    for _ in range(5):
        long = long * 2.0
    (short * long + long + short).sum().backward()
    # y = 3x * 32x + 32x + 3x = 96x^2 + 35x
    np.testing.assert_allclose(x.grad, [192 * 0.5 + 35], rtol=1e-12)


def test_broadcasting_is_undone_in_the_gradient(device):
    row = leaf(np.ones((1, 3)), device)
    vector = leaf(np.ones(3), device)
    matrix = leaf(np.arange(6.0).reshape(2, 3), device)
    (matrix * row + vector).sum().backward()
    np.testing.assert_array_equal(host(row.grad), [[3.0, 5.0, 7.0]])
    np.testing.assert_array_equal(host(vector.grad), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(host(matrix.grad), np.ones((2, 3)))


def test_leaf_grad_accumulates_over_two_backward_calls(device):
    x = leaf([1.0, 2.0], device)
    (x * x).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(host(x.grad), [2.0 + 3.0, 4.0 + 3.0])


def test_only_leaves_keep_grad(device):
    x = leaf([1.0, 2.0], device)
    hidden = x * 2.0
    (hidden * hidden).sum().backward()
    assert x.is_leaf and not hidden.is_leaf
    assert hidden.grad is None
    assert x.grad is not None


def test_explicit_grad_for_a_non_scalar(device):
    x = leaf(np.ones((2, 3)), device)
    upstream = np.arange(6.0).reshape(2, 3)
    (x * 3.0).backward(minigrad.tensor(upstream, device=device))
    np.testing.assert_array_equal(host(x.grad), 3 * upstream)


def test_leaf_grads_are_owned_arrays(device):
    # Optimizers and clip_grad_norm_ update .grad in place: two leaves must never share one array,
    # nor a leaf the caller's grad, and every grad must be writable.
    a, b = leaf(np.ones(3), device), leaf(np.ones(3), device)
    (a + b).sum().backward()
    upstream = minigrad.tensor(np.ones(3), device=device)
    c = leaf(np.ones(3), device)
    c.backward(upstream)
    for grad in (a.grad, b.grad, c.grad):
        grad *= 2.0
    np.testing.assert_array_equal(host(a.grad), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(host(b.grad), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(host(upstream.data), [1.0, 1.0, 1.0])


def test_backward_without_grad_on_a_one_element_tensor_of_any_shape(device):
    # "a single element", as torch's numel() == 1: (1,) and (1, 1) as well as 0-d
    x = leaf([2.0], device)
    (x * 3.0).backward()
    np.testing.assert_array_equal(host(x.grad), [3.0])
    (x.reshape(1, 1) * 5.0).backward()
    np.testing.assert_array_equal(host(x.grad), [8.0])


# ---- backward: clear errors


def test_backward_on_non_scalar_without_grad_raises():
    y = leaf(np.ones((2, 2))) * 2.0
    with pytest.raises(RuntimeError, match=r"single-element.*\(2, 2\)"):
        y.backward()


def test_backward_without_grad_on_an_empty_tensor_raises():
    y = leaf(np.ones((0, 3))) * 2.0  # no element: not a scalar, as in torch
    with pytest.raises(RuntimeError, match=r"single-element.*\(0, 3\)"):
        y.backward()


def test_backward_with_grad_of_wrong_shape_raises():
    y = leaf(np.ones((2, 3))) * 2.0
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        y.backward(np.ones((3, 2)))


def test_backward_with_a_number_for_grad_says_what_it_takes():
    y = leaf(np.ones(2)) * 2.0
    with pytest.raises(TypeError, match=r"grad must be a tensor or an array of shape \(2,\)"):
        y.backward(1.0)


def test_backward_on_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (minigrad.tensor([1.0]) * 2.0).backward()


def test_second_backward_through_a_graph_raises():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


# ---- memory: what a node saved is dropped once its backward has run


class SaveAndSquare(Function):
    """x -> x^2, saving x and one extra array so the test can watch them being released."""

    def forward(self, x):
        self.x = x
        self.scratch = x * 0.0
        return x * x

    def backward(self, grad):
        return 2.0 * self.x * grad


def test_saved_arrays_are_released_after_backward():
    x = leaf([1.0, 2.0])
    y = SaveAndSquare.apply(x * 1.0)
    node = y._creator
    scratch = weakref.ref(node.scratch)
    y.sum().backward()
    gc.collect()
    assert scratch() is None
    assert not hasattr(node, "inputs") and not hasattr(node, "x")
    assert set(vars(node)) <= {"needs_input_grad"}
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])


def test_every_node_of_a_graph_is_released():
    x, w = leaf(np.ones((2, 2))), leaf(np.full((2, 2), 2.0))
    hidden = (x @ w).exp()
    out = (hidden * x).sum()
    out.backward()
    for tensor in (hidden, out):
        assert set(vars(tensor._creator)) <= {"needs_input_grad"}


class Double(Function):
    """2x, saving nothing for backward."""

    def forward(self, x, y=None):
        return 2.0 * x if y is None else 2.0 * x + y

    def backward(self, grad):
        return 2.0 * grad, grad


def test_a_function_sees_which_inputs_need_a_gradient_and_none_under_no_grad():
    seen = []

    class Spy(Function):
        def forward(self, a, b):
            seen.append(self.needs_input_grad)
            return a + b

        def backward(self, grad):
            return grad, grad

    x, y = minigrad.tensor([1.0], requires_grad=True), minigrad.tensor([2.0])
    assert Spy.apply(x, y).requires_grad
    with minigrad.no_grad():
        assert not Spy.apply(x, y).requires_grad  # nothing recorded: forward need keep nothing
    assert seen == [(True, False), (False, False)]


def test_the_graph_keeps_no_array_its_backward_does_not_need():
    """A computed tensor that only led to the next op is freed with the last name for it, as is a
    constant input: the graph keeps Functions and leaves, not arrays (what backward needs, each
    Function saved itself)."""
    x = leaf(np.arange(4.0))
    hidden, constant = Double.apply(x), Tensor(np.ones(4))
    freed = [weakref.ref(hidden.data), weakref.ref(constant.data)]
    out = Double.apply(hidden, constant)
    del hidden, constant
    gc.collect()
    assert [ref() for ref in freed] == [None, None]
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, [4.0] * 4)


class CutGradient(Function):
    """The identity whose backward returns None: what it was made from gets no gradient."""

    def forward(self, x):
        return x.copy()

    def backward(self, grad):
        return None


def test_a_node_that_gets_no_gradient_is_released_too():
    x = leaf([1.0, 2.0])
    hidden = x * 2.0
    (CutGradient.apply(hidden) + x).sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 1.0])
    assert set(vars(hidden._creator)) <= {"needs_input_grad"}


# ---- grad mode


def test_no_grad_records_nothing(device):
    x = leaf([1.0, 2.0], device)
    with minigrad.no_grad():
        assert not minigrad.is_grad_enabled()
        y = x * 2.0 + x
    assert minigrad.is_grad_enabled()
    assert not y.requires_grad and y._creator is None


def test_no_grad_restores_the_mode_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with minigrad.no_grad():
            1 / 0
    assert minigrad.is_grad_enabled()
    with minigrad.no_grad():
        with minigrad.no_grad():
            pass
        assert not minigrad.is_grad_enabled()
    assert minigrad.is_grad_enabled()


def test_ops_on_tensors_without_grad_record_nothing():
    y = minigrad.tensor([1.0, 2.0]) * 3.0
    assert not y.requires_grad and y._creator is None


def test_detach_cuts_the_graph(device):
    x = leaf([1.0, 2.0], device)
    d = x.detach()
    assert not d.requires_grad and d.is_leaf
    d.data[0] = 5.0  # the same data, as torch's detach shares the storage
    np.testing.assert_array_equal(host(x.data), [5.0, 2.0])
    d.data[0] = 1.0
    np.testing.assert_array_equal(host(d.data), host(x.data))
    (d * x).sum().backward()
    np.testing.assert_array_equal(host(x.grad), [1.0, 2.0])  # only the path through x itself


# ---- reading values, moving devices


def test_numpy_returns_a_host_copy(device):
    x = minigrad.tensor(np.array([1.0, 2.0], dtype=np.float32), device=device)
    copy = x.numpy()
    assert type(copy) is np.ndarray and copy.dtype == np.float32
    copy[0] = 99.0
    np.testing.assert_array_equal(host(x.data), [1.0, 2.0])


def test_item(device):
    value = minigrad.tensor(np.array([[3.5]]), device=device).item()
    assert value == 3.5 and type(value) is float


@pytest.mark.gpu
@needs_gpu
def test_to_device_round_trip_carries_the_gradient_back():
    x = leaf([1.0, -2.0, 3.0], "cpu")
    on_gpu = x.to("gpu")
    assert on_gpu.device == "gpu" and on_gpu.to("cuda") is on_gpu
    back = (on_gpu * on_gpu).to("cpu")
    assert back.device == "cpu"
    (back * 2.0).sum().backward()
    assert backend.device_of(x.grad) == "cpu"
    np.testing.assert_array_equal(x.grad, 4 * np.array([1.0, -2.0, 3.0]))


@pytest.mark.gpu
@needs_gpu
def test_mixing_devices_in_one_op_names_both():
    with pytest.raises(RuntimeError, match="'cpu' and 'gpu'"):
        minigrad.tensor([1.0]) + minigrad.tensor([1.0], device="gpu")


@pytest.mark.gpu
@needs_gpu
def test_backward_with_a_grad_on_another_device_names_both():
    x = leaf([1.0, 2.0], "gpu")
    for grad in (np.ones(2), minigrad.tensor(np.ones(2))):
        with pytest.raises(RuntimeError, match="'cpu' and 'gpu'"):
            (x * 2.0).backward(grad)


def test_python_data_goes_to_the_default_device_arrays_stay_where_they_are(device, monkeypatch):
    monkeypatch.setattr(backend, "_default_device", device)  # as set_default_device(device); restored after
    for data in (2.5, 3, [1.0, 2.0], (1, 2)):
        x = minigrad.tensor(data)
        assert x.device == device and x.dtype == np.float32
    assert minigrad.tensor(np.ones(2)).device == "cpu"


def test_to_the_same_device_is_the_tensor_itself(device):
    x = minigrad.tensor([1.0], device=device)
    assert x.to(device) is x


# ---- dtypes


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_])
def test_tensor_from_an_array_keeps_its_dtype(dtype, device):
    assert minigrad.tensor(np.zeros(3, dtype=dtype), device=device).dtype == dtype


def test_tensor_from_a_tensor_keeps_its_device_and_dtype(device):
    x = minigrad.tensor(np.array([1.0, 2.0], dtype=np.float32), device=device)
    y = minigrad.tensor(x)
    assert y.device == device and y.dtype == np.float32
    y.data[0] = 5.0  # no copy: the same data, as the array it was made from
    np.testing.assert_array_equal(host(x.data), [5.0, 2.0])
    z = minigrad.tensor(x, device="cpu", dtype=np.float64)
    assert type(z.data) is np.ndarray and z.dtype == np.float64
    np.testing.assert_array_equal(z.data, [5.0, 2.0])


@pytest.mark.parametrize("data", [3, 2.5, True, [1, 2], [[1.0, 2.0]], (1, 2)])
def test_python_numbers_and_lists_become_float32(data, device):
    assert minigrad.tensor(data, device=device).dtype == np.float32


def test_explicit_dtype_wins():
    assert minigrad.tensor([1, 2], dtype="float64").dtype == np.float64
    assert minigrad.tensor(np.zeros(2, dtype=np.float32), dtype=np.float64).dtype == np.float64


@pytest.mark.parametrize("op", [lambda x: x * 2.5, lambda x: 2.5 * x, lambda x: x + 1, lambda x: 1 - x,
                                lambda x: x - 0.1, lambda x: x / 3, lambda x: 3.0 / x, lambda x: x ** 2,
                                lambda x: 2.0 ** x, lambda x: -x])
def test_float32_with_python_scalars_stays_float32(op, device):
    x = minigrad.tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True, device=device)
    y = op(x)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


@pytest.mark.parametrize("scalar", [np.float32(2.0), np.float64(2.0), np.int64(2), np.int32(2)], ids=repr)
def test_numpy_scalars_act_as_the_numbers_they_are(scalar, device):
    """As Python numbers: float32 stays float32, and a GPU tensor takes them (CuPy would refuse a
    NumPy scalar made into a host array)."""
    x = minigrad.tensor(np.array([1.0, 3.0], dtype=np.float32), requires_grad=True, device=device)
    y = x * scalar + scalar / x
    assert y.dtype == np.float32 and y.device == device
    np.testing.assert_allclose(y.numpy(), [4.0, 6.0 + 2.0 / 3.0], rtol=1e-7)
    y.sum().backward()
    np.testing.assert_allclose(backend.asnumpy(x.grad), [0.0, 2.0 - 2.0 / 9.0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("scalar", [np.int64(3), np.int32(3), np.uint8(3)], ids=repr)
def test_numpy_integers_keep_an_integer_tensor_integer(scalar, device):
    x = minigrad.tensor(np.array([1, -2], dtype=np.int64), device=device)
    for y in (x * scalar, scalar + x):
        assert y.dtype == np.int64 and y.device == device
    np.testing.assert_array_equal(host((x * scalar).data), [3, -6])


def test_full_reduction_keeps_float64(device):
    # NumPy's full reductions return np.float64, a subclass of Python's float: not a Python number.
    x = leaf([0.1, 0.2, 0.3], device)
    total = x.sum()
    assert total.dtype == np.float64 and total.shape == ()
    assert total.item() == pytest.approx(0.1 + 0.2 + 0.3, rel=1e-15)  # float32 would be 4e-8 off
    assert minigrad.tensor(np.float64(0.1)).dtype == np.float64


# ---- what a tensor is


def test_shape_ndim_size_dtype_device_T_len(device):
    x = minigrad.tensor(np.arange(6.0).reshape(2, 3), device=device)
    assert x.shape == (2, 3) and x.ndim == 2 and x.size == 6 and len(x) == 2
    assert x.dtype == np.float64 and x.device == device
    assert x.T.shape == (3, 2)
    np.testing.assert_array_equal(host(x.T.data), np.arange(6.0).reshape(2, 3).T)
    assert device in repr(x)


def test_shape_arguments_may_be_lists_tuples_or_numbers(device):
    values = np.arange(24.0).reshape(2, 3, 4)
    x = leaf(values, device)
    for shaped in (x.reshape([4, 6]), x.reshape((4, 6)), x.reshape(4, 6)):
        np.testing.assert_array_equal(host(shaped.data), values.reshape(4, 6))
    for moved in (x.transpose([2, 0, 1]), x.permute((2, 0, 1)), x.transpose(2, 0, 1)):
        np.testing.assert_array_equal(host(moved.data), values.transpose(2, 0, 1))


@pytest.mark.parametrize("name", ["__lt__", "__le__", "__gt__", "__ge__"])
def test_comparisons_give_boolean_tensors_without_grad(name, device):
    values = np.array([-1.0, 0.0, 2.0])
    x = leaf(values, device)
    for other in (0.0, minigrad.tensor(np.zeros(3), device=device)):
        mask = getattr(x, name)(other)
        assert isinstance(mask, Tensor) and mask.dtype == np.bool_
        assert not mask.requires_grad and mask._creator is None
        np.testing.assert_array_equal(host(mask.data), getattr(values, name)(0.0))


@pytest.mark.parametrize("op, grad", [
    (lambda a, t: a * t, lambda a, t: a),
    (lambda a, t: a + t, lambda a, t: np.ones_like(t)),
    (lambda a, t: a - t, lambda a, t: -np.ones_like(t)),
    (lambda a, t: a / t, lambda a, t: -a / t ** 2),
    (lambda a, t: a @ t, lambda a, t: np.broadcast_to(a.sum(axis=0)[:, None], t.shape)),
])
def test_ndarray_on_the_left_defers_to_tensor(op, grad):
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    t_values = np.array([[0.5, -1.0], [2.0, 4.0]])
    t = leaf(t_values)
    result = op(a, t)
    assert isinstance(result, Tensor)
    np.testing.assert_allclose(result.data, op(a, t_values), rtol=1e-15)
    result.sum().backward()
    np.testing.assert_allclose(t.grad, grad(a, t_values), rtol=1e-15)
