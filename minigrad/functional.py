"""``minigrad.functional`` (imported as ``F``): every differentiable operation as a function.

Names follow ``torch.nn.functional``; dimensions are NumPy's ``axis`` keywords. Arguments may be
tensors, arrays or Python numbers; the result is a Tensor that records the operation for backward.
"""
from __future__ import annotations

from typing import Any, Sequence

from minigrad import backend, kernels
from minigrad.ops.elementwise import GELU, Add, Div, Erf, Exp, Log, Mul, Neg, Pow, ReLU, Sqrt, Sub, Tanh, Where
from minigrad.ops.neural import CrossEntropy, LayerNorm, Linear, LinearGELU, LogSoftmax, Matmul, Softmax
from minigrad.ops.reduction import Max, Mean, Sum, Var, normalize_axes
from minigrad.ops.shaping import BroadcastTo, Concatenate, GetItem, Pad, Reshape, Roll, Stack, Transpose
from minigrad.tensor import Tensor, data_of

TensorLike = Any  # a Tensor, an array, or a Python number


# ---- arithmetic and elementwise functions

def add(a: TensorLike, b: TensorLike) -> Tensor:
    return Add.apply(a, b)


def sub(a: TensorLike, b: TensorLike) -> Tensor:
    return Sub.apply(a, b)


def mul(a: TensorLike, b: TensorLike) -> Tensor:
    return Mul.apply(a, b)


def div(a: TensorLike, b: TensorLike) -> Tensor:
    return Div.apply(a, b)


def neg(x: TensorLike) -> Tensor:
    return Neg.apply(x)


def pow(base: TensorLike, exponent: TensorLike) -> Tensor:  # noqa: A001  (torch's name)
    return Pow.apply(base, exponent)


def exp(x: TensorLike) -> Tensor:
    return Exp.apply(x)


def log(x: TensorLike) -> Tensor:
    return Log.apply(x)


def sqrt(x: TensorLike) -> Tensor:
    return Sqrt.apply(x)


def tanh(x: TensorLike) -> Tensor:
    return Tanh.apply(x)


def erf(x: TensorLike) -> Tensor:
    return Erf.apply(x)


def relu(x: TensorLike) -> Tensor:
    return ReLU.apply(x)


def gelu(x: TensorLike) -> Tensor:
    """GELU in its exact form, x * Phi(x) (what the reference Swin uses, not the tanh estimate)."""
    return GELU.apply(x)


def where(condition: TensorLike, a: TensorLike, b: TensorLike) -> Tensor:
    """``a`` where ``condition`` holds, else ``b`` (``numpy.where``); differentiable in a and b."""
    return Where.apply(data_of(condition), a, b)


def masked_fill(x: TensorLike, mask: TensorLike, value: float) -> Tensor:
    """``x`` with ``value`` wherever ``mask`` (broadcastable to x) is True."""
    return Where.apply(data_of(mask), value, x)


# ---- reductions

def sum(x: TensorLike, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x: TensorLike, axis=None, keepdims: bool = False) -> Tensor:
    return Mean.apply(x, axis=axis, keepdims=keepdims)


