"""Adam (Kingma & Ba 2015, Algorithm 1) and AdamW (Loshchilov & Hutter 2019), as torch.optim.

Both keep exponential moving averages of the gradient (m) and of its square (v), correct their
bias towards zero at the start, and step by lr * m^ / (sqrt(v^) + eps). They differ only in weight
decay: Adam adds it to the gradient (L2 regularisation, which the adaptive denominator then
rescales), AdamW shrinks the parameter directly by (1 - lr * wd), decoupled from the gradient.
"""
from __future__ import annotations

import math

from minigrad import backend, kernels
from optim.optimizer import Optimizer


def check_adam_settings(lr: float, betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    if lr < 0 or eps < 0 or weight_decay < 0:
        raise ValueError(f"lr, eps and weight_decay must be >= 0, got {lr}, {eps}, {weight_decay}")
    if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
        raise ValueError(f"betas must lie in [0, 1), got {betas}")


def next_step(grad, state) -> int:
    """The step count t of this update; before the first, m and v start at zero."""
    if "step" not in state:
        xp = backend.get_array_module(grad)
        state["step"] = 0
        state["exp_avg"] = xp.zeros_like(grad)
        state["exp_avg_sq"] = xp.zeros_like(grad)
    state["step"] += 1
    return state["step"]


def moments_(grad, exp_avg, exp_avg_sq, beta1: float, beta2: float) -> None:
    """m <- beta1 m + (1 - beta1) g and v <- beta2 v + (1 - beta2) g^2, in place.

    (The optimizers' arithmetic runs in place, through one scratch array: with a model's worth of
    parameters every pass over memory, and every fresh array, shows in the step time. Arrays that are
    written to later are made with ``out=``: for a 0-d parameter NumPy would return a scalar instead,
    which ``out=`` refuses and ``*=`` rebinds rather than updates.)
    """
    xp = backend.get_array_module(grad)
    # m += (1 - beta1) (g - m): torch's lerp, up to rounding
    scratch = xp.subtract(grad, exp_avg, out=xp.empty_like(exp_avg))
    scratch *= 1 - beta1
    exp_avg += scratch
    exp_avg_sq *= beta2
    xp.multiply(grad, 1 - beta2, out=scratch)
    scratch *= grad
    exp_avg_sq += scratch


def decay_and_moments_(parameter, grad, exp_avg, exp_avg_sq, factor: float, added: float, beta1: float,
                       beta2: float) -> None:
    """Weight decay, the parameter times ``factor`` and ``added`` times it added to the gradient
    (``Adam.decay``), then the moments, in place: how Adam's and RAdam's steps begin."""
    if factor != 1.0:
        parameter *= factor
    if added:
        grad = grad + added * parameter
    moments_(grad, exp_avg, exp_avg_sq, beta1, beta2)


def adam_step_(parameter, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, factor: float, added: float, beta1: float,
               beta2: float, eps: float, step_size: float, root_correction: float) -> None:
    """One Adam step on arrays, in place: weight decay and the moments (``decay_and_moments_``),
    then the step. NumPy's passes, the reference of the one CUDA kernel a GPU runs
    (``kernels.adam_update``)."""
    xp = backend.get_array_module(parameter)
    decay_and_moments_(parameter, grad, exp_avg, exp_avg_sq, factor, added, beta1, beta2)
    second_moment = exp_avg_sq
    if max_exp_avg_sq is not None:
        xp.maximum(max_exp_avg_sq, second_moment, out=max_exp_avg_sq)
        second_moment = max_exp_avg_sq
    step = xp.sqrt(second_moment, out=xp.empty_like(second_moment))  # the denominator, then, in place, the step
    step /= root_correction
    step += eps
    xp.divide(exp_avg, step, out=step)
    step *= step_size
    parameter -= step


class Adam(Optimizer):
    """Adam with L2 weight decay added to the gradient (torch.optim.Adam):

        g = grad + wd * p;  m, v updated;  p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    With ``amsgrad`` the denominator uses the running maximum of v (Reddi et al. 2018). On a GPU
    the whole step is one kernel a parameter array (a packed group's: one a group).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False):
        check_adam_settings(lr, betas, eps, weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def decay(self, group) -> tuple[float, float]:
        """Weight decay as (the factor the parameter is first multiplied by, the multiple of it added
        to the gradient). Adam's is L2 regularisation: the gradient of (wd / 2) |p|^2 joins the loss
        gradient."""
        return 1.0, group["weight_decay"]

    def update(self, parameter, grad, state, group):
        beta1, beta2 = group["betas"]
        t = next_step(grad, state)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = backend.get_array_module(grad).zeros_like(grad)
        factor, added = self.decay(group)
        backend.fused("adam_update", adam_step_, kernels.adam_update, parameter.data, grad, state["exp_avg"],
                      state["exp_avg_sq"], state.get("max_exp_avg_sq") if group["amsgrad"] else None, factor, added,
                      beta1, beta2, group["eps"], group["lr"] / (1 - beta1**t), math.sqrt(1 - beta2**t))


class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW): p <- p (1 - lr wd), then Adam's step."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)

    def decay(self, group) -> tuple[float, float]:
        return (1 - group["lr"] * group["weight_decay"], 0.0) if group["weight_decay"] else (1.0, 0.0)
