"""Every op: float64 central-difference gradient checks, forward values against NumPy or closed
forms, clear errors, on the CPU and on the GPU path (real CuPy, or the stand-in)."""
import math

import numpy as np
import pytest

import minigrad
from minigrad import backend
from minigrad import functional as F

SQRT2 = math.sqrt(2.0)


# ---- helpers

def rand(shape, seed=0, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, shape)


def positive(shape, seed=0):
    return rand(shape, seed, 0.5, 2.0)


def off_zero(shape, seed=0, margin=0.2):
    """Values at least ``margin`` away from 0 (relu's kink)."""
    values = rand(shape, seed)
    return values + np.sign(values) * margin


def distinct(shape, seed=0):
    """A permutation of well-separated values: no max ties, even after a finite-difference step."""
    count = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(count).reshape(shape) * 0.1 - 1.0


def on(x, array):
    """``array`` on the device of tensor ``x`` (index arrays, targets, masks, constants)."""
    return backend.to_device(array, x.device)


def leaf(array, device):
    return minigrad.tensor(array, requires_grad=True, device=device)


def check(fn, arrays, device, compare_with_cpu=True, **gradcheck_options):
    """Gradient-check ``fn`` on float64 leaves made from ``arrays``; on the GPU, also compare its
    forward result with the CPU's."""
    inputs = [leaf(array, device) for array in arrays]
    assert minigrad.gradcheck(fn, inputs, **gradcheck_options)
    out = fn(*inputs)
    assert out.device == device
    if device == "gpu" and compare_with_cpu:
        expected = fn(*[minigrad.tensor(array) for array in arrays]).numpy()
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-14)
    return out


def forward(fn, arrays, device):
    """``fn`` applied to tensors on ``device`` made from ``arrays``, as a host array."""
    return fn(*[minigrad.tensor(array, device=device) for array in arrays]).numpy()


def gelu_reference(x):
    return np.array([v * 0.5 * (1.0 + math.erf(v / SQRT2)) for v in np.ravel(x)]).reshape(np.shape(x))


def log_softmax_reference(x, axis=-1):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


# ---- elementwise

UNARY = {  # name: (function, NumPy reference, input values)
    "neg": (lambda x: -x, np.negative, rand),
    "exp": (F.exp, np.exp, rand),
    "exp_method": (lambda x: x.exp(), np.exp, rand),
    "log": (F.log, np.log, positive),
    "sqrt": (F.sqrt, np.sqrt, positive),
    "tanh": (F.tanh, np.tanh, rand),
    "erf": (F.erf, np.vectorize(math.erf), lambda shape: rand(shape, 0, -3.0, 3.0)),
    "relu": (F.relu, lambda x: np.maximum(x, 0.0), off_zero),
    "relu_method": (lambda x: x.relu(), lambda x: np.maximum(x, 0.0), off_zero),
    "gelu": (F.gelu, gelu_reference, lambda shape: rand(shape, 0, -4.0, 4.0)),
    "tensor_pow_int": (lambda x: x**3, lambda x: x**3, rand),
    "tensor_pow_half": (lambda x: x**0.5, np.sqrt, positive),
    "tensor_pow_negative": (lambda x: x**-1.5, lambda x: x**-1.5, positive),
    "scalar_pow_tensor": (lambda x: 2.5**x, lambda x: 2.5**x, rand),
    "scalar_plus": (lambda x: 2.5 + x, lambda x: 2.5 + x, rand),
    "scalar_minus": (lambda x: 2.5 - x, lambda x: 2.5 - x, rand),
    "minus_scalar": (lambda x: x - 2.5, lambda x: x - 2.5, rand),
    "scalar_times": (lambda x: -1.5 * x, lambda x: -1.5 * x, rand),
    "scalar_over": (lambda x: 3.0 / x, lambda x: 3.0 / x, positive),
    "over_scalar": (lambda x: x / 4.0, lambda x: x / 4.0, rand),
    "used_twice": (lambda x: x * x + x, lambda x: x * x + x, rand),
    "used_in_two_ops": (lambda x: F.tanh(x) * F.exp(x) - x, lambda x: np.tanh(x) * np.exp(x) - x, rand),
}


@pytest.mark.parametrize("name", UNARY)
def test_unary(device, name):
    fn, reference, values = UNARY[name]
    x = values((2, 3, 4))
    out = check(fn, [x], device)
    np.testing.assert_allclose(out.numpy(), reference(x), rtol=1e-14, atol=1e-14)


BINARY = {  # name: (function, NumPy reference, left values, right values)
    "add": (lambda a, b: a + b, np.add, rand, rand),
    "sub": (lambda a, b: a - b, np.subtract, rand, rand),
    "mul": (lambda a, b: a * b, np.multiply, rand, rand),
    "div": (lambda a, b: a / b, np.divide, rand, positive),
    "pow": (lambda a, b: a**b, np.power, positive, rand),
    "functional_add": (F.add, np.add, rand, rand),
    "functional_div": (F.div, np.divide, rand, positive),
    "functional_pow": (F.pow, np.power, positive, rand),
}
SHAPE_PAIRS = [((2, 3, 4), (2, 3, 4)), ((3, 1, 4), (2, 4)), ((2, 3), ()), ((1,), (2, 3)), ((2, 1), (1, 3)),
               ((1, 1), (3, 1, 2))]


