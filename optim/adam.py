"""Adam (Kingma & Ba 2015, Algorithm 1) and AdamW (Loshchilov & Hutter 2019), as torch.optim.

Both keep exponential moving averages of the gradient (m) and of its square (v), correct their
bias towards zero at the start, and step by lr * m^ / (sqrt(v^) + eps). They differ only in weight
decay: Adam adds it to the gradient (L2 regularisation, which the adaptive denominator then
rescales), AdamW shrinks the parameter directly by (1 - lr * wd), decoupled from the gradient.
"""
from __future__ import annotations

import math

from minigrad import backend
from optim.optimizer import Optimizer


def check_adam_settings(lr: float, betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    if lr < 0 or eps < 0 or weight_decay < 0:
        raise ValueError(f"lr, eps and weight_decay must be >= 0, got {lr}, {eps}, {weight_decay}")
    if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
        raise ValueError(f"betas must lie in [0, 1), got {betas}")


def update_moments(grad, state, beta1: float, beta2: float) -> int:
    """m <- beta1 m + (1 - beta1) g and v <- beta2 v + (1 - beta2) g^2, in place; returns step t.

    (The optimizers' arithmetic runs in place, through one scratch array: with a model's worth of
    parameters every pass over memory, and every fresh array, shows in the step time. Arrays that are
    written to later are made with ``out=``: for a 0-d parameter NumPy would return a scalar instead,
    which ``out=`` refuses and ``*=`` rebinds rather than updates.)
    """
    xp = backend.get_array_module(grad)
    if "step" not in state:
        state["step"] = 0
        state["exp_avg"] = xp.zeros_like(grad)
        state["exp_avg_sq"] = xp.zeros_like(grad)
    state["step"] += 1
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    # m += (1 - beta1) (g - m): torch's lerp, up to rounding
    scratch = xp.subtract(grad, exp_avg, out=xp.empty_like(exp_avg))
    scratch *= 1 - beta1
    exp_avg += scratch
    exp_avg_sq *= beta2
    xp.multiply(grad, 1 - beta2, out=scratch)
    scratch *= grad
    exp_avg_sq += scratch
    return state["step"]


class Adam(Optimizer):
    """Adam with L2 weight decay added to the gradient (torch.optim.Adam):

        g = grad + wd * p;  m, v updated;  p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    With ``amsgrad`` the denominator uses the running maximum of v (Reddi et al. 2018).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False):
        check_adam_settings(lr, betas, eps, weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def decay(self, parameter, grad, group):
        """L2 regularisation: the gradient of (wd / 2) |p|^2 joins the loss gradient."""
        return grad + group["weight_decay"] * parameter.data if group["weight_decay"] else grad

    def update(self, parameter, grad, state, group):
        xp = backend.get_array_module(grad)
        beta1, beta2 = group["betas"]
        grad = self.decay(parameter, grad, group)
        t = update_moments(grad, state, beta1, beta2)
        second_moment = state["exp_avg_sq"]
        if group["amsgrad"]:
            if "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = xp.zeros_like(grad)
            xp.maximum(state["max_exp_avg_sq"], second_moment, out=state["max_exp_avg_sq"])
            second_moment = state["max_exp_avg_sq"]
        step_size = group["lr"] / (1 - beta1**t)
        step = xp.sqrt(second_moment, out=xp.empty_like(second_moment))  # the denominator, then, in place, the step
        step /= math.sqrt(1 - beta2**t)
        step += group["eps"]
        xp.divide(state["exp_avg"], step, out=step)
        step *= step_size
        parameter.data -= step


class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW): p <- p (1 - lr wd), then Adam's step."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)

    def decay(self, parameter, grad, group):
        if group["weight_decay"]:
            parameter.data *= 1 - group["lr"] * group["weight_decay"]
        return grad
