"""Stochastic gradient descent with momentum (Polyak's heavy ball, or Nesterov's), as torch.optim.SGD."""
from __future__ import annotations

from minigrad import backend, kernels
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
        momentum = group["momentum"]
        first = bool(momentum) and "momentum_buffer" not in state
        if first:  # an array even for a 0-d parameter; sgd_step_ fills it
            state["momentum_buffer"] = backend.get_array_module(parameter.data).empty_like(parameter.data)
        backend.fused("sgd_update", sgd_step_, kernels.sgd_update, parameter.data, grad, state.get("momentum_buffer"),
                      group["weight_decay"], momentum, 1 - group["dampening"], first, group["nesterov"], group["lr"])


def sgd_step_(parameter, grad, buffer, weight_decay: float, momentum: float, dampening_complement: float,
              first: bool, nesterov: bool, lr: float) -> None:
    """One SGD step on arrays, in place (``buffer``: the momentum buffer, or None without
    momentum). NumPy's passes, the reference of the one CUDA kernel a GPU runs (``kernels.sgd_update``)."""
    if weight_decay:
        grad = grad + weight_decay * parameter
    if momentum:
        if first:
            buffer[...] = grad
        else:
            buffer *= momentum
            buffer += dampening_complement * grad
        grad = grad + momentum * buffer if nesterov else buffer
    parameter -= lr * grad