@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
@pytest.mark.parametrize("name", BINARY)
def test_binary_with_broadcasting(device, name, shapes):
    fn, reference, left, right = BINARY[name]
    a, b = left(shapes[0], seed=1), right(shapes[1], seed=2)
    out = check(fn, [a, b], device)
    np.testing.assert_allclose(out.numpy(), reference(a, b), rtol=1e-14, atol=1e-14)


def test_binary_with_one_input_that_needs_no_grad(device):
    a = leaf(positive((2, 3)), device)
    b = minigrad.tensor(positive((3,), 1), device=device)
    assert minigrad.gradcheck(lambda a: a / b - b * a + a**b, [a])
    assert b.grad is None


def test_erf_matches_math_erf_within_2_ulp():
    tiny = np.logspace(-310, 0, 400)
    boundaries = np.array([0.5, 1.0, 8.0, 30.0])  # where Cephes' rational approximations change
    nearby = np.concatenate([np.nextafter(boundaries, 0), np.nextafter(boundaries, 100)])
    positive_side = np.concatenate([np.linspace(0.0, 10.0, 50001), tiny, boundaries, nearby, [5e-324, 27.0, 1e3]])
    x = np.concatenate([positive_side, -positive_side])
    ours = backend.erf(x)
    expected = np.array([math.erf(v) for v in x])
    ulp = np.spacing(np.abs(expected))
    assert np.all(np.abs(ours - expected) <= 2 * ulp)
    assert np.all(np.signbit(ours) == np.signbit(expected))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_erf_on_device_keeps_the_dtype(device, dtype):
    x = rand((5, 7), 3, -4.0, 4.0).astype(dtype)
    out = forward(F.erf, [x], device)
    assert out.dtype == dtype
    # SciPy's erf on the host, and CUDA's on a real GPU, are each within 2 ulps of the true value
    np.testing.assert_allclose(out, np.vectorize(math.erf)(x.astype(np.float64)), rtol=4 * np.finfo(dtype).eps)


def test_gelu_is_the_exact_erf_form():
    x = np.concatenate([np.linspace(-10.0, 10.0, 4001), [-1e-300, 0.0, 1e-300]])
    ours = forward(F.gelu, [x], "cpu")
    # Phi(x) carries a few ulps of 1 in absolute error (erf's 2 ulps and the 1 + erf rounding), which
    # the factor x scales.
    eps = np.finfo(np.float64).eps
    assert np.all(np.abs(ours - gelu_reference(x)) <= 4 * eps * np.maximum(np.abs(x), np.abs(ours)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_with_no_backward_to_follow_keeps_nothing_and_gives_the_same_bits(device, dtype):
    from minigrad.ops.elementwise import GELU

    x = leaf(rand((1000, 700), 3).astype(dtype), device)  # more than two blocks: in blocks, on the CPU
    out = F.gelu(x)
    with minigrad.no_grad():
        np.testing.assert_array_equal(F.gelu(x).numpy(), out.numpy())
    function = GELU()
    function.needs_input_grad = (False,)  # as under no_grad
    np.testing.assert_array_equal(backend.asnumpy(function.forward(x.data)), out.numpy())
    assert not hasattr(function, "cdf")
    if device == "cpu" or backend.fake_gpu_enabled():  # a real GPU's kernels compute Phi again in backward
        assert out._creator.cdf.shape == x.shape


def test_relu_zeroes_negatives_and_passes_positive_gradient(device):
    x = leaf(off_zero((3, 4), 4), device)
    out = F.relu(x)
    out.sum().backward()
    np.testing.assert_array_equal(backend.asnumpy(x.grad), (x.numpy() > 0).astype(float))
    assert np.all(out.numpy() >= 0)


def test_relu_of_infinities_and_nan(device):
    """As torch: -inf gives 0 (not -inf * 0 = NaN), and NaN stays NaN, so a diverging run shows."""
    out = forward(F.relu, [np.array([-np.inf, -1.0, 0.0, 2.0, np.inf, np.nan])], device)
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 2.0, np.inf, np.nan])
    assert not np.signbit(out[:2]).any()  # +0, not the -0 that x * (x > 0) gives for negatives


def test_relu_gradient_at_zero_is_zero(device):
    """As torch: the subgradient 0 at the kink, so an exactly-zero input passes no gradient."""
    x = leaf(np.array([-1.0, 0.0, 2.0]), device)
    F.relu(x).sum().backward()
    np.testing.assert_array_equal(backend.asnumpy(x.grad), [0.0, 0.0, 1.0])


def test_pow_gradients_at_a_zero_base_take_their_limits(device):
    """d(a^b)/da = b a^(b-1) is 0 * inf at a = b = 0, and d(a^b)/db = a^b log a is 0 * -inf at a = 0,
    b > 0: both limits are 0, as torch takes them. Where b < 0, a^b and its slope are infinite."""
    base, exponent = leaf(np.zeros(4), device), leaf(np.array([0.0, 0.5, 2.0, -1.0]), device)
    x, e = leaf(np.array([0.0, 3.0]), device), leaf(np.array([0.0, 2.0]), device)
    with np.errstate(divide="ignore", invalid="ignore"):  # the 0 * inf that the limits replace
        (base**exponent).sum().backward()
        (x**0).sum().backward()
        (0.0**e).sum().backward()
    np.testing.assert_array_equal(backend.asnumpy(base.grad), [0.0, np.inf, 0.0, -np.inf])
    np.testing.assert_array_equal(backend.asnumpy(exponent.grad), [0.0, 0.0, 0.0, -np.inf])
    np.testing.assert_array_equal(backend.asnumpy(x.grad), [0.0, 0.0])
    np.testing.assert_array_equal(backend.asnumpy(e.grad), [0.0, 0.0])


