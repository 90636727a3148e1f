"""Window multi-head self-attention with a relative position bias (Liu et al. 2021, Eq. 4):

    Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B) V

computed independently inside each M x M window, B looked up from a learnt table of
(2M - 1)^2 x heads entries by the relative position of every pair of tokens, and, for shifted
windows, a mask of -100 between tokens that were not neighbours before the cyclic shift.
"""
from __future__ import annotations

from typing import Any

from minigrad import backend, kernels, nn
from minigrad import functional as F
from minigrad.nn import init
from minigrad.tensor import Function, Tensor
from swin.windows import relative_offset_one_hot, relative_position_index


class RelativePositionBias(Function):
    """Eq. 4's B for every pair of tokens of an M x M window: the rows of the bias table
    ``((2M - 1)^2, heads)`` that ``relative_position_index`` picks, ``(M^2 * M^2, heads)``.

    A table row's gradient sums the gradients of all pairs of tokens at that offset. Indexing's
    own backward would do that with a scatter-add, which on the GPU runs on atomic adds: their
    order, and so the rounding, changes from run to run. Here the sum is two matrix products, the
    same bits every time. The offset in rows (hi - hj) and the offset in columns (wi - wj) are
    independent, so with E the one-hot ``(M^2, 2M - 1)`` of the offset of a pair of coordinates,
    and G the gradient arranged as (hi, hj) x (wi, wj), the table's gradient is E^T G E per head.
    """

    def __init__(self, index: Any, one_hot: Any):
        self.index, self.one_hot = index, one_hot  # E: relative_offset_one_hot, (M*M, 2M-1)

    def forward(self, table):
        return table[self.index]

    def backward(self, grad):
        """``grad``: ``(M*M * M*M, heads)``, one row per pair of tokens (hi, wi), (hj, wj)."""
        one_hot = self.one_hot.astype(grad.dtype, copy=False)  # E: (M*M, 2M-1)
        pairs, side = one_hot.shape
        m, heads = (side + 1) // 2, grad.shape[-1]
        grad = grad.reshape(m, m, m, m, heads).transpose(0, 2, 4, 1, 3)  # (hi, hj, head, wi, wj)
        rows_summed = one_hot.T @ grad.reshape(pairs, heads * pairs)  # (dh, head * wi*wj)
        both_summed = rows_summed.reshape(side * heads, pairs) @ one_hot  # (dh * head, dw)
        by_offsets = both_summed.reshape(side, heads, side).transpose(0, 2, 1)  # (dh, dw, head)
        target = self.grad_target(0, grad.dtype)  # the table's packed gradient, if it may be written
        if target is None:
            return by_offsets.reshape(side * side, heads)  # table rows (dh, dw)
        target.reshape(side, side, heads)[...] = by_offsets
        return target


