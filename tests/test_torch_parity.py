"""minigrad against PyTorch in float64: the same expressions on the same inputs give the same
outputs and the same gradients for every input. Skipped where torch is not installed (as in CI)."""
import numpy as np
import pytest

import minigrad
from minigrad import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

pytestmark = pytest.mark.torch

RTOL, ATOL = 1e-10, 1e-12
MASK_VALUE = -100.0


def rand(shape, seed=0, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, shape)


def compare(minigrad_fn, torch_fn, arrays, seed=99):
    """Run both on leaves made from ``arrays``, backpropagate one random cotangent through both and
    compare the outputs and the gradients of every input."""
    ours = [minigrad.tensor(array.copy(), requires_grad=True) for array in arrays]
    theirs = [torch.tensor(array, requires_grad=True) for array in arrays]
    out, expected = minigrad_fn(*ours), torch_fn(*theirs)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=RTOL, atol=ATOL)
    cotangent = np.asarray(rand(out.shape, seed))
    out.backward(cotangent)
    expected.backward(torch.from_numpy(cotangent))
    for i, (mine, reference) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(mine.grad, reference.grad.numpy(), rtol=RTOL, atol=ATOL,
                                   err_msg=f"gradient of input {i}")


class MinigradOps:
    """The few calls whose spelling differs between the two libraries, minigrad's side."""

    linear, gelu, concatenate = F.linear, F.gelu, F.concatenate
    softmax = staticmethod(lambda x: F.softmax(x, axis=-1))
    layer_norm = staticmethod(lambda x, weight, bias: F.layer_norm(x, weight, bias, eps=1e-5))
    roll = staticmethod(lambda x, shift, axis: F.roll(x, shift, axis))
    constant = staticmethod(lambda array: array)
    masked_fill = staticmethod(lambda x, mask, value: x.masked_fill(mask, value))


class TorchOps:
    linear, gelu = TF.linear, TF.gelu
    concatenate = staticmethod(lambda xs, axis: torch.cat(xs, dim=axis))
    softmax = staticmethod(lambda x: torch.softmax(x, dim=-1))
    layer_norm = staticmethod(lambda x, weight, bias: TF.layer_norm(x, x.shape[-1:], weight, bias, eps=1e-5))
    roll = staticmethod(lambda x, shift, axis: torch.roll(x, shift, axis))
    constant = staticmethod(torch.from_numpy)
    masked_fill = staticmethod(lambda x, mask, value: x.masked_fill(mask, value))


def region_mask(labels):
    return np.where(labels[..., :, None] != labels[..., None, :], MASK_VALUE, 0.0)


def attention(ops, x, qkv_weight, qkv_bias, proj_weight, mask_scores, heads):
    b, n, c = x.shape
    d = c // heads
    qkv = ops.linear(x, qkv_weight, qkv_bias).reshape(b, n, 3, heads, d).permute(2, 0, 3, 1, 4)
    attn = ops.softmax(mask_scores(qkv[0] * d**-0.5 @ qkv[1].permute(0, 1, 3, 2)))
    return ops.linear((attn @ qkv[2]).permute(0, 2, 1, 3).reshape(b, n, c), proj_weight)


def block(ops, masking, x, qkv_weight, qkv_bias, proj_weight, norm_weight, norm_bias):
    """Pre-norm attention with a residual, then GELU; the mask added (Swin's way) or filled in."""
    labels = np.array([0, 0, 1, 2])
    if masking == "add":
        mask = ops.constant(region_mask(labels))
        mask_scores = lambda scores: scores + mask  # noqa: E731
    else:
        mask = ops.constant(labels[:, None] != labels)
        mask_scores = lambda scores: ops.masked_fill(scores, mask, MASK_VALUE)  # noqa: E731
    y = x + attention(ops, ops.layer_norm(x, norm_weight, norm_bias), qkv_weight, qkv_bias, proj_weight,
                      mask_scores, heads=2)
    return ops.gelu(y) * y


def block_inputs(tokens=4, dim=4):
    return [rand((2, tokens, dim), 0), rand((3 * dim, dim), 1), rand((3 * dim,), 2), rand((dim, dim), 3),
            rand((dim,), 4, 0.5, 1.5), rand((dim,), 5)]


@pytest.mark.parametrize("masking", ["add", "masked_fill"])
def test_attention_block(masking):
    compare(lambda *xs: block(MinigradOps, masking, *xs), lambda *xs: block(TorchOps, masking, *xs), block_inputs())