@pytest.mark.parametrize("base", [2.5, 0.0, -2.0])
def test_pow_with_a_number_base_has_the_gradient_of_an_array_base(device, base):
    """d(c^b)/db = c^b log c, with c a Python number or an array of it alike: 0 at c = 0 (b >= 0),
    NaN for c < 0, where log c is undefined (as torch)."""
    exponent = np.array([0.0, 2.0, 3.0])
    from_number, from_array = leaf(exponent, device), leaf(exponent, device)
    with np.errstate(divide="ignore", invalid="ignore"):
        (base**from_number).sum().backward()
        (on(from_array, np.full(3, base)) ** from_array).sum().backward()
        expected = np.where(base == 0.0, 0.0, base**exponent * np.log(base))
    np.testing.assert_array_equal(backend.asnumpy(from_number.grad), expected)
    np.testing.assert_array_equal(backend.asnumpy(from_array.grad), expected)


# ---- matmul

MATMUL_SHAPES = [((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (3, 4, 2)), ((2, 3, 4), (4, 5)),
                 ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((2, 3, 4), (4,)), ((4,), (2, 4, 3))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul(device, shapes):
    a, b = rand(shapes[0], 1), rand(shapes[1], 2)
    out = check(lambda a, b: a @ b, [a, b], device)
    np.testing.assert_allclose(out.numpy(), np.matmul(a, b), rtol=1e-13, atol=1e-15)


def test_matmul_with_an_array_operand(device):
    b = rand((4, 2), 2)
    assert minigrad.gradcheck(lambda a: a @ on(a, b) + (on(a, b.T) @ a).T, [leaf(rand((4, 4)), device)])


@pytest.mark.parametrize("shapes", [((2, 3), (4, 5)), ((2, 3, 4), (5,)), ((3,), (4, 3))], ids=str)
def test_matmul_of_misaligned_shapes_names_both(shapes):
    a, b = minigrad.tensor(np.ones(shapes[0])), minigrad.tensor(np.ones(shapes[1]))
    with pytest.raises(ValueError) as error:
        a @ b
    assert str(shapes[0]) in str(error.value) and str(shapes[1]) in str(error.value)


# ---- reductions

AXES = [None, 0, 2, -1, (0, 2), (-1, 0), (0, 1, 2)]
REDUCTIONS = {"sum": np.sum, "mean": np.mean, "max": np.max, "var": np.var}


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction(device, name, axis, keepdims):
    x = distinct((2, 3, 4), 5)
    out = check(lambda x: getattr(x, name)(axis=axis, keepdims=keepdims), [x], device)
    expected = REDUCTIONS[name](x, axis=axis, keepdims=keepdims)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("axis", [None, 1, (0, 2)], ids=str)
def test_var_with_ddof_1(device, axis):
    x = rand((2, 3, 4), 6)
    out = check(lambda x: F.var(x, axis=axis, ddof=1), [x], device)
    np.testing.assert_allclose(out.numpy(), np.var(x, axis=axis, ddof=1), rtol=1e-13)


@pytest.mark.parametrize("ddof", [0, 1, 2])
def test_var_method_passes_ddof(device, ddof):
    x = rand((3, 4), 6)
    out = check(lambda x: x.var(axis=-1, keepdims=True, ddof=ddof), [x], device)
    np.testing.assert_allclose(out.numpy(), np.var(x, axis=-1, keepdims=True, ddof=ddof), rtol=1e-13)


@pytest.mark.parametrize("axis", [1, (0, 3), -1], ids=str)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction_keeps_the_size_1_axes_it_does_not_reduce(device, name, axis):
    x = distinct((1, 3, 1, 2), 4)
    out = check(lambda x: getattr(x, name)(axis=axis), [x], device)
    expected = REDUCTIONS[name](x, axis=axis)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 1)], ids=str)
def test_max_ties_share_the_gradient_equally(device, axis):
    x = np.random.default_rng(7).integers(0, 3, (4, 5)).astype(np.float64)  # many ties
    t = leaf(x, device)
    out = t.max(axis=axis)
    np.testing.assert_array_equal(out.numpy(), x.max(axis=axis))
    upstream = rand(out.shape, 8)
    out.backward(on(t, upstream))
    winners = x == x.max(axis=axis, keepdims=True)
    kept = np.reshape(upstream, x.max(axis=axis, keepdims=True).shape)
    expected = winners * kept / winners.sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(backend.asnumpy(t.grad), expected, rtol=1e-15)
    np.testing.assert_allclose(backend.asnumpy(t.grad).sum(axis=axis), upstream, rtol=1e-14)


# ---- moving elements

@pytest.mark.parametrize("shape", [(6, 4), (4, -1), (24,), (2, 1, 12)], ids=str)
def test_reshape(device, shape):
    x = rand((2, 3, 4))
    out = check(lambda x: x.reshape(*shape) * x.reshape(shape).exp(), [x], device)
    assert out.shape == x.reshape(shape).shape


