"""gradcheck itself: it passes right backwards and catches wrong ones, naming where."""
import numpy as np
import pytest

import minigrad
from minigrad import Function, backend, gradcheck


def inputs(device, *shapes, requires_grad=True, dtype=np.float64):
    rng = np.random.default_rng(1)
    return [minigrad.tensor(rng.uniform(0.5, 1.5, shape).astype(dtype), requires_grad=requires_grad, device=device)
            for shape in shapes]


class Square(Function):
    """x -> x^2, with the derivative 2x plus ``error`` at the elements ``wrong`` (a dict index -> error)."""

    def __init__(self, wrong=None):
        self.wrong = wrong or {}

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, grad):
        grad_x = 2.0 * self.x * grad
        for index, error in self.wrong.items():
            grad_x[index] += error
        return grad_x


def test_passes_a_correct_op(device):
    a, b = inputs(device, (3, 4), (4,))
    assert gradcheck(lambda a, b: (a * b).exp() / (a + b) + Square.apply(b), [a, b])


def test_passes_a_correct_op_with_projections(device):
    a, b = inputs(device, (3, 4), (4,))
    assert gradcheck(lambda a, b: (a @ b.reshape(4, 1)).tanh() * a, [a, b], projections=3)


class IgnoresUpstream(Function):
    """x -> x^2 whose backward forgets to multiply by the incoming gradient: right only for a
    cotangent of ones."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, grad):
        return 2.0 * self.x


def test_catches_a_backward_that_ignores_the_incoming_gradient(device):
    x, = inputs(device, (2, 3))
    with pytest.raises(AssertionError, match="input 0"):
        gradcheck(lambda x: IgnoresUpstream.apply(x), [x])


def test_an_input_the_output_does_not_depend_on_has_zero_gradient(device):
    a, unused = inputs(device, (2, 2), (3,))
    assert gradcheck(lambda a, unused: a * 2.0, [a, unused])


def test_a_gradient_left_from_an_earlier_backward_is_not_counted(device):
    x, = inputs(device, (2, 3))
    (x * 5.0).sum().backward()
    assert gradcheck(lambda x: Square.apply(x), [x])
    assert gradcheck(lambda x: Square.apply(x), [x], projections=2)


def test_names_the_worst_element(device):
    x, = inputs(device, (3, 4))
    with pytest.raises(AssertionError, match=r"input 0 \(shape \(3, 4\)\) at element \(2, 1\)"):
        gradcheck(lambda x: Square.apply(x, wrong={(0, 3): 1e-3, (2, 1): 1e-2}), [x])


def test_names_the_input(device):
    a, b = inputs(device, (2, 2), (2, 2))
    with pytest.raises(AssertionError, match=r"input 1 .* at element \(1, 0\)"):
        gradcheck(lambda a, b: a * 3.0 + Square.apply(b, wrong={(1, 0): 1e-4}), [a, b])


def test_projections_catch_a_wrong_backward(device):
    x, = inputs(device, (6, 5))
    with pytest.raises(AssertionError, match="projection"):
        gradcheck(lambda x: Square.apply(x, wrong={(4, 2): 1e-3}), [x], projections=2)


@pytest.mark.parametrize("projections", [None, 2])
def test_a_nan_gradient_fails(projections, device):
    x, = inputs(device, (2, 3))
    with pytest.raises(AssertionError, match="nan"):
        gradcheck(lambda x: Square.apply(x, wrong={(1, 1): np.nan}), [x], projections=projections)


def test_checks_non_contiguous_inputs_and_leaves_them_unchanged(device):
    values = np.random.default_rng(2).uniform(0.5, 1.5, (4, 3))
    x = minigrad.tensor(values, device=device).T
    x = minigrad.tensor(x.data, requires_grad=True)
    assert not x.data.flags.c_contiguous
    gradcheck(lambda x: Square.apply(x).sum(axis=0), [x])
    np.testing.assert_array_equal(backend.asnumpy(x.data), values.T)


@pytest.mark.parametrize("projections", [None, 3])
def test_leaves_the_inputs_unchanged(projections, device):
    x, = inputs(device, (3, 4))
    before = backend.asnumpy(x.data).copy()
    gradcheck(lambda x: (x * x).exp(), [x], projections=projections)
    np.testing.assert_array_equal(backend.asnumpy(x.data), before)


def test_inputs_without_grad_are_constants(device):
    a, = inputs(device, (2, 3))
    b, = inputs(device, (2, 3), requires_grad=False)
    assert gradcheck(lambda a, b: a * b, [a, b])
    assert b.grad is None


def test_float32_inputs_raise_type_error(device):
    x, = inputs(device, (2,), dtype=np.float32)
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda x: x * 2.0, [x])


def test_no_input_requiring_grad_raises_value_error(device):
    x, = inputs(device, (2,), requires_grad=False)
    with pytest.raises(ValueError, match="no input requires grad"):
        gradcheck(lambda x: x * 2.0, [x])
