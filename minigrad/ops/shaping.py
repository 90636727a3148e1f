"""Operations that move elements without changing them: reshape, transpose, roll, indexing,
concatenate, stack, pad, broadcast_to.

Their backward moves the gradient back the same way: the inverse reshape, the inverse permutation,
the opposite roll, a scatter into zeros (adding where an index repeats), a split, a crop.
"""
from __future__ import annotations

import numbers

from minigrad import backend
from minigrad.tensor import Function, sum_to_shape


class Reshape(Function):
    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape

    def forward(self, x):
        self.input_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(f"cannot reshape a tensor of shape {x.shape} ({x.size} elements) "
                             f"into shape {self.shape}") from None

    def backward(self, grad):
        return grad.reshape(self.input_shape)


class Transpose(Function):
    """Permute axes (all of them reversed when ``axes`` is None), as ``numpy.transpose``."""

    def __init__(self, axes: tuple[int, ...] | None):
        self.axes = axes

    def forward(self, x):
        axes = tuple(reversed(range(x.ndim))) if self.axes is None else tuple(self.axes)
        in_range = all(-x.ndim <= a < x.ndim for a in axes)
        axes = tuple(a % x.ndim for a in axes)
        if not in_range or sorted(axes) != list(range(x.ndim)):
            raise ValueError(f"transpose axes {self.axes} are not a permutation of the {x.ndim} axes")
        self.inverse = tuple(axes.index(i) for i in range(x.ndim))
        return x.transpose(axes)

    def backward(self, grad):
        return grad.transpose(self.inverse)


class Roll(Function):
    """Cyclic shift along axes (``numpy.roll``); elements leaving one end enter at the other."""

    def __init__(self, shift, axis):
        self.shift, self.axis = shift, axis

    def forward(self, x):
        return backend.get_array_module(x).roll(x, self.shift, self.axis)

    def backward(self, grad):
        back = tuple(-s for s in self.shift) if isinstance(self.shift, (tuple, list)) else -self.shift
        return backend.get_array_module(grad).roll(grad, back, self.axis)


def _lists_to_arrays(index, xp):
    """Index lists as arrays on the indexed array's device (CuPy's add.at takes only arrays)."""
    parts = index if isinstance(index, tuple) else (index,)
    parts = tuple(xp.asarray(part) if isinstance(part, list) else part for part in parts)
    return parts if isinstance(index, tuple) else parts[0]


def _has_integer_array(index) -> bool:
    """True when ``index`` holds an integer array, which may repeat positions."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(getattr(part, "ndim", 0) > 0 and part.dtype.kind in "iu" for part in parts)


class GetItem(Function):
    """``x[index]`` for slices, strides, integers, None, Ellipsis, boolean masks and integer arrays.

    Backward scatters the gradient into zeros; with integer arrays an element picked twice gets
    both gradients (``scatter_add``), otherwise plain assignment is exact and faster.

    On the GPU an integer index out of range wraps around instead of raising: CuPy does not check
    it, since that would wait for the device.
    """

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.input_shape, self.dtype = x.shape, x.dtype
        self.index = _lists_to_arrays(self.index, backend.get_array_module(x))
        return x[self.index]

    def backward(self, grad):
        xp = backend.get_array_module(grad)
        full = xp.zeros(self.input_shape, dtype=self.dtype)
        if _has_integer_array(self.index):
            backend.scatter_add(full, self.index, grad)
        else:
            full[self.index] = grad
        return full


class Concatenate(Function):
    def __init__(self, axis: int = 0):
        self.axis = axis

    def forward(self, *arrays):
        self.sizes = [a.shape[self.axis] for a in arrays]
        return backend.get_array_module(arrays[0]).concatenate(arrays, axis=self.axis)

    def backward(self, grad):
        xp = backend.get_array_module(grad)
        bounds, total = [], 0
        for size in self.sizes[:-1]:
            total += size
            bounds.append(total)
        return tuple(xp.split(grad, bounds, axis=self.axis))


class Stack(Function):
    def __init__(self, axis: int = 0):
        self.axis = axis

    def forward(self, *arrays):
        return backend.get_array_module(arrays[0]).stack(arrays, axis=self.axis)

    def backward(self, grad):
        moved = backend.get_array_module(grad).moveaxis(grad, self.axis, 0)
        return tuple(moved)


def normalize_pad_width(pad_width, ndim: int) -> tuple[tuple[int, int], ...]:
    """NumPy's ``pad_width`` forms (n, (n,), (before, after), ((before, after),), or one pair per
    axis) as one pair per axis."""
    if hasattr(pad_width, "tolist"):  # a NumPy array of widths, as numpy.pad takes
        pad_width = pad_width.tolist()
    if isinstance(pad_width, numbers.Integral):
        return ((int(pad_width), int(pad_width)),) * ndim
    pairs = tuple(tuple(map(int, p)) if isinstance(p, (tuple, list)) else int(p) for p in pad_width)
    if len(pairs) == 1:  # (n,) or ((before, after),): the same for every axis
        pairs = (pairs[0] if isinstance(pairs[0], tuple) else (pairs[0], pairs[0]),) * ndim
    if len(pairs) == 2 and all(isinstance(p, int) for p in pairs):
        return (pairs,) * ndim
    if len(pairs) != ndim or any(not isinstance(p, tuple) or len(p) != 2 for p in pairs):
        raise ValueError(f"pad_width {pad_width!r} does not give (before, after) for each of {ndim} axes")
    return pairs


class Pad(Function):
    """Constant padding (``numpy.pad``); backward crops the padding off."""

    def __init__(self, pad_width, value: float = 0.0):
        self.pad_width, self.value = pad_width, value

    def forward(self, x):
        self.pairs = normalize_pad_width(self.pad_width, x.ndim)
        return backend.get_array_module(x).pad(x, self.pairs, constant_values=self.value)

    def backward(self, grad):
        return grad[tuple(slice(before, n - after) for (before, after), n in zip(self.pairs, grad.shape))]


class BroadcastTo(Function):
    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape

    def forward(self, x):
        self.input_shape = x.shape
        return backend.get_array_module(x).broadcast_to(x, self.shape)

    def backward(self, grad):
        return sum_to_shape(grad, self.input_shape)