TRANSPOSES = {
    ".T": (lambda x: x.T, lambda a: a.T),
    "transpose()": (lambda x: x.transpose(), lambda a: a.transpose()),
    "transpose(1, 0, 2)": (lambda x: x.transpose(1, 0, 2), lambda a: a.transpose(1, 0, 2)),
    "permute((2, 0, 1))": (lambda x: x.permute((2, 0, 1)), lambda a: a.transpose(2, 0, 1)),
    "negative axes": (lambda x: x.transpose(-1, 0, -2), lambda a: a.transpose(2, 0, 1)),
    "F.transpose": (lambda x: F.transpose(x, (0, 2, 1)), lambda a: a.transpose(0, 2, 1)),
}


@pytest.mark.parametrize("name", TRANSPOSES)
def test_transpose(device, name):
    fn, reference = TRANSPOSES[name]
    x = rand((2, 3, 4))
    out = check(fn, [x], device)
    np.testing.assert_array_equal(out.numpy(), reference(x))


@pytest.mark.parametrize("shift, axis", [(1, 0), (-2, -1), (5, None), ((1, 2), (0, 2)), ((1, -3), (1, 1)),
                                         (2, (0, 1)), ([1, -1], [2, 0])], ids=str)
def test_roll(device, shift, axis):
    x = rand((2, 3, 4))
    out = check(lambda x: F.roll(x, shift, axis), [x], device)
    np.testing.assert_array_equal(out.numpy(), np.roll(x, shift, axis))


INDICES = {  # name: index, built from a function that puts arrays on the right device
    "slices": lambda d: (slice(None), slice(1, 3)),
    "negative strides": lambda d: (slice(None, None, -1), slice(None), slice(None, None, -2)),
    "integers": lambda d: (1, -1),
    "integer and slice": lambda d: (slice(0, 2), -2),
    "None and Ellipsis": lambda d: (None, 0, Ellipsis, None, slice(1, None)),
    "Ellipsis": lambda d: (Ellipsis, 2),
    "boolean mask": lambda d: d(np.array([[True, False, True], [False, False, True]])),
    "boolean mask on an axis": lambda d: (slice(None), slice(None), d(np.array([True, False, True, True]))),
    "repeated integer array": lambda d: d(np.array([0, 1, 0, 0])),
    "repeated 2-D integer array": lambda d: (slice(None), d(np.array([[2, 0], [2, 2]]))),
    "two integer arrays": lambda d: (d(np.array([1, 1, 0])), slice(None), d(np.array([3, 3, 0]))),
    "negative repeated integers": lambda d: (Ellipsis, d(np.array([-1, 3, -1, 0]))),
    "repeated list": lambda d: [1, 1, 0],
    "repeated list in a tuple": lambda d: ([1, 1, 0], slice(1, None)),
}


@pytest.mark.parametrize("name", INDICES)
def test_getitem(device, name):
    index = INDICES[name]
    x = rand((2, 3, 4))
    out = check(lambda x: x[index(lambda a: on(x, a))], [x], device)
    np.testing.assert_array_equal(out.numpy(), x[index(lambda a: a)])


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_getitem_with_repeated_indices_accumulates_the_gradient(device, dtype):
    rows = np.array([2, 0, 2, 2, 1, 2], dtype=dtype)
    x = leaf(rand((4, 3)), device)
    x[on(x, rows)].sum().backward()
    counts = np.bincount(rows, minlength=4).astype(float)
    np.testing.assert_array_equal(backend.asnumpy(x.grad), np.repeat(counts[:, None], 3, axis=1))


def test_getitem_with_tensors_inside_a_tuple_index(device):
    rows, mask = np.array([1, 1, 0]), np.array([True, False, True, True])
    x = rand((2, 3, 4))
    out = check(lambda x: x[minigrad.tensor(on(x, rows)), :, minigrad.tensor(on(x, mask))], [x], device)
    np.testing.assert_array_equal(out.numpy(), x[rows, :, mask])


def test_getitem_with_a_boolean_tensor(device):
    x = off_zero((3, 4))
    out = check(lambda x: x[x > 0.0], [x], device)
    np.testing.assert_array_equal(out.numpy(), x[x > 0.0])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate(device, axis):
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for size, shape in zip((1, 2, 3), shapes):
        shape[axis] = size
    arrays = [rand(shape, seed) for seed, shape in enumerate(shapes)]
    out = check(lambda a, b, c: F.concatenate([a, b, c], axis=axis), arrays, device)
    np.testing.assert_array_equal(out.numpy(), np.concatenate(arrays, axis=axis))


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_stack(device, axis):
    arrays = [rand((2, 3), seed) for seed in range(3)]
    out = check(lambda a, b, c: F.stack([a, b, c * b], axis=axis), arrays, device)
    np.testing.assert_allclose(out.numpy(), np.stack([arrays[0], arrays[1], arrays[2] * arrays[1]], axis=axis))


@pytest.mark.parametrize("pad_width", [1, (1, 2), ((1, 0), (0, 2), (2, 1)), [[0, 0], [1, 1], [0, 3]],
                                       ((1, 2),), (2,)], ids=str)
@pytest.mark.parametrize("value", [0.0, -0.5])
def test_pad(device, pad_width, value):
    x = rand((2, 3, 4))
    out = check(lambda x: F.pad(x, pad_width, value), [x], device)
    np.testing.assert_array_equal(out.numpy(), np.pad(x, pad_width, constant_values=value))


