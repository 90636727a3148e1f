"""Window multi-head self-attention with a relative position bias (Liu et al. 2021, Eq. 4):

    Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B) V

computed independently inside each M x M window, B looked up from a learnt table of
(2M - 1)^2 x heads entries by the relative position of every pair of tokens, and, for shifted
windows, a mask of -100 between tokens that were not neighbours before the cyclic shift.
"""
from __future__ import annotations

from typing import Any

from minigrad import backend, nn
from minigrad import functional as F
from minigrad.nn import init
from minigrad.tensor import Tensor
from swin.windows import relative_position_index


class WindowAttention(nn.Module):
    """Attention over the tokens of each window: ``(B * nW, M*M, C) -> (B * nW, M*M, C)``."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        xp = backend.array_module_for(backend.get_default_device())
        table = nn.Parameter(xp.zeros(((2 * window_size - 1) ** 2, num_heads), dtype=xp.float32))
        self.relative_position_bias_table = init.trunc_normal_(table, std=0.02)
        # A table derived from M alone: kept out of checkpoints, as timm does.
        index = relative_position_index(window_size, backend.get_default_device())
        self.register_buffer("relative_position_index", index.reshape(-1), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def relative_position_bias(self) -> Tensor:
        """B of Eq. 4 for every head: ``(heads, M*M, M*M)``."""
        n = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index]
        return bias.reshape(n, n, self.num_heads).transpose(2, 0, 1)

    def forward(self, x: Tensor, mask: Any = None) -> Tensor:
        windows, n, c = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(windows, n, 3, heads, c // heads).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(0, 1, 3, 2)
        attn = attn + self.relative_position_bias()
        if mask is not None:
            masks = mask.shape[0]
            attn = (attn.reshape(windows // masks, masks, heads, n, n) + mask[:, None]).reshape(windows, heads, n, n)
        attn = self.attn_drop(F.softmax(attn, axis=-1))
        out = (attn @ v).transpose(0, 2, 1, 3).reshape(windows, n, c)
        return self.proj_drop(self.proj(out))

    def flops(self, n: int) -> int:
        """Multiply-adds for one window of n tokens, as the official count: qkv, q k^T, attn v, proj."""
        dim, heads = self.dim, self.num_heads
        return n * dim * 3 * dim + 2 * heads * n * (dim // heads) * n + n * dim * dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"
