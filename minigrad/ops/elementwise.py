"""Elementwise operations: arithmetic, exp/log, and the activations.

Each backward is the derivative of one scalar function applied to every element; broadcasting is
undone by the engine (``sum_to_shape``), so binary ops return gradients of the broadcast shape.
"""
from __future__ import annotations

import math
import numbers

from minigrad import backend, kernels
from minigrad.tensor import Function

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


class Add(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, grad):
        return grad, grad


class Sub(Function):
    def forward(self, a, b):
        return a - b

    def backward(self, grad):
        return grad, -grad if self.needs_input_grad[1] else None


class Mul(Function):
    """d(ab)/da = b, d(ab)/db = a: each input is kept only for the other's gradient (drop-path's
    mask has none, so the branch output it scales is not kept)."""

    def forward(self, a, b):
        self.a = a if self.needs_input_grad[1] else None
        self.b = b if self.needs_input_grad[0] else None
        return a * b

    def backward(self, grad):
        grad_a = grad * self.b if self.needs_input_grad[0] else None
        grad_b = grad * self.a if self.needs_input_grad[1] else None
        return grad_a, grad_b


class Div(Function):
    """d(a/b)/da = 1/b, d(a/b)/db = -a/b^2 = -out/b."""

    def forward(self, a, b):
        self.b = b
        out = a / b
        self.out = out if self.needs_input_grad[1] else None  # for b's gradient alone
        return out

    def backward(self, grad):
        grad_a = grad / self.b
        grad_b = -grad_a * self.out if self.needs_input_grad[1] else None
        return grad_a, grad_b


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, grad):
        return -grad


class Pow(Function):
    """d(a^b)/da = b a^(b-1), d(a^b)/db = a^b log(a) (defined for a > 0).

    At a = 0 the formulas meet 0 * inf; the limits, as torch takes them, are d/da = 0 where b = 0
    and d/db = 0 where b > 0 (a^b is 0 there whatever b does).
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = a**b
        return self.out

    def backward(self, grad):
        a, b = self.a, self.b
        xp = backend.get_array_module(grad)
        grad_a = grad_b = None
        if self.needs_input_grad[0]:
            if isinstance(b, numbers.Number):
                grad_a = grad * (b * a ** (b - 1)) if b != 0 else xp.zeros_like(grad)
            else:
                grad_a = grad * xp.where(b == 0, 0, b * a ** (b - 1))
        if self.needs_input_grad[1]:
            if isinstance(a, numbers.Number):
                log_a = math.log(a) if a > 0 else -math.inf if a == 0 else math.nan
            else:
                log_a = xp.log(a)
            grad_b = grad * xp.where((a == 0) & (b >= 0), 0, self.out * log_a)
        return grad_a, grad_b


class Exp(Function):
    def forward(self, x):
        self.out = backend.get_array_module(x).exp(x)
        return self.out

    def backward(self, grad):
        return grad * self.out


class Log(Function):
    def forward(self, x):
        self.x = x
        return backend.get_array_module(x).log(x)

    def backward(self, grad):
        return grad / self.x


class Sqrt(Function):
    def forward(self, x):
        self.out = backend.get_array_module(x).sqrt(x)
        return self.out

    def backward(self, grad):
        return grad / (2 * self.out)


class Tanh(Function):
    def forward(self, x):
        self.out = backend.get_array_module(x).tanh(x)
        return self.out

    def backward(self, grad):
        return grad * (1 - self.out * self.out)


class Erf(Function):
    """d erf(x)/dx = 2/sqrt(pi) exp(-x^2)."""

    def forward(self, x):
        self.x = x
        return backend.erf(x)

    def backward(self, grad):
        x = self.x
        return grad * (_TWO_OVER_SQRT_PI * backend.get_array_module(x).exp(-x * x))


class ReLU(Function):
    def forward(self, x):
        self.positive = x > 0
        return backend.get_array_module(x).maximum(x, 0)  # not x * positive: -inf * 0 is nan; NaN stays NaN

    def backward(self, grad):
        return grad * self.positive


class GELU(Function):
    """The exact GELU of the reference Swin: x Phi(x), Phi the standard normal CDF.

    Phi(x) = (1 + erf(x / sqrt 2)) / 2 and Phi'(x) = phi(x) = exp(-x^2 / 2) / sqrt(2 pi), so
    d/dx [x Phi(x)] = Phi(x) + x phi(x).
    """

    def forward(self, x):
        if not self.needs_input_grad[0]:  # no backward to follow: Phi(x) not kept
            return kernels.gelu_value(x)
        self.x = x
        out, self.cdf = kernels.gelu(x)  # one fused kernel on a GPU, which keeps no Phi (None)
        return out

    def backward(self, grad):
        return kernels.gelu_backward(self.x, self.cdf, grad)


class Where(Function):
    """``condition ? a : b`` elementwise; the gradient goes to the branch that was taken."""

    def forward(self, condition, a, b):
        self.condition = condition
        return backend.get_array_module(condition).where(condition, a, b)

    def backward(self, grad):
        xp = backend.get_array_module(grad)
        grad_a = xp.where(self.condition, grad, 0) if self.needs_input_grad[1] else None
        grad_b = xp.where(self.condition, 0, grad) if self.needs_input_grad[2] else None
        return None, grad_a, grad_b
