"""Gradient clipping by global norm, as ``torch.nn.utils.clip_grad_norm_``."""
from __future__ import annotations

from typing import Iterable

from minigrad import backend, profiler
from minigrad.tensor import Tensor
from optim.flat import packed_gradients


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float, *, eps: float = 1e-6) -> Tensor:
    """Scale all gradients together so their joint L2 norm is at most ``max_norm``.

    Returns the norm before clipping, as a 0-d tensor on the gradients' device: reading it
    (``.item()``) is the caller's choice, so a training step need not wait for the GPU here.
    The scale is min(1, max_norm / (norm + eps)), applied without a branch on the device value.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = packed_gradients(parameters)  # an optimizer's flat buffers, where it packed them
    if not grads:
        raise ValueError("clip_grad_norm_: no parameter has a gradient; call backward() first")
    device = backend.device_of(grads[0])
    return Tensor(profiler.measured("clip_grad_norm_", "clipping", _clip, grads, max_norm, eps, device=device))


def _clip(grads: list, max_norm: float, eps: float):
    """Scale ``grads`` in place; return their norm before, as a 0-d array."""
    xp = backend.get_array_module(grads[0])
    # One stack and one sum, and the scale cast once per dtype: on the GPU every operation is a
    # kernel launch, and a Swin has some 170 gradients where no optimizer packed them.
    total = xp.sqrt(xp.stack([(g * g).sum() for g in grads]).sum())
    scale = xp.minimum(max_norm / (total + eps), 1.0)
    scales = {dtype: scale.astype(dtype) for dtype in {g.dtype for g in grads}}
    for g in grads:
        g *= scales[g.dtype]
    return xp.asarray(total)  # NumPy's sum is a scalar, and np.float64 would pass as a Python float
