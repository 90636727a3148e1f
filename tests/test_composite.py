"""Gradient checks of whole expressions: the attention-like chains a Swin block is made of, from
functional ops and from minigrad.nn modules, in float64 end to end, on the CPU and the GPU path."""
import functools

import numpy as np
import pytest

import minigrad
from minigrad import backend, nn
from minigrad import functional as F

MASK_VALUE = -100.0


def rand(shape, seed, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, shape)


def on(x, array):
    return backend.to_device(array, x.device)


def check(fn, arrays, device, **gradcheck_options):
    """Gradient-check ``fn`` on float64 leaves; on the GPU, compare the forward result with the CPU's."""
    inputs = [minigrad.tensor(array, requires_grad=True, device=device) for array in arrays]
    assert minigrad.gradcheck(fn, inputs, **gradcheck_options)
    out = fn(*inputs)
    assert out.device == device and out.dtype == np.float64
    if device == "gpu":
        expected = fn(*[minigrad.tensor(array) for array in arrays]).numpy()
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-14)
    return out


def region_mask(labels):
    """(..., N, N): 0 where two tokens carry the same region label, -100 where they differ."""
    return np.where(labels[..., :, None] != labels[..., None, :], MASK_VALUE, 0.0)


def attention(x, qkv_weight, qkv_bias, proj_weight, mask_scores, heads):
    """Multi-head self-attention over the tokens of x (B, N, C); ``mask_scores`` masks the scaled
    scores q k^T (B, heads, N, N) before the softmax."""
    b, n, c = x.shape
    d = c // heads
    qkv = F.linear(x, qkv_weight, qkv_bias).reshape(b, n, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * d**-0.5, qkv[1], qkv[2]
    attn = F.softmax(mask_scores(q @ k.transpose(0, 1, 3, 2)), axis=-1)
    return F.linear((attn @ v).transpose(0, 2, 1, 3).reshape(b, n, c), proj_weight)


def attention_parameters(dim, seed=0):
    """qkv weight and bias, projection weight, LayerNorm weight and bias."""
    return [rand((3 * dim, dim), seed + 1), rand((3 * dim,), seed + 2), rand((dim, dim), seed + 3),
            rand((dim,), seed + 4, 0.5, 1.5), rand((dim,), seed + 5)]


@pytest.mark.parametrize("masking", ["add", "masked_fill"])
def test_pre_norm_attention_with_residual(device, masking):
    labels = np.array([0, 0, 1, 1])

    def block(x, qkv_weight, qkv_bias, proj_weight, norm_weight, norm_bias):
        h = F.layer_norm(x, norm_weight, norm_bias)
        if masking == "add":  # Swin's way: -100 added where the regions differ
            mask_scores = lambda scores: scores + on(x, region_mask(labels))  # noqa: E731
        else:  # the scores there replaced by -100
            mask_scores = lambda scores: scores.masked_fill(on(x, labels[:, None] != labels), MASK_VALUE)  # noqa: E731
        y = x + attention(h, qkv_weight, qkv_bias, proj_weight, mask_scores, heads=2)
        return F.gelu(y) * y

    check(block, [rand((2, 4, 4), 0), *attention_parameters(dim=4)], device)


def shifted_window_labels(size, window, shift):
    """Region labels of a (size, size) map after a cyclic shift, as (windows, window * window)."""
    bands = np.zeros(size, dtype=int)
    bands[size - window:size - shift], bands[size - shift:] = 1, 2
    labels = bands[:, None] * 3 + bands[None, :]
    return to_windows(labels[None, :, :, None], window).reshape(-1, window * window)


def to_windows(x, window):
    """(B, H, W, C) -> (B * windows, window, window, C), batch outermost, row-major windows."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)


def from_windows(windows, window, b, h, w):
    c = windows.shape[-1]
    x = windows.reshape(b, h // window, w // window, window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def swin_stage(x, qkv_weight, qkv_bias, proj_weight, norm_weight, norm_bias, merge_weight, merge_bias,
               reduction_weight, window=2, shift=1, heads=2):
    """Shifted-window attention, then patch merging: roll, partition, masked attention, reverse,
    roll back, residual, strided slicing, concatenation, LayerNorm, Linear, GELU."""
    b, size, _, c = x.shape
    shifted = F.roll(F.layer_norm(x, norm_weight, norm_bias), (-shift, -shift), (1, 2))
    windows = to_windows(shifted, window).reshape(-1, window * window, c)
    mask = np.tile(region_mask(shifted_window_labels(size, window, shift)), (b, 1, 1))[:, None]  # per window
    attended = attention(windows, qkv_weight, qkv_bias, proj_weight, lambda scores: scores + on(x, mask), heads)
    y = x + F.roll(from_windows(attended.reshape(-1, window, window, c), window, b, size, size), (shift, shift), (1, 2))
    merged = F.concatenate([y[:, 0::2, 0::2], y[:, 1::2, 0::2], y[:, 0::2, 1::2], y[:, 1::2, 1::2]], axis=-1)
    return F.gelu(F.linear(F.layer_norm(merged, merge_weight, merge_bias), reduction_weight))


@pytest.mark.parametrize("size, window, channels", [(4, 2, 4), (8, 4, 8)])
def test_shifted_window_stage(device, size, window, channels):
    """x (2, size, size, C), the attention's parameters, the merging LayerNorm's and its reduction."""
    arrays = [rand((2, size, size, channels), 0), *attention_parameters(channels),
              rand((4 * channels,), 6, 0.5, 1.5), rand((4 * channels,), 7), rand((2 * channels, 4 * channels), 8)]
    out = check(functools.partial(swin_stage, window=window, shift=window // 2), arrays, device, projections=6)
    assert out.shape == (2, size // 2, size // 2, 2 * channels)


def test_shifted_window_mask_separates_regions():
    labels = shifted_window_labels(size=4, window=2, shift=1)
    assert labels.shape == (4, 4)
    assert len(np.unique(labels[0])) == 1 and len(np.unique(labels[-1])) == 4  # the corner window mixes 4 regions
    mask = region_mask(labels)
    assert set(np.unique(mask)) == {MASK_VALUE, 0.0}


class Block(nn.Module):
    """A pre-norm transformer block: attention and an MLP, each on a residual branch."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim, bias=False)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(0.5), nn.Linear(2 * dim, dim))
        self.drop_path = nn.DropPath(0.5)

    def forward(self, x, mask):
        attended = attention(self.norm1(x), self.qkv.weight, self.qkv.bias, self.proj.weight,
                             lambda scores: scores + mask, self.heads)
        x = x + self.drop_path(attended)
        return x + self.drop_path(self.mlp(self.norm2(x)))


def test_module_block_in_float64(device):
    minigrad.manual_seed(1)
    block = Block(dim=4, heads=2).to(device, dtype="float64").eval()
    # LayerNorm starts at weight 1, bias 0: perturb them so their gradients are generic
    for parameter in (block.norm1.weight, block.norm1.bias, block.norm2.weight, block.norm2.bias):
        parameter.data = parameter.data + on(parameter, rand(parameter.shape, 3, -0.3, 0.3))
    parameters = list(block.parameters())
    assert len(parameters) == 11 and all(p.dtype == np.float64 and p.device == device for p in parameters)
    x = minigrad.tensor(rand((2, 4, 4), 0), requires_grad=True, device=device)
    mask = on(x, region_mask(np.array([0, 1, 1, 0])))
    assert minigrad.gradcheck(lambda x, *params: block(x, mask), [x, *parameters], projections=4)
    assert minigrad.gradcheck(lambda x: block(x, mask), [x])


def test_module_block_in_training_with_a_fixed_mask(device):
    minigrad.manual_seed(1)
    block = Block(dim=4, heads=2).to(device, dtype="float64").train()
    x = minigrad.tensor(rand((4, 4, 4), 0), requires_grad=True, device=device)
    mask = on(x, region_mask(np.array([0, 0, 1, 1])))

    def fn(x, *params):
        minigrad.manual_seed(5)  # the same dropout and drop-path masks at every evaluation
        return block(x, mask)

    assert minigrad.gradcheck(fn, [x, *block.parameters()], projections=4)
    with minigrad.no_grad():
        assert not np.allclose(fn(x).numpy(), block.eval()(x, mask).numpy())  # training did drop something
