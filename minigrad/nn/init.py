"""Weight initialisation, in place, as ``torch.nn.init`` and timm's ``trunc_normal_``."""
from __future__ import annotations

import math

from minigrad import backend
from minigrad.tensor import Tensor


def _fill(tensor: Tensor, values) -> Tensor:
    tensor.data = values.astype(tensor.dtype)
    return tensor


def zeros_(tensor: Tensor) -> Tensor:
    return _fill(tensor, backend.get_array_module(tensor.data).zeros_like(tensor.data))


def ones_(tensor: Tensor) -> Tensor:
    return _fill(tensor, backend.get_array_module(tensor.data).ones_like(tensor.data))


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """Samples from U(a, b)."""
    return _fill(tensor, a + (b - a) * backend.random_uniform(tensor.shape, tensor.dtype, tensor.device))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Samples from N(mean, std^2)."""
    return _fill(tensor, mean + std * backend.random_normal(tensor.shape, tensor.dtype, tensor.device))


def trunc_normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0) -> Tensor:
    """Samples from N(mean, std^2) conditioned on [a, b] (absolute bounds, as timm's).

    Rejection sampling: values outside [a, b] are drawn again until none is left, which gives
    exactly the truncated distribution.
    """
    if not a < b:
        raise ValueError(f"trunc_normal_ needs a < b, got a={a}, b={b}")
    xp = backend.get_array_module(tensor.data)
    values = mean + std * backend.random_normal(tensor.shape, "float64", tensor.device)
    outside = (values < a) | (values > b)
    while bool(outside.any()):
        redrawn = mean + std * backend.random_normal(tensor.shape, "float64", tensor.device)
        values = xp.where(outside, redrawn, values)
        outside = (values < a) | (values > b)
    return _fill(tensor, values)


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs feeding one output: in_features for a (out, in) weight, in * kh * kw for a conv."""
    if len(shape) < 2:
        raise ValueError(f"fan-in needs a weight of at least 2 dimensions, got shape {shape}")
    receptive = 1
    for n in shape[2:]:
        receptive *= n
    return shape[1] * receptive


def kaiming_uniform_(tensor: Tensor, a: float = 0.0) -> Tensor:
    """He initialisation for a leaky ReLU of slope ``a``: U(-bound, bound) with
    bound = sqrt(3) * gain / sqrt(fan_in), gain = sqrt(2 / (1 + a^2)) (fan-in mode).

    PyTorch's default for Linear and Conv weights is a = sqrt(5), i.e. bound = 1 / sqrt(fan_in).
    """
    gain = math.sqrt(2.0 / (1.0 + a * a))
    bound = math.sqrt(3.0) * gain / math.sqrt(fan_in(tensor.shape))
    return uniform_(tensor, -bound, bound)
