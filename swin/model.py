"""The Swin Transformer (Liu et al. 2021, Fig. 3), parameter for parameter the official model.

    image (B, 3, H, W)
      -> PatchEmbed: 4x4 patches, linear embedding to C          (B, H/4 * W/4, C)
      -> stage 1: blocks alternating W-MSA and SW-MSA             (B, H/4 * W/4, C)
      -> PatchMerging, stage 2 ... stage 4                        (B, H/32 * W/32, 8C)
      -> LayerNorm, average over tokens, Linear head              (B, classes)

Names follow microsoft/Swin-Transformer's ``models/swin_transformer.py`` so its checkpoints load
by key alone (``swin.load_pretrained``). ``flops()`` counts multiply-adds the way the official code
does.
"""
from __future__ import annotations

from typing import Any, Sequence

from minigrad import backend, nn
from minigrad import functional as F
from minigrad.nn import init
from minigrad.tensor import Tensor
from swin.attention import WindowAttention
from swin.windows import cyclic_shift, shifted_window_mask, window_partition, window_reverse


class PatchConv(nn.Module):
    """A ``k x k`` convolution with stride k, as a matmul: cut the image into non-overlapping
    patches, flatten each in (channel, row, column) order, multiply by the weight seen as
    ``(out, in * k * k)``. Its parameters are shaped as ``torch.nn.Conv2d``'s, and initialised
    alike."""

    def __init__(self, in_chans: int, out_chans: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.weight = nn.Parameter.zeros(out_chans, in_chans, patch_size, patch_size)
        self.bias = nn.Parameter.zeros(out_chans)
        init.kaiming_uniform_(self.weight, a=5**0.5)
        bound = 1.0 / init.fan_in(self.weight.shape) ** 0.5
        init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, H/k * W/k, out)``."""
        b, c, h, w = x.shape
        k = self.patch_size
        patches = x.reshape(b, c, h // k, k, w // k, k)  # (B, C, H/k, k, W/k, k)
        patches = patches.transpose(0, 2, 4, 1, 3, 5)  # (B, H/k, W/k, C, k, k): a patch a row
        patches = patches.reshape(b, -1, c * k * k)  # (B, H/k * W/k, C*k*k)
        weight = self.weight.reshape(self.weight.shape[0], -1)  # (out, C*k*k)
        return F.linear(patches, weight, self.bias)  # (B, H/k * W/k, out)


class PatchEmbed(nn.Module):
    """Patch partition + linear embedding (+ LayerNorm): ``(B, 3, H, W) -> (B, H/4 * W/4, C)``."""

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3,
                 embed_dim: int = 96, patch_norm: bool = True):
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        self.in_chans, self.embed_dim = in_chans, embed_dim
        self.patches_resolution = img_size // patch_size
        self.proj = PatchConv(in_chans, embed_dim, patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)
        return self.norm(x) if self.norm is not None else x

    def flops(self) -> int:
        tokens = self.patches_resolution**2
        flops = tokens * self.embed_dim * self.in_chans * self.patch_size**2
        return flops + (tokens * self.embed_dim if self.norm is not None else 0)


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout.

    fc1 and GELU run as one op (``F.linear_gelu``, the same values): fc1's bias is added where
    GELU's passes find it in the caches, a pass over the block's largest array saved."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        hidden = F.linear_gelu(x, self.fc1.weight, self.fc1.bias)  # self.act(self.fc1(x))
        return self.drop(self.fc2(self.drop(hidden)))


class SwinTransformerBlock(nn.Module):
    """One block of Fig. 3(b): x + (S)W-MSA(LN(x)), then x + MLP(LN(x)), each branch with drop-path.

    With ``shift_size`` > 0 the map is cyclically shifted before windowing and the attention is
    masked (SW-MSA). A stage whose resolution is at most the window uses one window, unshifted.
    """

    def __init__(self, dim: int, input_resolution: int, num_heads: int, window_size: int = 7,
                 shift_size: int = 0, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        if input_resolution <= window_size:
            window_size, shift_size = input_resolution, 0
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must lie in [0, window_size), got {shift_size} "
                             f"for window {window_size}")
        self.dim, self.input_resolution, self.num_heads = dim, input_resolution, num_heads
        self.window_size, self.shift_size, self.mlp_ratio = window_size, shift_size, mlp_ratio
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = nn.DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        mask = None
        if shift_size:
            mask = shifted_window_mask(input_resolution, input_resolution, window_size, shift_size,
                                       backend.get_default_device())
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H*W, C) -> (B, H*W, C)``."""
        b, tokens, c = x.shape
        r, m = self.input_resolution, self.window_size
        shortcut = x
        x = self.norm1(x).reshape(b, r, r, c)  # (B, H, W, C)
        if self.shift_size:
            x = cyclic_shift(x, self.shift_size)
        windows = window_partition(x, m).reshape(-1, m * m, c)  # (B*nW, M*M, C)
        windows = self.attn(windows, mask=self.attn_mask).reshape(-1, m, m, c)  # (B*nW, M, M, C)
        x = window_reverse(windows, m, r, r)  # (B, H, W, C)
        if self.shift_size:
            x = cyclic_shift(x, -self.shift_size)
        x = shortcut + self.drop_path(x.reshape(b, tokens, c))  # (B, H*W, C)
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def flops(self) -> int:
        tokens, dim = self.input_resolution**2, self.dim
        windows = tokens // self.window_size**2
        attention = windows * self.attn.flops(self.window_size**2)
        mlp = int(2 * tokens * dim * dim * self.mlp_ratio)
        return 2 * dim * tokens + attention + mlp  # the two LayerNorms, attention, MLP


