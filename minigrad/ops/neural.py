"""The hot and numerically delicate operations of a transformer, each one Function with a
hand-derived backward: matmul, linear (and linear + GELU), softmax, log_softmax, cross_entropy,
layer_norm.

Fusing them saves the temporaries a chain of primitives would keep for backward, and lets the
derivation cancel terms (softmax followed by the log of cross-entropy, for instance).
"""
from __future__ import annotations

from minigrad import backend, kernels
from minigrad.tensor import Function


class Matmul(Function):
    """``a @ b`` with NumPy's rules (batched, broadcasting, 1-D promoted).

    For C = A B: dA = dC B^T and dB = A^T dC, over the last two axes; the engine sums the
    gradient over broadcast batch axes.
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, grad):
        xp = backend.get_array_module(grad)
        a, b = self.a, self.b
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if b.ndim == 1:  # first, so that a 1-D @ 1-D gradient (0-d) becomes (1, 1)
            grad = xp.expand_dims(grad, -1)
        if a.ndim == 1:
            grad = xp.expand_dims(grad, -2)
        grad_a = grad_b = None
        if self.needs_input_grad[0]:
            grad_a = grad @ xp.swapaxes(b2, -1, -2)
            if a.ndim == 1:
                grad_a = grad_a[..., 0, :]
        if self.needs_input_grad[1]:
            grad_b = xp.swapaxes(a2, -1, -2) @ grad
            if b.ndim == 1:
                grad_b = grad_b[..., 0]
        return grad_a, grad_b


class Linear(Function):
    """y = x W^T + b with W of shape (out, in), as ``torch.nn.functional.linear``.

    With the leading axes of x flattened into rows: dx = dy W, dW = dy^T x, db = sum of dy's rows.
    (Flattening first also turns a batch of small products into one large one, which BLAS
    runs far faster.)
    """

    def forward(self, x, weight, bias):
        self.rows = x.reshape(-1, x.shape[-1])
        self.weight = weight
        out = self.rows @ weight.T
        if bias is not None:
            kernels.add_to_rows(out, bias)  # on the CPU shared by the threads
        return out.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, grad):
        xp = backend.get_array_module(grad)
        grad_rows = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_weight = grad_bias = None
        if self.needs_input_grad[0]:
            grad_x = (grad_rows @ self.weight).reshape(grad.shape[:-1] + (self.weight.shape[1],))
        if self.needs_input_grad[1]:
            grad_weight = xp.matmul(grad_rows.T, self.rows, out=self.grad_target(1, grad.dtype))
        if self.needs_input_grad[2]:
            grad_bias = kernels.column_sums(grad_rows, out=self.grad_target(2, grad.dtype))
        return grad_x, grad_weight, grad_bias


class LinearGELU(Linear):
    """GELU(x W^T + b), a Linear and the GELU after it (Swin's fc1 and its activation) as one op:
    the bias is added to each block of the product where GELU's passes then find it in the
    caches (``kernels.gelu_of_sum``), not in a pass over memory of its own; the same bits.
    Backward: GELU's (see ops.elementwise.GELU), then the Linear's."""

    def forward(self, x, weight, bias):
        product = super().forward(x, weight, None)  # x W^T, our own array: h = x W^T + b goes over it
        if not any(self.needs_input_grad):  # no backward to follow: Phi(h) not kept
            return kernels.gelu_value(product) if bias is None else kernels.gelu_of_sum_value(product, bias)
        if bias is None:
            self.h = product
            out, self.cdf = kernels.gelu(product)
        else:
            self.h, out, self.cdf = kernels.gelu_of_sum(product, bias)  # one fused kernel on a GPU
        return out

    def backward(self, grad):
        return super().backward(kernels.gelu_backward(self.h, self.cdf, grad))


class Softmax(Function):
    """s = exp(x - max) / sum exp(x - max); ds/dx applied to g is s * (g - sum(g * s))."""

    def __init__(self, axis: int = -1):
        self.axis = axis

    def forward(self, x):
        self.last = self.axis in (-1, x.ndim - 1)  # over the last axis: one fused kernel on a GPU
        self.out = kernels.softmax(x) if self.last else kernels.softmax_reference(x, self.axis)
        return self.out

    def backward(self, grad):
        if self.last:
            return kernels.softmax_backward(self.out, grad)
        return kernels.softmax_backward_reference(self.out, grad, self.axis)


def _log_softmax(x, axis: int):
    xp = backend.get_array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


class LogSoftmax(Function):
    """l = x - log sum exp x; dl/dx applied to g is g - softmax(x) * sum(g)."""

    def __init__(self, axis: int = -1):
        self.axis = axis

    def forward(self, x):
        self.out = _log_softmax(x, self.axis)
        return self.out

    def backward(self, grad):
        xp = backend.get_array_module(grad)
        return grad - xp.exp(self.out) * grad.sum(axis=self.axis, keepdims=True)


class CrossEntropy(Function):
    """Mean (or summed, or per-sample) cross-entropy of logits (N, C) against integer targets (N,).

    With label smoothing e the target distribution is q = (1 - e) onehot(t) + e / C, and the loss
    of a row is -sum_c q_c log softmax(x)_c. Since sum_c q_c = 1, its gradient is softmax(x) - q.
    """

    def __init__(self, label_smoothing: float = 0.0, reduction: str = "mean"):
        self.smoothing = label_smoothing
        self.reduction = reduction

    def forward(self, logits, target):
        xp = backend.get_array_module(logits)
        n, classes = logits.shape
        log_probs = _log_softmax(logits, -1)
        # F.cross_entropy checks targets on the host; on the GPU, where CuPy would silently wrap an
        # index out of range, such a sample reads class 0 and its loss and gradient are made NaN.
        self.valid = (target >= 0) & (target < classes)
        target = xp.where(self.valid, target, 0)
        losses = -(1.0 - self.smoothing) * log_probs[xp.arange(n), target]
        if self.smoothing:
            losses = losses - (self.smoothing / classes) * log_probs.sum(axis=-1)
        losses = xp.where(self.valid, losses, xp.nan)
        self.log_probs, self.target = log_probs, target
        if self.reduction == "none":
            return losses
        total = losses.sum()
        return total / n if self.reduction == "mean" else total

    def backward(self, grad):
        xp = backend.get_array_module(grad)
        n, classes = self.log_probs.shape
        grad_logits = xp.exp(self.log_probs)
        grad_logits[xp.arange(n), self.target] -= 1.0 - self.smoothing
        if self.smoothing:
            grad_logits -= self.smoothing / classes
        grad_logits = xp.where(self.valid[:, None], grad_logits, xp.nan)
        if self.reduction == "none":
            return grad_logits * grad[:, None], None
        scale = grad / n if self.reduction == "mean" else grad
        return grad_logits * scale, None


class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * w + b over the last axis.

    With x^ = (x - mean) * r, r = 1 / sqrt(var + eps) and g = dy * w, the mean and the variance
    both depend on x, which gives dx = r * (g - mean(g) - x^ * mean(g * x^)); dw = sum(dy * x^) and
    db = sum(dy) over the leading axes.
    """

    def __init__(self, eps: float = 1e-5):
        self.eps = eps

    def forward(self, x, weight, bias):
        if not any(self.needs_input_grad):  # no backward to follow: the normalized x not kept
            return kernels.layer_norm_value(x, weight, bias, self.eps)
        self.weight = weight
        out, self.normalized, self.rstd = kernels.layer_norm(x, weight, bias, self.eps)  # fused on a GPU
        return out

    def backward(self, grad):
        normalized = self.normalized
        grad_x = kernels.layer_norm_backward(grad, normalized, self.rstd, self.weight)
        if not (self.needs_input_grad[1] or self.needs_input_grad[2]):
            return grad_x, None, None
        targets = (self.grad_target(2, grad.dtype), self.grad_target(1, grad.dtype))
        grad_bias, grad_weight = kernels.column_sums_with_products(grad, normalized, out=targets)  # one pass
        return (grad_x, grad_weight if self.needs_input_grad[1] else None,
                grad_bias if self.needs_input_grad[2] else None)
