"""Windows: the four pure functions behind Swin's attention (Liu et al. 2021, Sec. 3.2).

Each works on ``(B, H, W, C)`` tensors or raw arrays alike, and each is small enough to check by
hand: see the worked examples in the docstrings.
"""
from __future__ import annotations

from typing import Any

from minigrad import backend
from minigrad import functional as F
from minigrad.tensor import Tensor

MASK_VALUE = -100.0  # added to attention logits between regions that were not neighbours (not -inf)


def window_partition(x: Any, window_size: int) -> Any:
    """Cut a ``(B, H, W, C)`` map into non-overlapping ``M x M`` windows: ``(B * nW, M, M, C)``.

    Windows are ordered row-major over the map, batch outermost (Fig. 2, left). For a 4x4 map of
    values 0..15 and M = 2, the first window holds [[0, 1], [4, 5]] and the second [[2, 3], [6, 7]].
    """
    b, h, w, c = x.shape
    m = window_size
    if h % m or w % m:
        raise ValueError(f"window_partition: a {h}x{w} map does not split into {m}x{m} windows")
    x = x.reshape(b, h // m, m, w // m, m, c)  # (B, H/M, M, W/M, M, C): window row, row in it, ...
    x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, H/M, W/M, M, M, C): the windows, row-major
    return x.reshape(-1, m, m, c)  # (B*nW, M, M, C)


def window_reverse(windows: Any, window_size: int, height: int, width: int) -> Any:
    """Put windows ``(B * nW, M, M, C)`` back into maps ``(B, H, W, C)``: the inverse of
    ``window_partition``, so ``window_reverse(window_partition(x, M), M, H, W)`` equals x."""
    m = window_size
    c = windows.shape[-1]
    x = windows.reshape(-1, height // m, width // m, m, m, c)  # (B, H/M, W/M, M, M, C)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, H/M, M, W/M, M, C)
    return x.reshape(-1, height, width, c)  # (B, H, W, C)


def cyclic_shift(x: Any, shift: int) -> Any:
    """Roll a ``(B, H, W, C)`` map by ``-shift`` rows and columns (Fig. 4): the top-left ``shift``
    rows and columns move to the bottom and right, so that windows taken afterwards straddle
    the windows of the previous layer. ``cyclic_shift(x, -shift)`` undoes it.

    With shift = 1, the 3x3 map [[0,1,2],[3,4,5],[6,7,8]] becomes [[4,5,3],[7,8,6],[1,2,0]].
    """
    if isinstance(x, Tensor):
        return F.roll(x, (-shift, -shift), (1, 2))
    return backend.get_array_module(x).roll(x, (-shift, -shift), (1, 2))


def relative_position_index(window_size: int, device: str = "cpu") -> Any:
    """For each pair of tokens (i, j) in an ``M x M`` window, the row of the bias table that holds
    B(i, j): ``(dh + M - 1) * (2M - 1) + (dw + M - 1)``, where (dh, dw) is i's position minus j's
    (Eq. 4: offsets lie in [-M + 1, M - 1], so the table has (2M - 1)^2 rows).

    For M = 2 the tokens are (0,0), (0,1), (1,0), (1,1) and the index is
    [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]].
    """
    xp = backend.array_module_for(device)
    m = window_size
    rows = xp.arange(m * m) // m  # (M*M,): each token's row in the window
    cols = xp.arange(m * m) % m
    dh = rows[:, None] - rows[None, :]  # (M*M, M*M): query's row minus key's
    dw = cols[:, None] - cols[None, :]
    return (dh + m - 1) * (2 * m - 1) + (dw + m - 1)  # (M*M, M*M), in [0, (2M-1)^2)


def relative_offset_one_hot(window_size: int, device: str = "cpu") -> Any:
    """E: for each pair of coordinates (i, j) along one axis of an ``M x M`` window, the one-hot
    ``(M*M, 2M-1)`` of their offset ``i - j + M - 1``: the rows of Eq. 4's bias table are indexed by
    the row offset and the column offset, each a one-hot product with E (see RelativePositionBias).

    For M = 2 the pairs (0,0), (0,1), (1,0), (1,1) have offsets 1, 0, 2, 1:
    [[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]].
    """
    xp = backend.array_module_for(device)
    m = window_size
    coordinate = xp.arange(m)
    offset = (coordinate[:, None] - coordinate[None, :] + m - 1).reshape(m * m)  # (M*M,)
    return (offset[:, None] == xp.arange(2 * m - 1)).astype(xp.float32)  # (M*M, 2M-1)


def shifted_window_mask(height: int, width: int, window_size: int, shift: int,
                        device: str = "cpu") -> Any:
    """The additive attention mask of shifted windows, ``(nW, M*M, M*M)`` float32 (Fig. 4).

    After the cyclic shift, a window at the bottom or right edge holds tokens from up to four
    regions that were not neighbours in the image. Label the map in 3 x 3 regions (cut at
    ``-M`` and ``-shift`` along each axis); two tokens of a window may attend to each other only if
    their labels agree, else the mask adds -100 to that logit.

    For a 4x4 map, M = 2 and shift = 1, the labels are
    [[0,0,1,2],[0,0,1,2],[3,3,4,5],[6,6,7,8]]; the last window holds labels 4, 5, 7, 8 and its mask
    is -100 everywhere off the diagonal.
    """
    xp = backend.array_module_for(device)
    m = window_size

    def region(n: int):
        """0, 1 or 2 along one axis: before -M, between -M and -shift, after -shift."""
        position = xp.arange(n)
        return (position >= n - m).astype(xp.int64) + (position >= n - shift).astype(xp.int64)

    labels = region(height)[:, None] * 3 + region(width)[None, :]  # (H, W), 0..8
    windows = window_partition(labels.reshape(1, height, width, 1), m)  # (nW, M, M, 1)
    windows = windows.reshape(-1, m * m)  # (nW, M*M): each token's region
    different = windows[:, None, :] != windows[:, :, None]  # (nW, M*M, M*M): [w, query, key]
    return xp.where(different, MASK_VALUE, 0.0).astype(xp.float32)
