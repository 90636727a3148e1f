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

from minigrad import backend
from optim.adam import check_adam_settings, update_moments
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
        xp = backend.get_array_module(grad)
        beta1, beta2 = group["betas"]
        lr, weight_decay = group["lr"], group["weight_decay"]
        if weight_decay and group["decoupled_weight_decay"]:
            parameter.data *= 1 - lr * weight_decay
        elif weight_decay:
            grad = grad + weight_decay * parameter.data
        t = update_moments(grad, state, beta1, beta2)
        step = state["exp_avg"] / (1 - beta1**t)  # the corrected mean, then, in place, the step
        step *= lr
        rect = rectification(t, beta2)
        if rect is not None:
            adaptive = xp.sqrt(state["exp_avg_sq"], out=xp.empty_like(state["exp_avg_sq"]))
            adaptive += group["eps"]
            xp.divide(math.sqrt(1 - beta2**t), adaptive, out=adaptive)
            step *= adaptive
            step *= rect
        parameter.data -= step