def max(x: TensorLike, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Max.apply(x, axis=axis, keepdims=keepdims)


def var(x: TensorLike, axis=None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Variance with NumPy's default ``ddof=0`` (torch's default is the unbiased ``ddof=1``)."""
    return Var.apply(x, axis=axis, keepdims=keepdims, ddof=ddof)


# ---- moving elements

def reshape(x: TensorLike, shape: Sequence[int]) -> Tensor:
    return Reshape.apply(x, shape=tuple(shape))


def transpose(x: TensorLike, axes: Sequence[int] | None = None) -> Tensor:
    """Permute the axes (reverse them when ``axes`` is None), as ``numpy.transpose``."""
    return Transpose.apply(x, axes=None if axes is None else tuple(axes))


permute = transpose


def flatten(x: TensorLike, start_axis: int = 0, end_axis: int = -1) -> Tensor:
    """Merge axes ``start_axis..end_axis`` (inclusive) into one, as ``torch.flatten``."""
    shape = data_of(x).shape or (1,)  # a 0-d tensor flattens to one element, as in torch
    start, end = (normalize_axes(axis, len(shape))[0] for axis in (start_axis, end_axis))
    if start > end:
        raise ValueError(f"flatten: start_axis {start_axis} comes after end_axis {end_axis} in a tensor of "
                         f"{len(shape)} axes")
    merged = 1
    for n in shape[start:end + 1]:
        merged *= n
    return reshape(x, shape[:start] + (merged,) + shape[end + 1:])


def broadcast_to(x: TensorLike, shape: Sequence[int]) -> Tensor:
    return BroadcastTo.apply(x, shape=tuple(shape))


def roll(x: TensorLike, shift, axis) -> Tensor:
    """Cyclic shift by ``shift`` along ``axis`` (ints or tuples of them), as ``numpy.roll``."""
    return Roll.apply(x, shift=shift, axis=axis)


def getitem(x: TensorLike, index) -> Tensor:
    """``x[index]``; tensors inside ``index`` are used as their arrays."""
    if isinstance(index, tuple):
        index = tuple(data_of(part) for part in index)
    else:
        index = data_of(index)
    return GetItem.apply(x, index=index)


def concatenate(tensors: Sequence[TensorLike], axis: int = 0) -> Tensor:
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors: Sequence[TensorLike], axis: int = 0) -> Tensor:
    return Stack.apply(*tensors, axis=axis)


def pad(x: TensorLike, pad_width, value: float = 0.0) -> Tensor:
    """Constant padding with NumPy's ``pad_width`` ((before, after) per axis, or one for all)."""
    return Pad.apply(x, pad_width=pad_width, value=value)


# ---- neural-network functions

def matmul(a: TensorLike, b: TensorLike) -> Tensor:
    """Matrix product with NumPy's rules: batched over leading axes, which broadcast."""
    shape_a, shape_b = data_of(a).shape, data_of(b).shape
    if not shape_a or not shape_b:
        raise ValueError(f"matmul needs arrays of at least one dimension, got shapes {shape_a} and {shape_b}")
    inner_b = shape_b[0] if len(shape_b) == 1 else shape_b[-2]
    if shape_a[-1] != inner_b:
        raise ValueError(f"matmul of shapes {shape_a} and {shape_b}: the last axis of the first ({shape_a[-1]}) "
                         f"must equal the {'only' if len(shape_b) == 1 else 'second-to-last'} axis of the "
                         f"second ({inner_b})")
    return Matmul.apply(a, b)


def linear(x: TensorLike, weight: TensorLike, bias: TensorLike | None = None) -> Tensor:
    """x @ weight.T + bias, with weight of shape (out_features, in_features)."""
    _check_features(x, weight)
    return Linear.apply(x, weight, bias)


def _check_features(x: TensorLike, weight: TensorLike) -> None:
    if data_of(x).shape[-1] != data_of(weight).shape[-1]:
        raise ValueError(f"linear: input of shape {data_of(x).shape} has {data_of(x).shape[-1]} features, but the "
                         f"weight of shape {data_of(weight).shape} expects {data_of(weight).shape[-1]}")


def linear_gelu(x: TensorLike, weight: TensorLike, bias: TensorLike | None = None) -> Tensor:
    """``gelu(linear(x, weight, bias))`` as one op, the same values: the bias is added where GELU
    finds it in the caches, a pass over the product saved."""
    _check_features(x, weight)
    return LinearGELU.apply(x, weight, bias)


def softmax(x: TensorLike, axis: int = -1) -> Tensor:
    return Softmax.apply(x, axis=axis)


def log_softmax(x: TensorLike, axis: int = -1) -> Tensor:
    return LogSoftmax.apply(x, axis=axis)


def cross_entropy(logits: TensorLike, target: TensorLike, label_smoothing: float = 0.0,
                  reduction: str = "mean") -> Tensor:
    """Cross-entropy of logits (N, C) against integer class indices (N,) in 0..C-1, as ``torch``'s.

    ``reduction`` is ``"mean"`` (default), ``"sum"`` or ``"none"`` (one loss per sample). Targets
    on the CPU are checked here; on the GPU that check would wait for the device at every step, so
    there a target out of range makes its sample's loss NaN instead.
    """
    logits_shape, target_array = data_of(logits).shape, data_of(target)
    if len(logits_shape) != 2:
        raise ValueError(f"cross_entropy expects logits of shape (N, C), got {logits_shape}")
    if target_array.shape != logits_shape[:1] or target_array.dtype.kind not in "iu":
        raise ValueError(f"cross_entropy expects integer targets of shape ({logits_shape[0]},), got "
                         f"{target_array.dtype} of shape {target_array.shape}")
    if backend.device_of(target_array) == "cpu" and target_array.size:
        low, high, classes = int(target_array.min()), int(target_array.max()), logits_shape[1]
        if low < 0 or high >= classes:
            hint = " (labels counted from 1? subtract 1)" if low >= 1 and high == classes else ""
            raise ValueError(f"cross_entropy expects class indices 0..{classes - 1}, got targets from {low} to "
                             f"{high}{hint}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], not {label_smoothing}")
    return CrossEntropy.apply(logits, target_array, label_smoothing=label_smoothing, reduction=reduction)


def layer_norm(x: TensorLike, weight: TensorLike | None = None, bias: TensorLike | None = None,
               eps: float = 1e-5) -> Tensor:
    """Normalise over the last axis to zero mean and unit variance, then scale and shift."""
    return LayerNorm.apply(x, weight, bias, eps=eps)


def dropout(x: TensorLike, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p); identity in eval."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1], not {p}")
    x = x if isinstance(x, Tensor) else Tensor(x)
    if not training or p == 0.0:
        return x
    return mul(x, keep_mask(x, x.shape, p))


def drop_path(x: TensorLike, p: float = 0.0, training: bool = True) -> Tensor:
    """Stochastic depth: drop a whole sample's residual branch with probability ``p``, scaling
    the kept ones by 1/(1-p) (timm's ``drop_path``); identity in eval or when p is 0."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop_path probability must lie in [0, 1), not {p}")
    x = x if isinstance(x, Tensor) else Tensor(x)
    if not training or p == 0.0:
        return x
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return mul(x, keep_mask(x, shape, p))


def keep_mask(x: Tensor, shape: tuple[int, ...], p: float):
    """Dropout's multiplier, an array of ``shape``: 1/(1-p) with probability 1-p, else 0, in x's
    dtype and on x's device."""
    uniform = backend.random_uniform(shape, x.dtype, x.device)
    return kernels.dropout_keep(uniform, p, 1.0 / (1.0 - p) if p < 1.0 else 0.0)  # one kernel on a GPU
