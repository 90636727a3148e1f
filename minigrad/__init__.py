"""minigrad: a small reverse-mode autograd on NumPy (CPU) and CuPy (GPU) arrays.

    import minigrad
    from minigrad import functional as F

    x = minigrad.tensor([[1.0, 2.0]], requires_grad=True)
    y = F.gelu(x @ x.T).sum()
    y.backward()          # x.grad now holds dy/dx
"""
import os

# NumPy's OpenBLAS keeps its threads spinning for some 0.1 s after each matrix product; on a CPU of
# few cores they take the cores from the elementwise work that follows (GELU ran 1.6 times slower
# right after a product). Told before NumPy loads it, OpenBLAS lets them sleep at once, at no cost
# to the products. (Without effect where NumPy was imported first, or the variable is set.)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from minigrad import functional, nn  # noqa: E402 (after the variable above)
from minigrad.backend import get_array_module, is_gpu_available, manual_seed  # noqa: E402
from minigrad.gradcheck import gradcheck  # noqa: E402
from minigrad.profiler import profile  # noqa: E402
from minigrad.serialization import load, save  # noqa: E402
from minigrad.tensor import Function, Tensor, is_grad_enabled, no_grad  # noqa: E402


def tensor(data, requires_grad: bool = False, device: str | None = None, dtype=None) -> Tensor:
    """Make a Tensor: arrays keep their dtype, Python numbers and lists become float32."""
    return Tensor(data, requires_grad=requires_grad, device=device, dtype=dtype)


__all__ = ["Function", "Tensor", "functional", "get_array_module", "gradcheck", "is_gpu_available",
           "is_grad_enabled", "load", "manual_seed", "nn", "no_grad", "profile", "save", "tensor"]
