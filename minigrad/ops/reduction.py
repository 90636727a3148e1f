"""Reductions over axes: sum, mean, max, var (NumPy's ``axis`` and ``keepdims``).

Each backward reshapes the incoming gradient to the kept-dims shape and lets broadcasting spread
it back over the reduced axes.
"""
from __future__ import annotations

import numbers

from minigrad import backend
from minigrad.tensor import Function


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    """``axis`` (None, an int or a tuple, negatives allowed) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for an array of {ndim} dimensions")
    return tuple(sorted(a % ndim for a in axes))


class _Reduction(Function):
    def __init__(self, axis=None, keepdims: bool = False):
        self.axis = axis
        self.keepdims = keepdims

    def _setup(self, x):
        self.axes = normalize_axes(self.axis, x.ndim)
        self.input_shape = x.shape
        self.count = 1
        for a in self.axes:
            self.count *= x.shape[a]

    def _kept(self, grad):
        """``grad`` with the reduced axes restored as size 1."""
        if self.keepdims:
            return grad
        shape = tuple(1 if i in self.axes else n for i, n in enumerate(self.input_shape))
        return grad.reshape(shape)


class Sum(_Reduction):
    def forward(self, x):
        self._setup(x)
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, grad):
        return backend.get_array_module(grad).broadcast_to(self._kept(grad), self.input_shape)


class Mean(_Reduction):
    def forward(self, x):
        self._setup(x)
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, grad):
        xp = backend.get_array_module(grad)
        return xp.broadcast_to(self._kept(grad) / self.count, self.input_shape)


class Max(_Reduction):
    """The gradient goes to the maximal elements, shared equally between ties."""

    def forward(self, x):
        self._setup(x)
        out = x.max(axis=self.axes, keepdims=True)
        self.winners = x == out
        return out if self.keepdims else out.reshape(tuple(n for i, n in enumerate(x.shape) if i not in self.axes))

    def backward(self, grad):
        ties = self.winners.sum(axis=self.axes, keepdims=True, dtype=grad.dtype)  # float32 stays float32
        return self.winners * (self._kept(grad) / ties)


class Var(_Reduction):
    """var = sum (x - mean)^2 / (n - ddof); d var / dx = 2 (x - mean) / (n - ddof).

    (The mean's own dependence on x drops out because the deviations sum to zero.)
    """

    def __init__(self, axis=None, keepdims: bool = False, ddof: int = 0):
        super().__init__(axis, keepdims)
        self.ddof = ddof

    def forward(self, x):
        self._setup(x)
        self.centered = x - x.mean(axis=self.axes, keepdims=True)
        self.divisor = self.count - self.ddof
        return (self.centered * self.centered).sum(axis=self.axes, keepdims=self.keepdims) / self.divisor

    def backward(self, grad):
        return self._kept(grad) * (2.0 / self.divisor) * self.centered