class WindowAttentionCore(Function):
    """Eq. 4 inside every window, from the qkv projection to the heads' outputs, as one op:

        q, k, v = split(qkv);  S = (q * scale) k^T + B (+ mask);  P = softmax(S);  out = (P o keep) v

    ``keep`` is attention dropout's multiplier (or None). As one op its backward is nine array
    operations where the chain of primitives takes some twenty (the split alone three zero
    buffers): with G = d out, D = G v^T o keep,

        dv = (P o keep)^T G,  dS = P o (D - rowsum(D o P)),  dB = sum of dS over windows,
        dq = dS k * scale,  dk = dS^T (q * scale),  d qkv = (dq, dk, dv), back in qkv's layout.

    ``qkv``: ``(B*nW, N, 3C)``; ``bias``: ``(heads, N, N)``; ``mask``: ``(nW, N, N)`` or None; the
    result ``(B*nW, N, C)``.
    """

    def __init__(self, heads: int, scale: float):
        self.heads, self.scale = heads, scale

    def forward(self, qkv, bias, mask, keep):
        windows, n, three_c = qkv.shape
        heads, d = self.heads, three_c // 3 // self.heads
        qkv = qkv.reshape(windows, n, 3, heads, d).transpose(2, 0, 3, 1, 4)  # (3, B*nW, heads, N, d)
        q = kernels.scaled_copy(qkv[0], self.scale)  # in C order, on the CPU shared by the threads
        k, v = qkv[1], qkv[2]  # each (B*nW, heads, N, d)
        scores = kernels.matmul(q, k.transpose(0, 1, 3, 2))  # (B*nW, heads, N, N): query x key
        attention = kernels.softmax_of_sum(scores, bias, mask)  # of + (heads, N, N) and each window's (N, N) mask
        dropped = attention if keep is None else attention * keep
        self.q, self.k, self.v, self.attention, self.dropped, self.keep = q, k, v, attention, dropped, keep
        xp = backend.get_array_module(qkv)
        out = xp.empty((windows, n, heads, d), dtype=xp.result_type(dropped, v))
        kernels.matmul(dropped, v, out=out.transpose(0, 2, 1, 3))  # each head's (N, d) written in its place
        return out.reshape(windows, n, heads * d)  # (B*nW, N, C)

    def backward(self, grad):
        xp = backend.get_array_module(grad)
        windows, n, c = grad.shape
        heads = self.heads
        grad = grad.reshape(windows, n, heads, c // heads).transpose(0, 2, 1, 3)  # (B*nW, heads, N, d)
        grad = xp.ascontiguousarray(grad)  # once, where two products would each copy it on a GPU
        grad_dropped = kernels.matmul(grad, self.v.transpose(0, 1, 3, 2))  # (B*nW, heads, N, N)
        if self.keep is not None:
            grad_dropped *= self.keep
        grad_scores = kernels.softmax_backward(self.attention, grad_dropped)
        grad_bias = grad_scores.sum(axis=0) if self.needs_input_grad[1] else None  # (heads, N, N)
        grad_qkv = xp.empty((3, windows, heads, n, c // heads), dtype=grad.dtype)
        grad_q, grad_k, grad_v = grad_qkv  # each (B*nW, heads, N, d), in C order: BLAS writes it in place
        kernels.matmul(grad_scores, self.k, out=grad_q)
        grad_q *= self.scale
        kernels.matmul(grad_scores.transpose(0, 1, 3, 2), self.q, out=grad_k)
        kernels.matmul(self.dropped.transpose(0, 1, 3, 2), grad, out=grad_v)
        grad_qkv = grad_qkv.transpose(1, 3, 0, 2, 4).reshape(windows, n, 3 * c)  # (B*nW, N, 3C): one copy
        return grad_qkv, grad_bias, None, None


class WindowAttention(nn.Module):
    """Attention over the tokens of each window: ``(B * nW, M*M, C) -> (B * nW, M*M, C)``."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        table = nn.Parameter.zeros((2 * window_size - 1) ** 2, num_heads)  # ((2M-1)^2, heads)
        self.relative_position_bias_table = init.trunc_normal_(table, std=0.02)
        # A table derived from M alone: kept out of checkpoints, as timm does.
        index = relative_position_index(window_size, backend.get_default_device())  # (M*M, M*M)
        self.register_buffer("relative_position_index", index.reshape(-1), persistent=False)
        one_hot = relative_offset_one_hot(window_size, backend.get_default_device())  # for backward
        self.register_buffer("relative_offset_one_hot", one_hot, persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def relative_position_bias(self) -> Tensor:
        """B of Eq. 4 for every head: ``(heads, M*M, M*M)``."""
        n = self.window_size**2
        bias = RelativePositionBias.apply(self.relative_position_bias_table,
                                          index=self.relative_position_index,
                                          one_hot=self.relative_offset_one_hot)  # (M*M * M*M, heads)
        return bias.reshape(n, n, self.num_heads).transpose(2, 0, 1)  # (heads, M*M, M*M)

    def forward(self, x: Tensor, mask: Any = None) -> Tensor:
        """``x``: ``(B*nW, N, C)``, N = M*M tokens a window; ``mask``: ``(nW, N, N)`` or None."""
        windows, n, _ = x.shape
        keep = None
        if self.training and self.attn_drop.p > 0:
            keep = F.keep_mask(x, (windows, self.num_heads, n, n), self.attn_drop.p)
        qkv = self.qkv(x)  # (B*nW, N, 3C)
        out = WindowAttentionCore.apply(qkv, self.relative_position_bias(), mask, keep,
                                        heads=self.num_heads, scale=self.scale)  # (B*nW, N, C)
        return self.proj_drop(self.proj(out))

    def flops(self, n: int) -> int:
        """Multiply-adds for one window of n tokens, as the official count:
        qkv, q k^T, attn v, proj."""
        dim, heads = self.dim, self.num_heads
        return n * dim * 3 * dim + 2 * heads * n * (dim // heads) * n + n * dim * dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"
