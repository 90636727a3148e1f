"""The layers a transformer is built from, as their ``torch.nn`` namesakes."""
from __future__ import annotations

import math

from minigrad import functional as F
from minigrad.nn import init
from minigrad.nn.module import Module, Parameter
from minigrad.tensor import Tensor


class Linear(Module):
    """y = x W^T + b, W of shape (out_features, in_features), initialised as PyTorch does."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = init.kaiming_uniform_(Parameter.zeros(out_features, in_features), a=math.sqrt(5))
        bound = 1.0 / math.sqrt(in_features)
        self.bias = init.uniform_(Parameter.zeros(out_features), -bound, bound) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class LayerNorm(Module):
    """Normalise over the last axis (of size ``dim``), then scale by ``weight`` and shift by ``bias``."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = init.ones_(Parameter.zeros(dim))
        self.bias = Parameter.zeros(dim)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"LayerNorm({self.dim}) got an input whose last axis has size {x.shape[-1]}")
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class GELU(Module):
    """The exact (erf) GELU."""

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x)


class Dropout(Module):
    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DropPath(Module):
    """Stochastic depth on a residual branch (per-sample drop), as timm's."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Identity(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x