def test_pad_rejects_a_pad_width_for_the_wrong_number_of_axes():
    with pytest.raises(ValueError, match="pad_width"):
        F.pad(minigrad.tensor(np.ones((2, 3))), ((1, 1), (1, 1), (1, 1)))


@pytest.mark.parametrize("shapes", [((2, 3), (2, 3), (2, 3)), ((3, 1), (2, 1, 4), (4,)), ((2, 3, 4), (), (3, 4))],
                         ids=str)
def test_where(device, shapes):
    condition = rand(shapes[0], 9) > 0.0
    a, b = rand(shapes[1], 1), rand(shapes[2], 2)
    out = check(lambda a, b: F.where(on(a, condition), a, b), [a, b], device)
    np.testing.assert_array_equal(out.numpy(), np.where(condition, a, b))


def test_where_with_a_constant_branch(device):
    condition = rand((2, 3), 9) > 0.0
    b = rand((2, 3))
    out = check(lambda b: F.where(minigrad.tensor(on(b, condition)), 0.5, b), [b], device)
    np.testing.assert_array_equal(out.numpy(), np.where(condition, 0.5, b))


@pytest.mark.parametrize("mask_shape", [(2, 3, 4), (1, 3, 4), (4,)], ids=str)
def test_masked_fill(device, mask_shape):
    mask = rand(mask_shape, 3) > 0.2
    x = rand((2, 3, 4))
    out = check(lambda x: x.masked_fill(on(x, mask), -100.0) * x, [x], device)
    np.testing.assert_array_equal(out.numpy(), np.where(mask, -100.0, x) * x)


@pytest.mark.parametrize("shapes", [((3, 1), (2, 3, 4)), ((4,), (2, 3, 4)), ((), (2, 3)), ((2, 1, 1), (2, 3, 4))],
                         ids=str)
def test_broadcast_to(device, shapes):
    x = rand(shapes[0])
    out = check(lambda x: x.broadcast_to(shapes[1]), [x], device)
    np.testing.assert_array_equal(out.numpy(), np.broadcast_to(x, shapes[1]))


@pytest.mark.parametrize("start, end", [(0, -1), (1, -1), (0, 1), (1, 2)])
def test_flatten(device, start, end):
    x = rand((2, 3, 4))
    out = check(lambda x: x.flatten(start, end) ** 2, [x], device)
    shape = x.shape[:start] + (-1,) + x.shape[end % 3 + 1:]
    np.testing.assert_allclose(out.numpy(), x.reshape(shape) ** 2)


def test_flatten_of_a_0d_tensor_has_one_element():
    assert minigrad.tensor(np.float64(2.0)).flatten().shape == (1,)


@pytest.mark.parametrize("start, end", [(2, 1), (3, -1), (0, -4)])
def test_flatten_rejects_axes_out_of_range_or_out_of_order(start, end):
    with pytest.raises(ValueError, match="axis"):
        minigrad.tensor(np.ones((2, 3, 4))).flatten(start, end)


@pytest.mark.parametrize("axes", [(0, 5), (1, 2), (0, -3)], ids=str)
def test_transpose_rejects_axes_out_of_range(axes):
    with pytest.raises(ValueError, match="permutation"):
        minigrad.tensor(np.ones((2, 3))).transpose(*axes)


def test_numpy_integers_pass_as_axes_and_pad_widths():
    x = minigrad.tensor(np.ones((2, 3)))
    assert x.sum(axis=np.int64(1)).shape == (2,)
    assert F.pad(x, np.int64(1)).shape == (4, 5)
    assert F.pad(x, (np.int32(0), np.int32(2))).shape == (4, 5)
    assert F.pad(x, np.array([[1, 0], [0, 2]])).shape == (3, 5)


# ---- neural-network functions

@pytest.mark.parametrize("form", ["function", "method"])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax(device, axis, form):
    x = rand((2, 3, 4), 0, -3.0, 3.0)
    out = check(lambda x: F.softmax(x, axis=axis) if form == "function" else x.softmax(axis), [x], device)
    e = np.exp(x)
    np.testing.assert_allclose(out.numpy(), e / e.sum(axis=axis, keepdims=True), rtol=1e-14)
    np.testing.assert_allclose(out.numpy().sum(axis=axis), 1.0, rtol=1e-15)


def test_softmax_is_stable_for_large_inputs(device):
    x = rand((3, 5), 1, -5.0, 5.0)
    shifted = forward(lambda x: (x + 1000.0).softmax(), [x], device)
    np.testing.assert_allclose(shifted, forward(F.softmax, [x], device), rtol=1e-12)


