"""minigrad: a small reverse-mode autograd on NumPy (CPU) and CuPy (GPU) arrays.

    import minigrad
    from minigrad import functional as F

    x = minigrad.tensor([[1.0, 2.0]], requires_grad=True)
    y = F.gelu(x @ x.T).sum()
    y.backward()          # x.grad now holds dy/dx
"""
from minigrad import functional, nn
from minigrad.backend import get_array_module, is_gpu_available, manual_seed
from minigrad.gradcheck import gradcheck
from minigrad.profiler import profile
from minigrad.serialization import load, save
from minigrad.tensor import Function, Tensor, is_grad_enabled, no_grad


def tensor(data, requires_grad: bool = False, device: str | None = None, dtype=None) -> Tensor:
    """Make a Tensor: arrays keep their dtype, Python numbers and lists become float32."""
    return Tensor(data, requires_grad=requires_grad, device=device, dtype=dtype)


__all__ = ["Function", "Tensor", "functional", "get_array_module", "gradcheck", "is_gpu_available",
           "is_grad_enabled", "load", "manual_seed", "nn", "no_grad", "profile", "save", "tensor"]
