"""Finite-difference gradient checking: the proof that every backward is right.

For a function f of tensors, pick a fixed cotangent v and compare the analytic gradient of
L = sum(v * f(inputs)) (one backward pass) with central differences
(L(x + eps e_i) - L(x - eps e_i)) / (2 eps), element by element, in float64. For big inputs,
``projections=k`` instead compares sum(grad * d) with the difference quotient along k directions d,
which costs 2k evaluations instead of two per element.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

from minigrad import backend
from minigrad.tensor import Tensor, no_grad


def _pattern(xp, shape, salt: int):
    """Deterministic, irregular values in about [-1.5, 1.5] (no random state is touched)."""
    count = 1
    for n in shape:
        count *= n
    k = xp.arange(count, dtype=xp.float64)
    return (xp.sin(k * 1.618 + 0.37 * salt + 0.5) + 0.5 * xp.cos(k * 0.577 + salt)).reshape(shape)


def gradcheck(fn: Callable[..., Tensor], inputs: Sequence[Tensor], eps: float = 1e-6, atol: float = 1e-7,
              rtol: float = 1e-5, projections: int | None = None) -> bool:
    """Check the gradients of ``fn(*inputs)`` for every input that requires grad.

    Inputs must be float64. Returns True, or raises AssertionError naming the input, the worst
    element (or projection), the analytic and numeric values and the tolerance it broke.
    """
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad, so there is nothing to check")
    for i in checked:
        if inputs[i].dtype != "float64":
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; use float64, or rounding swamps "
                            f"the finite differences")
    output = fn(*inputs)
    xp = backend.get_array_module(output.data)
    cotangent = _pattern(xp, output.shape, salt=0).astype(output.dtype)

    def loss() -> float:
        with no_grad():
            return float((fn(*inputs).data * cotangent).sum())

    for i in checked:
        inputs[i].grad = None
    (output * cotangent).sum().backward()

    for i in checked:
        x = inputs[i]
        analytic = x.grad if x.grad is not None else xp.zeros_like(x.data)
        if projections is None:
            _check_elementwise(i, x, analytic, loss, eps, atol, rtol)
        else:
            _check_projections(i, x, analytic, loss, eps, atol, rtol, projections)
    return True


def _check_elementwise(i, x, analytic, loss, eps, atol, rtol) -> None:
    worst = None
    for index in itertools.product(*(range(n) for n in x.shape)):
        original = float(x.data[index])
        x.data[index] = original + eps
        plus = loss()
        x.data[index] = original - eps
        minus = loss()
        x.data[index] = original
        numeric = (plus - minus) / (2 * eps)
        exact = float(analytic[index])
        excess = abs(exact - numeric) - (atol + rtol * abs(numeric))
        if math.isnan(excess):  # a NaN (analytic or numeric) is the worst mismatch, not none at all
            excess = math.inf
        if worst is None or excess > worst[0]:
            worst = (excess, index, exact, numeric)
    if worst is not None and worst[0] > 0:
        _fail(i, x, f"element {worst[1]}", worst[2], worst[3], atol, rtol)


def _check_projections(i, x, analytic, loss, eps, atol, rtol, projections) -> None:
    xp = backend.get_array_module(x.data)
    original = x.data.copy()
    for k in range(projections):
        direction = _pattern(xp, x.shape, salt=k + 1)
        x.data[...] = original + eps * direction
        plus = loss()
        x.data[...] = original - eps * direction
        minus = loss()
        x.data[...] = original
        numeric = (plus - minus) / (2 * eps)
        exact = float((analytic * direction).sum())
        if not abs(exact - numeric) <= atol + rtol * abs(numeric):  # NaN fails too
            _fail(i, x, f"projection {k}", exact, numeric, atol, rtol)


def _fail(i, x, where, exact, numeric, atol, rtol) -> None:
    raise AssertionError(
        f"gradcheck failed for input {i} (shape {x.shape}) at {where}: analytic {exact:.12g}, "
        f"numeric {numeric:.12g}, |difference| {abs(exact - numeric):.3g} > "
        f"atol + rtol * |numeric| = {atol + rtol * abs(numeric):.3g}")
