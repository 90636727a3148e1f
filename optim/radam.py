"""RAdam: Adam with a rectified adaptive learning rate (Liu et al. 2019, Algorithm 2), as torch.optim.RAdam.

Why rectify. Adam divides by sqrt(v^), an estimate of the gradient's second moment from an
exponential moving average. In the first steps that average rests on very few gradients, so the
adaptive rate 1/sqrt(v^) has a large (for t = 1, unbounded) variance, and Adam needs a warm-up to
keep early steps small. Treating the average as a simple average over rho_t samples, with

    rho_inf = 2 / (1 - beta2) - 1,    rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t),

the variance of the adaptive rate is finite only when rho_t > 4; RAdam uses it (scaled by
r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)), which makes its
variance match the limit's) only once rho_t > 5, and until then takes the un-adapted step
lr * m^, i.e. SGD with (bias-corrected) momentum.

rho_t grows with t towards rho_inf. With beta2 = 0.999 the first adaptive step is t = 6
(rho_5 = 4.996, rho_6 = 5.994). With beta2 <= 2/3, rho_inf <= 5 so rho_t never exceeds 5: RAdam is
then SGD with momentum for ever (the lab's beta2 = 0.6 case).
"""
from __future__ import annotations

import math

from minigrad import backend, kernels
from optim.adam import check_adam_settings, decay_and_moments_, next_step
from optim.optimizer import Optimizer


def rho(t: int, beta2: float) -> float:
    """The length of the approximated simple moving average at step t (rho_t above)."""
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    return rho_inf - 2.0 * t * beta2**t / (1.0 - beta2**t)


def rectification(t: int, beta2: float) -> float | None:
    """r_t when the adaptive rate is used at step t (rho_t > 5), else None."""
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho(t, beta2)
    if rho_t <= 5.0:
        return None
    return math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))


class RAdam(Optimizer):
    """p -= lr * m^ * r_t * sqrt(1 - beta2^t) / (sqrt(v) + eps) when rho_t > 5, else p -= lr * m^.

    ``weight_decay`` is L2 (added to the gradient) unless ``decoupled_weight_decay``, which shrinks
    the parameter by (1 - lr wd) first, as AdamW does.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *, maximize: bool = False):
        check_adam_settings(lr, betas, eps, weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay, maximize=maximize))

    def update(self, parameter, grad, state, group):
        beta1, beta2 = group["betas"]
        lr, weight_decay = group["lr"], group["weight_decay"]
        decoupled = weight_decay and group["decoupled_weight_decay"]
        factor, added = (1 - lr * weight_decay, 0.0) if decoupled else (1.0, weight_decay)
        t = next_step(grad, state)
        backend.fused("radam_update", radam_step_, kernels.radam_update, parameter.data, grad, state["exp_avg"],
                      state["exp_avg_sq"], factor, added, beta1, beta2, 1 - beta1**t, lr, group["eps"],
                      math.sqrt(1 - beta2**t), rectification(t, beta2))


def radam_step_(parameter, grad, exp_avg, exp_avg_sq, factor: float, added: float, beta1: float, beta2: float,
                correction1: float, lr: float, eps: float, root_correction: float, rect: float | None) -> None:
    """One RAdam step on arrays, in place: weight decay and the moments (``decay_and_moments_``),
    then the corrected mean's step, rectified when ``rect`` is a number. NumPy's passes, the
    reference of the one CUDA kernel a GPU runs (``kernels.radam_update``)."""
    xp = backend.get_array_module(parameter)
    decay_and_moments_(parameter, grad, exp_avg, exp_avg_sq, factor, added, beta1, beta2)
    step = exp_avg / correction1  # the corrected mean, then, in place, the step
    step *= lr
    if rect is not None:
        adaptive = xp.sqrt(exp_avg_sq, out=xp.empty_like(exp_avg_sq))
        adaptive += eps
        xp.divide(root_correction, adaptive, out=adaptive)
        step *= adaptive
        step *= rect
    parameter -= step