def shifted_window_stage(ops, x, qkv_weight, qkv_bias, proj_weight, norm_weight, norm_bias, merge_weight,
                         merge_bias, reduction_weight, window=2, shift=1, heads=2):
    """Roll, window partition, masked window attention, reverse, roll back, residual, patch merging."""
    b, size, _, c = x.shape
    grid, n = size // window, window * window

    def partition(t):
        return t.reshape(b, grid, window, grid, window, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, n, c)

    bands = np.zeros(size, dtype=int)
    bands[size - window:size - shift], bands[size - shift:] = 1, 2
    labels = (bands[:, None] * 3 + bands[None, :]).reshape(grid, window, grid, window).transpose(0, 2, 1, 3)
    mask = ops.constant(np.tile(region_mask(labels.reshape(-1, n)), (b, 1, 1))[:, None])
    shifted = ops.roll(ops.layer_norm(x, norm_weight, norm_bias), (-shift, -shift), (1, 2))
    attended = attention(ops, partition(shifted), qkv_weight, qkv_bias, proj_weight, lambda s: s + mask, heads)
    merged_back = attended.reshape(b, grid, grid, window, window, c).permute(0, 1, 3, 2, 4, 5).reshape(b, size, size, c)
    y = x + ops.roll(merged_back, (shift, shift), (1, 2))
    merged = ops.concatenate([y[:, 0::2, 0::2], y[:, 1::2, 0::2], y[:, 0::2, 1::2], y[:, 1::2, 1::2]], -1)
    return ops.gelu(ops.linear(ops.layer_norm(merged, merge_weight, merge_bias), reduction_weight))


def test_shifted_window_stage():
    c = 4
    arrays = [rand((2, 4, 4, c), 0), *block_inputs(dim=c)[1:], rand((4 * c,), 6, 0.5, 1.5), rand((4 * c,), 7),
              rand((2 * c, 4 * c), 8)]
    compare(lambda *xs: shifted_window_stage(MinigradOps, *xs), lambda *xs: shifted_window_stage(TorchOps, *xs),
            arrays)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(reduction, label_smoothing):
    target = np.array([2, 0, 4, 4, 1, 3])
    compare(lambda x: F.cross_entropy(x, target, label_smoothing=label_smoothing, reduction=reduction),
            lambda x: TF.cross_entropy(x, torch.from_numpy(target), label_smoothing=label_smoothing,
                                       reduction=reduction),
            [rand((6, 5), 0, -3.0, 3.0)])


@pytest.mark.parametrize("eps", [1e-5, 1e-2])
@pytest.mark.parametrize("affine", [False, True])
def test_layer_norm(affine, eps):
    arrays = [rand((2, 3, 6), 0, -2.0, 2.0)] + ([rand((6,), 1, 0.5, 1.5), rand((6,), 2)] if affine else [])
    compare(lambda x, *wb: F.layer_norm(x, *wb, eps=eps), lambda x, *wb: TF.layer_norm(x, (6,), *wb, eps=eps), arrays)


ELEMENTWISE = {
    "gelu": (F.gelu, TF.gelu),
    "erf": (F.erf, torch.erf),
    "exp": (F.exp, torch.exp),
    "tanh": (F.tanh, torch.tanh),
    "relu": (F.relu, torch.relu),
    "log of exp": (lambda x: F.log(F.exp(x) + 0.5), lambda x: torch.log(torch.exp(x) + 0.5)),
    "sqrt": (lambda x: F.sqrt(x * x + 1.0), lambda x: torch.sqrt(x * x + 1.0)),
    "powers": (lambda x: (x * x + 1.0) ** x + 2.0**x + x**3, lambda x: (x * x + 1.0) ** x + 2.0**x + x**3),
}


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise(name):
    x = np.concatenate([np.linspace(-6.0, 6.0, 48), [-0.3, 0.05, 0.7, 2.5]]).reshape(4, 13)
    compare(*ELEMENTWISE[name], [x])


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_and_log_softmax(name, axis):
    compare(lambda x: getattr(F, name)(x, axis=axis), lambda x: getattr(torch, name)(x, dim=axis),
            [rand((3, 4, 5), 0, -4.0, 4.0)])


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [None, 0, -1, (0, 2)], ids=str)
def test_max_with_ties_matches_amax(axis, keepdims):
    x = np.random.default_rng(3).integers(0, 3, (3, 4, 5)).astype(np.float64)
    dims = () if axis is None else axis
    compare(lambda t: t.max(axis=axis, keepdims=keepdims), lambda t: torch.amax(t, dim=dims, keepdim=keepdims), [x])


@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("axis", [None, 1, (0, 2)], ids=str)
def test_var(axis, ddof):
    compare(lambda t: t.var(axis=axis, ddof=ddof, keepdims=axis is not None),
            lambda t: torch.var(t, dim=axis, correction=ddof, keepdim=axis is not None),
            [rand((3, 4, 5), 0)])


@pytest.mark.parametrize("shapes", [((2, 1, 3, 4), (3, 4, 2)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,)), ((4,), (4,))],
                         ids=str)
def test_matmul(shapes):
    compare(lambda a, b: a @ b, lambda a, b: a @ b, [rand(shapes[0], 1), rand(shapes[1], 2)])


def test_linear_on_3d_input():
    compare(F.linear, TF.linear, [rand((2, 3, 4), 0), rand((5, 4), 1), rand((5,), 2)])


def test_indexing_rolling_and_padding():
    index = np.array([2, 0, 2, 2])

    def ours(x):
        return F.pad(F.roll(x[:, index], (1, -2), (0, 2)), ((1, 0), (0, 0), (2, 1)), value=0.5)[:, ::-1]

    def theirs(x):  # torch's pad lists (before, after) from the last axis backwards
        return TF.pad(torch.roll(x[:, torch.from_numpy(index)], (1, -2), (0, 2)), (2, 1, 0, 0, 1, 0),
                      value=0.5).flip(1)

    compare(ours, theirs, [rand((2, 3, 5), 0)])