def test_log_softmax_and_cross_entropy_are_stable_for_large_inputs(device):
    x = rand((3, 5), 1, -5.0, 5.0)
    target = np.array([4, 0, 2])
    for fn in (F.log_softmax, lambda x: F.cross_entropy(x, on(x, target), reduction="none")):
        shifted = forward(lambda x: fn(x + 1000.0), [x], device)
        np.testing.assert_allclose(shifted, forward(fn, [x], device), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_log_softmax(device, axis):
    x = rand((2, 3, 4), 0, -3.0, 3.0)
    out = check(lambda x: F.log_softmax(x, axis=axis), [x], device)
    # An ulp of a probability near 1 is an ulp of its log near 0 (as d log s = ds / s): hence atol.
    close = dict(rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(out.numpy(), np.log(forward(lambda x: F.softmax(x, axis), [x], device)), **close)
    np.testing.assert_allclose(out.numpy(), log_softmax_reference(x, axis), **close)


def cross_entropy_reference(logits, target, label_smoothing, reduction):
    log_probs = log_softmax_reference(logits)
    losses = -(1.0 - label_smoothing) * log_probs[np.arange(len(target)), target]
    losses -= label_smoothing * log_probs.mean(axis=-1)
    return {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(device, reduction, label_smoothing):
    logits = rand((5, 4), 0, -2.0, 2.0)
    target = np.array([3, 0, 3, 1, 2])
    out = check(lambda x: F.cross_entropy(x, on(x, target), label_smoothing, reduction), [logits], device)
    np.testing.assert_allclose(out.numpy(), cross_entropy_reference(logits, target, label_smoothing, reduction),
                               rtol=1e-14)


def test_cross_entropy_is_minus_the_mean_log_probability_of_the_target(device):
    logits = rand((6, 3), 2, -2.0, 2.0)
    target = np.array([0, 2, 1, 1, 0, 2])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(probs[np.arange(6), target]))
    loss = F.cross_entropy(minigrad.tensor(logits, device=device), backend.to_device(target, device))
    assert loss.shape == ()
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_cross_entropy_takes_signed_and_unsigned_integer_targets(device, dtype):
    logits = rand((4, 3), 3, -2.0, 2.0)
    target = np.array([2, 0, 1, 2])
    out = check(lambda x: F.cross_entropy(x, on(x, target.astype(dtype))), [logits], device)
    np.testing.assert_allclose(out.numpy(), cross_entropy_reference(logits, target, 0.0, "mean"), rtol=1e-14)


@pytest.mark.parametrize("target", [np.array([[0], [1], [2]]), np.array([0, 1]), np.array([0.0, 1.0, 2.0])],
                         ids=["2-D", "wrong length", "float"])
def test_cross_entropy_rejects_bad_targets(device, target):
    logits = minigrad.tensor(np.zeros((3, 4)), device=device)
    with pytest.raises(ValueError, match="target"):
        F.cross_entropy(logits, backend.to_device(target, device))


@pytest.mark.parametrize("target, hint", [([0, 4, 1], ""), ([-1, 0, 1], ""), ([1, 4, 2], "counted from 1")],
                         ids=["too large", "negative", "from 1"])
def test_cross_entropy_rejects_targets_out_of_range(target, hint):
    with pytest.raises(ValueError, match=f"class indices 0..3.*{hint}") as error:
        F.cross_entropy(minigrad.tensor(np.zeros((3, 4))), np.array(target))
    assert ("counted from 1" in str(error.value)) == bool(hint)  # a target 0 rules that reading out


@pytest.mark.parametrize("settings, message", [({"reduction": "average"}, "reduction"),
                                               ({"label_smoothing": -0.1}, "label_smoothing"),
                                               ({"label_smoothing": 1.5}, "label_smoothing")], ids=str)
def test_cross_entropy_rejects_bad_settings(device, settings, message):
    logits = minigrad.tensor(np.zeros((2, 3)), device=device)
    with pytest.raises(ValueError, match=message):
        F.cross_entropy(logits, backend.to_device(np.array([0, 2]), device), **settings)


def test_cross_entropy_with_full_label_smoothing_is_against_the_uniform_distribution(device):
    logits = rand((3, 4), 5, -2.0, 2.0)
    out = check(lambda x: F.cross_entropy(x, on(x, np.array([1, 0, 3])), label_smoothing=1.0), [logits], device)
    np.testing.assert_allclose(out.numpy(), -log_softmax_reference(logits).mean(), rtol=1e-14)


@pytest.mark.gpu
def test_cross_entropy_on_the_gpu_makes_a_target_out_of_range_a_nan_loss_and_gradient(gpu):
    """Checking there would wait for the GPU every step; CuPy would read another class instead."""
    logits = leaf(np.zeros((4, 4)), gpu)
    losses = F.cross_entropy(logits, backend.to_device(np.array([1, -1, 3, 4]), gpu), reduction="none")
    losses.sum().backward()
    np.testing.assert_array_equal(np.isnan(losses.numpy()), [False, True, False, True])
    np.testing.assert_allclose(losses.numpy()[[0, 2]], np.log(4.0), rtol=1e-15)
    grad = backend.asnumpy(logits.grad)
    assert np.isnan(grad[[1, 3]]).all()
    np.testing.assert_allclose(grad[[0, 2]], [[0.25, -0.75, 0.25, 0.25], [0.25, 0.25, 0.25, -0.75]], rtol=1e-15)


@pytest.mark.parametrize("affine", ["none", "weight", "bias", "weight and bias"])
def test_layer_norm(device, affine):
    x = rand((2, 3, 5), 0, -2.0, 2.0)
    weight, bias = rand((5,), 1, 0.5, 1.5), rand((5,), 2)
    fn, arrays = {"none": (lambda x: F.layer_norm(x, eps=1e-5), [x]),
                  "weight": (lambda x, w: F.layer_norm(x, w, eps=1e-5), [x, weight]),
                  "bias": (lambda x, b: F.layer_norm(x, None, b, eps=1e-5), [x, bias]),
                  "weight and bias": (lambda x, w, b: F.layer_norm(x, w, b, eps=1e-5), [x, weight, bias])}[affine]
    out = check(fn, arrays, device)
    expected = (x - x.mean(axis=-1, keepdims=True)) / np.sqrt(x.var(axis=-1, keepdims=True) + 1e-5)
    expected = expected * (weight if "weight" in affine else 1.0) + (bias if "bias" in affine else 0.0)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_with_no_backward_to_follow_keeps_nothing_and_gives_the_same_bits(device, dtype, affine):
    from minigrad.ops.neural import LayerNorm

    x = leaf(rand((1000, 384), 5).astype(dtype), device)  # more than two blocks: in row blocks, on the CPU
    weight, bias = (leaf(rand((384,), seed).astype(dtype), device) if affine else None for seed in (6, 7))
    out = F.layer_norm(x, weight, bias)
    with minigrad.no_grad():
        np.testing.assert_array_equal(F.layer_norm(x, weight, bias).numpy(), out.numpy())
    function = LayerNorm(eps=1e-5)
    function.needs_input_grad = (False, False, False)  # as under no_grad
    arrays = (None if a is None else a.data for a in (x, weight, bias))
    np.testing.assert_array_equal(backend.asnumpy(function.forward(*arrays)), out.numpy())
    assert not hasattr(function, "normalized") and out._creator.normalized.shape == x.shape


def test_layer_norm_default_eps_is_torchs_1e_5(device):
    x = rand((3, 6), 4, -0.01, 0.01)  # a variance near eps, so eps shows in the result
    expected = (x - x.mean(axis=-1, keepdims=True)) / np.sqrt(x.var(axis=-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(forward(F.layer_norm, [x], device), expected, rtol=1e-12)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("x_shape", [(3, 4), (2, 3, 4), (4,)], ids=str)
def test_linear(device, x_shape, with_bias):
    x, weight, bias = rand(x_shape, 0), rand((5, 4), 1), rand((5,), 2)
    arrays = [x, weight, bias] if with_bias else [x, weight]
    out = check(F.linear, arrays, device)
    np.testing.assert_allclose(out.numpy(), x @ weight.T + (bias if with_bias else 0.0), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("x_shape", [(3, 4), (2, 3, 4)], ids=str)
def test_linear_gelu(device, x_shape, with_bias):
    x, weight, bias = rand(x_shape, 0, -2.0, 2.0), rand((5, 4), 1), rand((5,), 2)
    arrays = [x, weight, bias] if with_bias else [x, weight]
    out = check(F.linear_gelu, arrays, device)
    np.testing.assert_allclose(out.numpy(), gelu_reference(x @ weight.T + (bias if with_bias else 0.0)),
                               rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_gelu_is_linear_then_gelu_bit_for_bit(device, dtype, with_bias):
    """Forward and every gradient, in blocks of rows on the CPU (the product spans several)."""
    x, weight = (leaf(rand(shape, seed).astype(dtype), device) for shape, seed in (((1100, 96), 3), ((500, 96), 4)))
    bias = leaf(rand((500,), 5).astype(dtype), device) if with_bias else None
    grad = rand((1100, 500), 6).astype(dtype)
    outputs = []
    for fn in (lambda: F.linear_gelu(x, weight, bias), lambda: F.gelu(F.linear(x, weight, bias))):
        out = fn()
        out.backward(minigrad.tensor(grad, device=device))
        with minigrad.no_grad():
            no_grad = fn().numpy()
        outputs.append([out.numpy(), no_grad] + [backend.asnumpy(a.grad) for a in (x, weight, bias) if a is not None])
        for a in (x, weight, bias):
            if a is not None:
                a.grad = None
    for fused, unfused in zip(*outputs):
        np.testing.assert_array_equal(fused, unfused)
    assert outputs[0][0].dtype == dtype


def test_linear_names_mismatched_features():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        F.linear(minigrad.tensor(np.ones((2, 3))), minigrad.tensor(np.ones((5, 4))))


# ---- dropout and drop-path

STOCHASTIC = {"dropout": F.dropout, "drop_path": F.drop_path}


@pytest.mark.parametrize("name", STOCHASTIC)
@pytest.mark.parametrize("p, training", [(0.0, True), (0.5, False), (0.0, False)])
def test_stochastic_op_is_the_identity_when_off(device, name, p, training):
    x = leaf(rand((4, 3)), device)
    assert STOCHASTIC[name](x, p, training) is x


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_op_gradient_with_a_fixed_mask(device, name):
    def fn(x):
        minigrad.manual_seed(3)
        return STOCHASTIC[name](x, 0.5, True)

    x = rand((6, 2, 3), 0, 0.5, 2.0)  # nonzero, so dropped and kept elements are told apart
    out = check(fn, [x], device, compare_with_cpu=False).numpy()  # each device has its own generator
    kept = out != 0.0
    assert 0 < kept.sum() < kept.size
    np.testing.assert_allclose(out[kept], x[kept] * 2.0, rtol=1e-15)
    if name == "drop_path":  # a whole sample is kept or dropped
        assert all(sample.all() or not sample.any() for sample in kept)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.75])
@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_op_keeps_1_minus_p_scaled_by_its_inverse(device, name, p):
    samples = 40000
    x = minigrad.tensor(np.ones((samples, 3), dtype=np.float32), device=device)
    out = STOCHASTIC[name](x, p, True).numpy()
    assert out.dtype == np.float32
    kept = out != 0.0
    np.testing.assert_allclose(out[kept], 1.0 / (1.0 - p), rtol=1e-6)
    trials = samples * 3 if name == "dropout" else samples
    fraction = kept.mean()
    sigma = math.sqrt(p * (1.0 - p) / trials)  # binomial standard deviation of the kept fraction
    assert abs(fraction - (1.0 - p)) < 5 * sigma


def test_dropout_with_p_1_zeroes_everything(device):
    """As torch: nothing kept, so the output and the gradient are all zeros (no 1/(1-p) = 1/0)."""
    x = leaf(positive((3, 4)), device)
    out = F.dropout(x, 1.0, True)
    out.sum().backward()
    np.testing.assert_array_equal(out.numpy(), np.zeros((3, 4)))
    np.testing.assert_array_equal(backend.asnumpy(x.grad), np.zeros((3, 4)))


@pytest.mark.parametrize("p", [1.5, -0.1])
@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_op_rejects_bad_probabilities(name, p):
    with pytest.raises(ValueError, match="probability"):
        STOCHASTIC[name](minigrad.tensor(np.ones(3)), p, True)


# ---- inputs that are views, dtypes, devices

def transposed_view(shape):
    return rand(shape[::-1], 11).T


def strided_view(shape):
    return rand((2 * shape[0],) + shape[1:], 12)[::-2]


VIEW_OPS = {
    "used twice": lambda x: x * x + x,
    "broadcast add": lambda x: x + on(x, np.arange(4.0)),
    "matmul": lambda x: x @ x.T,
    "sum over axes": lambda x: x.sum(axis=(0, 1), keepdims=True),
    "max": lambda x: x.max(axis=1),
    "var": lambda x: x.var(axis=0),
    "reshape and transpose": lambda x: x.reshape(2, 6).T,
    "roll": lambda x: x.roll((1, -1), (0, 1)),
    "getitem": lambda x: x[on(x, np.array([0, 2, 0]))],
    "pad": lambda x: F.pad(x, ((1, 0), (0, 2))),
    "softmax": F.softmax,
    "log_softmax": lambda x: F.log_softmax(x, axis=0),
    "layer_norm": F.layer_norm,
    "gelu": F.gelu,
    "cross_entropy": lambda x: F.cross_entropy(x, on(x, np.array([3, 0, 0])), label_smoothing=0.1),
}


@pytest.mark.parametrize("view", [transposed_view, strided_view])
@pytest.mark.parametrize("name", VIEW_OPS)
def test_non_contiguous_input(device, name, view):
    x = view((3, 4))
    assert not x.flags.c_contiguous
    if name == "max":
        x[...] = distinct((3, 4), 4)  # no ties
    check(VIEW_OPS[name], [x], device)


FLOAT32_OPS = {
    **{name: UNARY[name][0] for name in ("exp", "log", "sqrt", "tanh", "erf", "relu", "gelu", "scalar_pow_tensor",
                                         "used_twice", "scalar_over")},
    "sum": lambda x: x.sum(axis=1), "mean": lambda x: x.mean(axis=(0, 2)), "max": lambda x: x.max(axis=-1),
    "var": lambda x: x.var(axis=0, ddof=1), "matmul": lambda x: x @ x.transpose(0, 2, 1),
    "getitem": lambda x: x[on(x, np.array([1, 1]))], "pad": lambda x: F.pad(x, 1),
    "softmax": F.softmax, "log_softmax": F.log_softmax, "layer_norm": F.layer_norm,
    "cross_entropy": lambda x: F.cross_entropy(x.reshape(6, 4), on(x, np.arange(6) % 4), label_smoothing=0.1),
    "linear": lambda x: F.linear(x, x[0, :2]), "concatenate": lambda x: F.concatenate([x, x * 2.0], axis=1),
    "where": lambda x: F.where(x > 1.0, x, 1.0), "roll": lambda x: x.roll(1, 2),
}


@pytest.mark.parametrize("name", FLOAT32_OPS)
def test_float32_stays_float32(device, name):
    x = leaf(positive((2, 3, 4)).astype(np.float32), device)
    out = FLOAT32_OPS[name](x)
    out.backward(on(x, np.ones(out.shape, dtype=np.float32)))
    assert out.dtype == np.float32
    assert x.grad.dtype == np.float32


MIXED_DEVICE_OPS = {
    "add": lambda c, g: c + g,
    "mul": lambda c, g: g * c,
    "matmul": lambda c, g: c @ g,
    "host array": lambda c, g: g - c.numpy(),
    "concatenate": lambda c, g: F.concatenate([g, c]),
    "where": lambda c, g: F.where(c > 0.0, g, g),
    "layer_norm": lambda c, g: F.layer_norm(g, c[0]),
    "cross_entropy": lambda c, g: F.cross_entropy(g, np.array([0, 1, 0])),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", MIXED_DEVICE_OPS)
def test_mixing_cpu_and_gpu_names_both(name, gpu):
    on_cpu = minigrad.tensor(np.ones((3, 3)), requires_grad=True)
    on_gpu = minigrad.tensor(np.ones((3, 3)), requires_grad=True, device="gpu")
    with pytest.raises(RuntimeError, match="'cpu'.*'gpu'"):
        MIXED_DEVICE_OPS[name](on_cpu, on_gpu)