class PatchMerging(nn.Module):
    """Halve the resolution, double the width: concatenate each 2x2 group of tokens (4C),
    LayerNorm, then a bias-free Linear to 2C. ``(B, H*W, C) -> (B, H/2 * W/2, 2C)``."""

    def __init__(self, input_resolution: int, dim: int):
        super().__init__()
        self.input_resolution, self.dim = input_resolution, dim
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, _, c = x.shape
        r = self.input_resolution
        # The official code concatenates x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]:
        # the top-left, bottom-left, top-right and bottom-right token of each 2x2 group, that is
        # the column in the group outer, the row inner. One reshape and transpose does the same in
        # one copy, where four slices and a concatenation make five (and their backward nine).
        x = x.reshape(b, r // 2, 2, r // 2, 2, c)  # (B, H/2, row in group, W/2, column in group, C)
        x = x.transpose(0, 1, 3, 4, 2, 5)  # (B, H/2, W/2, column in group, row in group, C)
        x = x.reshape(b, -1, 4 * c)  # (B, H/2 * W/2, 4C)
        return self.reduction(self.norm(x))  # (B, H/2 * W/2, 2C)

    def flops(self) -> int:
        r, dim = self.input_resolution, self.dim
        return r * r * dim + (r // 2) * (r // 2) * 4 * dim * 2 * dim


class BasicLayer(nn.Module):
    """One stage: ``depth`` blocks, odd ones shifted by M // 2, then (except last) PatchMerging."""

    def __init__(self, dim: int, input_resolution: int, depth: int, num_heads: int,
                 window_size: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: Sequence[float] = (), downsample: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, input_resolution, num_heads, window_size,
                                 0 if i % 2 == 0 else window_size // 2, mlp_ratio, qkv_bias, drop,
                                 attn_drop, drop_path[i] if drop_path else 0.0)
            for i in range(depth))
        self.downsample = PatchMerging(input_resolution, dim) if downsample else None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x

    def flops(self) -> int:
        flops = sum(block.flops() for block in self.blocks)
        return flops + (self.downsample.flops() if self.downsample is not None else 0)


def unusable_size_reason(img_size: int, patch_size: int, window_size: int,
                         num_stages: int) -> str | None:
    """Why a square image of ``img_size`` cannot go through this configuration, or None if it can.

    Every stage's resolution must be a whole number of windows (or at most one window), and
    every stage that is followed by patch merging must have an even resolution.
    """
    if img_size % patch_size:
        return f"{img_size} is not a multiple of patch_size {patch_size}"
    resolution = img_size // patch_size
    for stage in range(num_stages):
        if resolution > window_size and resolution % window_size:
            return (f"stage {stage + 1} would have resolution {resolution}, which is neither a "
                    f"multiple of window_size {window_size} nor at most one window")
        if stage < num_stages - 1 and resolution % 2:
            return (f"stage {stage + 1} would have the odd resolution {resolution}, which patch "
                    "merging cannot halve")
        resolution //= 2
    return None


def usable_sizes(near: int, patch_size: int, window_size: int, num_stages: int,
                 count: int = 4) -> list[int]:
    """The ``count`` usable image sizes closest to ``near``."""
    candidates = [s for s in range(patch_size, 4 * max(near, 224) + 1, patch_size)
                  if unusable_size_reason(s, patch_size, window_size, num_stages) is None]
    return sorted(sorted(candidates, key=lambda s: (abs(s - near), s))[:count])


class SwinTransformer(nn.Module):
    """Swin Transformer v1 for classification of square ``img_size`` images (B, C, H, W)."""

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3,
                 num_classes: int = 1000, embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1, ape: bool = False,
                 patch_norm: bool = True):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} must have "
                             "one entry per stage")
        reason = unusable_size_reason(img_size, patch_size, window_size, len(depths))
        if reason is not None:
            sizes = usable_sizes(img_size, patch_size, window_size, len(depths))
            raise ValueError(f"img_size={img_size} does not fit patch_size={patch_size}, "
                             f"window_size={window_size} and {len(depths)} stages: {reason}. "
                             f"Sizes that fit: {sizes}")
        self.img_size, self.in_chans, self.num_classes = img_size, in_chans, num_classes
        self.patch_size, self.window_size, self.depths = patch_size, window_size, tuple(depths)
        self.num_layers = len(depths)
        self.num_features = embed_dim * 2 ** (self.num_layers - 1)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, patch_norm)
        resolution = self.patch_embed.patches_resolution
        if ape:
            self.absolute_pos_embed = init.trunc_normal_(
                nn.Parameter.zeros(1, resolution**2, embed_dim), std=0.02)  # (1, H/4 * W/4, C)
        else:
            self.absolute_pos_embed = None
        self.pos_drop = nn.Dropout(drop_rate)
        total = sum(depths)
        rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.layers.append(BasicLayer(
                embed_dim * 2**i, resolution // 2**i, depth, num_heads[i], window_size, mlp_ratio,
                qkv_bias, drop_rate, attn_drop_rate, rates[start:start + depth],
                downsample=i < self.num_layers - 1))
        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        for module in self.modules():
            if isinstance(module, nn.Linear):
                init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                init.ones_(module.weight)
                init.zeros_(module.bias)

    def check_input(self, x: Tensor) -> None:
        """Raise a clear error for an input this model cannot take, saying what to change."""
        channels, size = self.in_chans, self.img_size
        expected = f"this model takes images of shape (B, {channels}, {size}, {size})"
        shape = tuple(x.shape)
        if x.ndim == 3 and shape == (channels, size, size):
            raise ValueError(f"{expected}, got one image {shape}: add the batch axis, x[None]")
        if x.ndim != 4:
            raise ValueError(f"{expected}, got shape {shape}")
        if shape[1] != channels:
            if shape[3] == channels:
                hint = ("; they look channels-last (B, H, W, C): transpose them with "
                        "x.transpose(0, 3, 1, 2)")
            else:
                mode = {1: "L", 3: "RGB"}.get(channels)  # Pillow's mode with that many channels
                hint = (f"; convert them to {channels} channel{'s' if channels > 1 else ''}"
                        + (f" (e.g. Pillow's .convert('{mode}'))" if mode else ""))
            raise ValueError(f"{expected}, got {shape}, with {shape[1]} on the channel axis{hint}")
        if shape[2:] != (size, size):
            hint = ""
            if shape[2] == shape[3]:
                layout = (self.patch_size, self.window_size, self.num_layers)
                reason = unusable_size_reason(shape[2], *layout)
                hint = (f" A model built with img_size={shape[2]} would take them."
                        if reason is None else
                        f" No model of this configuration takes {shape[2]} px ({reason}); "
                        f"sizes that fit: {usable_sizes(shape[2], *layout)}.")
            raise ValueError(f"{expected}, got {shape}: resize them to {size}x{size}.{hint}")
        weights = self.patch_embed.proj.weight
        if x.dtype != weights.dtype:
            hint = ("scale them to floats first (e.g. pixels / 255, then normalise)"
                    if x.dtype.kind in "iub" else
                    f"convert them with .astype('{weights.dtype}'), or the model with "
                    f"model.to(dtype='{x.dtype}')")
            raise TypeError(f"this model's weights are {weights.dtype}, got {x.dtype} images: "
                            f"{hint}")

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features ``(B, num_features)`` before the head."""
        self.check_input(x)  # (B, 3, H, W)
        x = self.patch_embed(x)  # (B, H/4 * W/4, C)
        if self.absolute_pos_embed is not None:
            x = x + self.absolute_pos_embed
        x = self.pos_drop(x)
        for layer in self.layers:
            x = layer(x)  # stage i at H/2^(i+2) x W/2^(i+2), 2^i C; but the last then merge
        return self.norm(x).mean(axis=1)  # (B, H/32 * W/32, 8C) -> (B, 8C = num_features)

    def forward(self, x: Any) -> Tensor:
        return self.head(self.forward_features(x if isinstance(x, Tensor) else Tensor(x)))

    def flops(self) -> int:
        """Multiply-adds of one forward pass of one image, counted as the official ``flops()``."""
        flops = self.patch_embed.flops() + sum(layer.flops() for layer in self.layers)
        flops += self.num_features * self.patch_embed.patches_resolution**2 // 2**self.num_layers
        return flops + self.num_features * self.num_classes
