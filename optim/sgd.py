"""Stochastic gradient descent with momentum (Polyak's heavy ball, or Nesterov's), as torch.optim.SGD."""
from __future__ import annotations

from minigrad import backend
from optim.optimizer import Optimizer


class SGD(Optimizer):
    """With g = grad + weight_decay * p and buffer b (b_1 = g):

        b_t = momentum * b_{t-1} + (1 - dampening) * g_t
        p  -= lr * (g_t + momentum * b_t)   if nesterov   else   lr * b_t
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD needs lr, momentum and weight_decay >= 0, got {lr}, {momentum}, {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def update(self, parameter, grad, state, group):
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * parameter.data
        momentum = group["momentum"]
        if momentum:
            if "momentum_buffer" not in state:
                # an array even where grad is a NumPy scalar (a 0-d parameter's, decayed or negated)
                state["momentum_buffer"] = backend.get_array_module(parameter.data).array(grad, copy=True)
            else:
                buffer = state["momentum_buffer"]
                buffer *= momentum
                buffer += (1 - group["dampening"]) * grad
            buffer = state["momentum_buffer"]
            grad = grad + momentum * buffer if group["nesterov"] else buffer
        parameter.data -= group["lr"] * grad
