"""The Swin model: published parameter counts and FLOPs, the official parameter layout and init,
the window/shift rule per stage, variant overrides and size errors, each module against an
independent NumPy implementation, float64 gradient checks of every block and of a whole small
Swin, and a full float32 forward/backward of Swin-T (and of swin_mini on each device)."""
import math
import re

import numpy as np
import pytest

import minigrad
from minigrad import backend, nn
from minigrad import functional as F
from minigrad.tensor import Tensor
from swin import (Mlp, PatchEmbed, PatchMerging, SwinTransformer, SwinTransformerBlock, WindowAttention, build,
                  relative_offset_one_hot, relative_position_index, shifted_window_mask, swin_b, swin_l,
                  swin_mini, swin_s, swin_t)
from swin.attention import RelativePositionBias, WindowAttentionCore
from test_swin_windows import official_region_labels, windows_by_loop

# A Swin small enough to gradient-check whole: stage 1 has 8x8 tokens in four 4x4 windows (shifted,
# masked), then patch merging, stage 2 has one 4x4 window.
GRADCHECK_SWIN = dict(img_size=16, patch_size=2, embed_dim=8, depths=(2, 2), num_heads=(2, 4), window_size=4,
                      num_classes=5, drop_path_rate=0.0)


def rng(seed=0):
    return np.random.default_rng(seed)


def layer_norm_reference(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def randomise(module, seed=0, scale=0.3):
    """Move every parameter off its init (zero biases, unit norms) so every term of the
    computation is exercised."""
    generator = rng(seed)
    for parameter in module.parameters():
        parameter.data = (parameter.data + scale * generator.standard_normal(parameter.shape)).astype(parameter.dtype)
    return module


def block_drop_rates(model):
    return [block.drop_path.p if isinstance(block.drop_path, nn.DropPath) else 0.0
            for layer in model.layers for block in layer.blocks]


# ---- published numbers


@pytest.mark.parametrize("constructor, count, gflops, drop_path_rate", [
    (swin_t, 28_288_354, 4.5, 0.2), (swin_s, 49_606_258, 8.7, 0.3), (swin_b, 87_768_224, 15.4, 0.5),
    (swin_l, 196_532_476, 34.5, 0.2),
], ids=["swin_t", "swin_s", "swin_b", "swin_l"])
def test_parameters_and_flops_match_the_paper(constructor, count, gflops, drop_path_rate):
    model = constructor()
    assert model.num_parameters() == count
    assert round(model.flops() / 1e9, 1) == gflops  # Table 1 gives FLOPs to 0.1 G
    # Stochastic depth of the official configs (Sec. A2.1: 0.2, 0.3, 0.5 for T, S, B; L's 22K config 0.2),
    # reached by the last block.
    assert block_drop_rates(model)[-1] == pytest.approx(drop_path_rate, rel=1e-12)


def test_swin_t_flops_match_the_official_count():
    assert swin_t().flops() == 4_494_405_120


# ---- parameter layout and init


def official_shapes(img_size, patch_size, in_chans, embed_dim, depths, num_heads, window_size, num_classes,
                    mlp_ratio=4.0, qkv_bias=True, patch_norm=True, ape=False):
    """Every parameter of microsoft/Swin-Transformer's SwinTransformer, with its shape."""
    c = embed_dim
    resolution = img_size // patch_size
    shapes = {"patch_embed.proj.weight": (c, in_chans, patch_size, patch_size), "patch_embed.proj.bias": (c,)}
    if patch_norm:
        shapes.update({"patch_embed.norm.weight": (c,), "patch_embed.norm.bias": (c,)})
    if ape:
        shapes["absolute_pos_embed"] = (1, resolution**2, c)
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        dim, res = c * 2**i, resolution // 2**i
        window = min(window_size, res)
        hidden = int(dim * mlp_ratio)
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            shapes.update({p + "norm1.weight": (dim,), p + "norm1.bias": (dim,),
                           p + "attn.relative_position_bias_table": ((2 * window - 1) ** 2, heads),
                           p + "attn.qkv.weight": (3 * dim, dim), p + "attn.qkv.bias": (3 * dim,),
                           p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
                           p + "norm2.weight": (dim,), p + "norm2.bias": (dim,),
                           p + "mlp.fc1.weight": (hidden, dim), p + "mlp.fc1.bias": (hidden,),
                           p + "mlp.fc2.weight": (dim, hidden), p + "mlp.fc2.bias": (dim,)})
            if not qkv_bias:
                del shapes[p + "attn.qkv.bias"]
        if i < len(depths) - 1:
            p = f"layers.{i}.downsample."
            shapes.update({p + "norm.weight": (4 * dim,), p + "norm.bias": (4 * dim,),
                           p + "reduction.weight": (2 * dim, 4 * dim)})
    features = c * 2 ** (len(depths) - 1)
    shapes.update({"norm.weight": (features,), "norm.bias": (features,)})
    if num_classes > 0:  # num_classes=0: no head, as the official nn.Identity
        shapes.update({"head.weight": (num_classes, features), "head.bias": (num_classes,)})
    return shapes


@pytest.mark.parametrize("name", ["swin_t", "swin_mini"])
def test_state_dict_is_the_official_layout(name):
    model = build(name)
    expected = official_shapes(model.img_size, model.patch_size, 3, model.patch_embed.embed_dim, model.depths,
                               [layer.blocks[0].num_heads for layer in model.layers], model.window_size, 1000)
    state = model.state_dict()
    assert list(state) == [key for key, _ in model.named_parameters()]  # no buffers in checkpoints
    assert {key: value.shape for key, value in state.items()} == expected
    assert all(isinstance(value, np.ndarray) and value.dtype == np.float32 for value in state.values())


def test_swin_t_names_and_shapes_of_note():
    state = swin_t().state_dict()
    assert state["patch_embed.proj.weight"].shape == (96, 3, 4, 4)
    assert state["layers.0.blocks.1.attn.relative_position_bias_table"].shape == (169, 3)
    assert state["layers.2.downsample.reduction.weight"].shape == (768, 1536)
    assert "layers.2.downsample.reduction.bias" not in state
    assert not any(key.startswith("layers.3.downsample") for key in state)
    assert state["head.weight"].shape == (1000, 768)
    assert state["norm.weight"].shape == (768,)
    assert not any("relative_position_index" in key or "attn_mask" in key for key in state)


def test_init_is_the_official_one():
    model = swin_t()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * 12 + 3 + 2  # two per block, three downsamples, patch embedding, final
    for norm in norms:
        assert np.all(norm.weight.numpy() == 1) and np.all(norm.bias.numpy() == 0)
    for linear in linears:
        assert linear.bias is None or np.all(linear.bias.numpy() == 0)
    # timm's trunc_normal_(std=.02), as the official code calls it, truncates at the absolute bounds
    # [-2, 2] = +-100 std: the weights are N(0, 0.02^2) for all practical purposes.
    weights = np.concatenate([linear.weight.numpy().ravel() for linear in linears])
    assert np.abs(weights).max() <= 2.0
    assert abs(weights.std() - 0.02) < 0.02 * 1e-3  # 28 M samples: the std's sampling error is ~3e-6 relative
    assert abs(weights.mean()) < 4e-5  # ten standard errors of the mean
    assert abs(np.mean(np.abs(weights) > 0.04) - 0.0455) < 1e-3  # P(|z| > 2) of a normal
    tables = np.concatenate([layer.blocks[j].attn.relative_position_bias_table.numpy().ravel()
                             for layer in model.layers for j in range(len(layer.blocks))])
    assert abs(tables.std() - 0.02) < 0.02 * 0.05 and np.abs(tables).max() <= 2.0
    # The patch embedding is a Conv2d, which the official _init_weights leaves at PyTorch's default.
    # Its weight and bias are U(-1/sqrt(fan_in), 1/sqrt(fan_in)): over 4608 and 96 draws they come close to it.
    bound = 1 / np.sqrt(3 * 4 * 4)
    proj = model.patch_embed.proj
    assert 0.99 * bound < np.abs(proj.weight.numpy()).max() <= bound
    assert 0.5 * bound < np.abs(proj.bias.numpy()).max() <= bound  # all 96 below half: probability 2^-96


@pytest.mark.parametrize("in_chans", [1, 3], ids=["grey", "RGB"])
def test_patch_embedding_init_bound_counts_the_input_channels(in_chans):
    """PyTorch's Conv2d default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in_chans * k * k: over
    96 * in_chans * 16 weights and 96 biases the largest comes close to the bound."""
    proj = PatchEmbed(img_size=8, patch_size=4, in_chans=in_chans, embed_dim=96).proj
    bound = 1 / np.sqrt(in_chans * 4 * 4)
    assert 0.99 * bound < np.abs(proj.weight.numpy()).max() <= bound  # all below: probability 0.99^1536 < 1e-6
    assert 0.75 * bound < np.abs(proj.bias.numpy()).max() <= bound  # all 96 below: probability 0.75^96 < 1e-11


def test_absolute_position_embedding_init_is_the_official_one():
    """trunc_normal_(std=.02), as the official code initialises absolute_pos_embed (ape=True)."""
    model = SwinTransformer(img_size=64, patch_size=2, embed_dim=16, depths=(2,), num_heads=(1,), window_size=4,
                            ape=True)
    embed = model.absolute_pos_embed.numpy()
    assert embed.shape == (1, 32 * 32, 16)
    assert abs(embed.std() - 0.02) < 0.02 * 0.05  # 16384 samples: the std's sampling error is ~0.6 % relative


@pytest.mark.parametrize("name, rate", [("swin_t", 0.2), ("swin_mini", 0.1)])
def test_drop_path_rates_rise_linearly_over_blocks(name, rate):
    model = build(name)
    assert model.layers[0].blocks[0].drop_path.__class__ is nn.Identity  # rate 0: no DropPath at all
    np.testing.assert_allclose(block_drop_rates(model), np.linspace(0, rate, sum(model.depths)), rtol=1e-12)


# ---- windows and shifts per stage


def test_swin_t_stages_alternate_shift_and_the_last_stage_is_one_window():
    model = swin_t()
    for i, layer in enumerate(model.layers[:3]):
        assert layer.blocks[0].input_resolution == 56 // 2**i
        for j, block in enumerate(layer.blocks):
            assert block.window_size == 7 and block.attn.window_size == 7
            assert block.shift_size == (3 if j % 2 else 0)
            assert (block.attn_mask is None) == (j % 2 == 0)
    for block in model.layers[3].blocks:  # resolution 7 = the window: one window, no shift
        assert block.input_resolution == 7
        assert (block.window_size, block.shift_size, block.attn_mask) == (7, 0, None)


def test_swin_mini_last_stage_shrinks_its_window():
    model = swin_mini()  # 64 px: stages of resolution 16, 8, 4, 2 with window 4
    windows = [[(block.window_size, block.shift_size) for block in layer.blocks] for layer in model.layers]
    assert windows == [[(4, 0), (4, 2)], [(4, 0), (4, 2)], [(4, 0), (4, 0)], [(2, 0), (2, 0)]]
    table = model.layers[3].blocks[1].attn.relative_position_bias_table
    assert table.shape == (3 * 3, 8)
    assert model.layers[1].blocks[1].attn_mask.shape == (4, 16, 16)


def test_a_block_refuses_a_shift_outside_the_window():
    with pytest.raises(ValueError, match="shift_size"):
        SwinTransformerBlock(8, 8, 2, window_size=4, shift_size=4)


# ---- variants and their overrides


def test_keyword_overrides():
    model = swin_t(num_classes=11, drop_path_rate=0.0)
    assert model.head.weight.shape == (11, 768) and model.num_classes == 11
    assert block_drop_rates(model) == [0.0] * 12
    assert not any(isinstance(m, nn.DropPath) for m in model.modules())
    assert swin_mini(img_size=128, window_size=8).layers[0].blocks[1].shift_size == 4


def test_swin_b_at_384_uses_window_12():
    model = swin_b(img_size=384)
    assert model.window_size == 12
    first, last = model.layers[0].blocks[1], model.layers[3].blocks[1]
    assert (first.window_size, first.shift_size) == (12, 6)
    assert first.attn.relative_position_bias_table.shape == (23 * 23, 4)
    assert (last.input_resolution, last.window_size, last.shift_size) == (12, 12, 0)


@pytest.mark.parametrize("img_size, window_size", [(224, 7), (384, 12), (448, 7)])
def test_the_default_window_is_12_at_384_px_only(img_size, window_size):
    """As the module promises: 7 at 224 px, 12 at 384 px; other sizes keep 7 (448 px fits 7, not 12)."""
    model = build("swin_t", img_size=img_size, embed_dim=8, num_heads=(1, 1, 1, 1), depths=(1, 1, 1, 1))
    assert model.window_size == window_size == model.layers[0].blocks[0].window_size


def test_swin_mini_is_the_documented_configuration():
    """64 px, C = 32, depths (2, 2, 2, 2), heads (1, 2, 4, 8), window 4, as its docstring and comment say,
    with the parameters of the official layout of that configuration."""
    model = swin_mini()
    assert (model.img_size, model.patch_embed.embed_dim, model.depths, model.window_size) == (64, 32, (2, 2, 2, 2), 4)
    assert [layer.blocks[0].num_heads for layer in model.layers] == [1, 2, 4, 8]
    shapes = official_shapes(64, 4, 3, 32, (2, 2, 2, 2), (1, 2, 4, 8), 4, 1000)
    assert model.num_parameters() == sum(math.prod(shape) for shape in shapes.values())


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown Swin variant 'swin_x'"):
        build("swin_x")


# ---- image sizes a model cannot take


def listed_sizes(message):
    return [int(s) for s in re.search(r"[Ss]izes that fit: \[([\d, ]+)\]", message).group(1).split(",")]


def test_construction_with_an_unusable_size_says_which_sizes_fit():
    with pytest.raises(ValueError, match="img_size=200") as error:
        SwinTransformer(img_size=200)
    assert 224 in listed_sizes(str(error.value))


def test_every_size_offered_instead_is_usable():
    config = dict(patch_size=2, embed_dim=8, depths=(2, 2), num_heads=(1, 1), window_size=4)
    with pytest.raises(ValueError) as error:
        SwinTransformer(img_size=30, **config)
    sizes = listed_sizes(str(error.value))
    assert len(sizes) == 4
    for size in sizes:
        assert SwinTransformer(img_size=size, **config).img_size == size


def test_forward_with_a_wrong_image_size_says_what_the_model_takes():
    model = swin_mini()
    with pytest.raises(ValueError) as error:
        model(np.zeros((2, 3, 200, 200), dtype=np.float32))
    message = str(error.value)
    assert "(B, 3, 64, 64)" in message and "(2, 3, 200, 200)" in message
    assert listed_sizes(message)
    with pytest.raises(ValueError, match="A model built with img_size=32 would take them"):
        model(np.zeros((1, 3, 32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match=r"got \(1, 3, 64, 32\): resize them to 64x64\.$"):
        model(np.zeros((1, 3, 64, 32), dtype=np.float32))



@pytest.mark.parametrize("shape, hint", [
    ((3, 64, 64), r"add the batch axis, x\[None\]"),
    ((2, 64, 64, 3), r"channels-last.*x.transpose\(0, 3, 1, 2\)"),
    ((2, 1, 64, 64), r"with 1 on the channel axis; convert them to 3 channels"),
    ((64, 64), r"got shape \(64, 64\)$"),
    ((64, 64, 3), r"got shape \(64, 64, 3\)$"),  # 3-D but not one image of this model: no batch-axis hint
], ids=["one image", "channels last", "grey", "2-D", "3-D"])
def test_forward_with_a_wrong_layout_says_what_to_change(shape, hint):
    with pytest.raises(ValueError, match=r"takes images of shape \(B, 3, 64, 64\).*" + hint):
        swin_mini()(np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize("in_chans, hint", [
    (1, r"convert them to 1 channel \(e\.g\. Pillow's \.convert\('L'\)\)$"),
    (2, r"convert them to 2 channels$"),  # no Pillow mode has two channels: no example
], ids=["grey model", "two-channel model"])
def test_a_model_of_other_channels_says_how_to_convert_to_them(in_chans, hint):
    """A grey model given RGB images is told Pillow's 'L' (one channel), not 'RGB'."""
    model = SwinTransformer(**{**GRADCHECK_SWIN, "in_chans": in_chans})
    with pytest.raises(ValueError,
                       match=rf"takes images of shape \(B, {in_chans}, 16, 16\).*with 3 on the channel axis; " + hint):
        model(np.zeros((2, 3, 16, 16), dtype=np.float32))


@pytest.mark.parametrize("weights, dtype, hint", [
    ("float32", np.float64, r"\.astype\('float32'\)"), ("float32", np.uint8, "pixels / 255"),
    ("float64", np.float32, r"\.astype\('float64'\), or the model with model\.to\(dtype='float32'\)"),
], ids=["float64 images", "uint8 images", "float64 model"])
def test_forward_with_images_of_another_dtype_says_what_to_change(weights, dtype, hint):
    """float64 images would silently turn the whole step into float64 (and uint8 ones are unscaled); a float64
    model given float32 images is told the same, the other way round."""
    with pytest.raises(TypeError, match=f"weights are {weights}, got {np.dtype(dtype)} images: .*{hint}"):
        swin_mini().to(dtype=weights)(np.zeros((1, 3, 64, 64), dtype=dtype))


# ---- each module against NumPy


def patch_embed_reference(embed, x):
    """Each k x k patch, row-major over the image, through the convolution's weight, then the LayerNorm."""
    weight, bias = embed.proj.weight.numpy(), embed.proj.bias.numpy()
    k, side = embed.patch_size, x.shape[2] // embed.patch_size
    expected = np.zeros((x.shape[0], side * side, weight.shape[0]))
    for i in range(side):
        for j in range(side):
            patch = x[:, :, i * k:(i + 1) * k, j * k:(j + 1) * k]
            expected[:, i * side + j] = np.einsum("bchw,ochw->bo", patch, weight) + bias
    if embed.norm is not None:
        expected = layer_norm_reference(expected, embed.norm.weight.numpy(), embed.norm.bias.numpy())
    return expected


@pytest.mark.parametrize("patch_norm", [False, True])
def test_patch_embed_is_a_stride_k_convolution(patch_norm):
    embed = randomise(PatchEmbed(img_size=12, patch_size=4, in_chans=3, embed_dim=5, patch_norm=patch_norm))
    x = rng(1).standard_normal((2, 3, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(embed(Tensor(x)).numpy(), patch_embed_reference(embed, x), rtol=1e-5, atol=1e-5)


def patch_merging_reference(merging, x):
    """The official concatenation order x0 (even row, even column), x1 (odd, even), x2 (even, odd), x3 (odd, odd)."""
    b, _, c = x.shape
    r = merging.input_resolution
    grid = x.reshape(b, r, r, c)
    merged = np.concatenate([grid[:, 0::2, 0::2], grid[:, 1::2, 0::2], grid[:, 0::2, 1::2], grid[:, 1::2, 1::2]],
                            axis=-1).reshape(b, -1, 4 * c)
    normed = layer_norm_reference(merged, merging.norm.weight.numpy(), merging.norm.bias.numpy())
    return normed @ merging.reduction.weight.numpy().T


def test_patch_merging_concatenation_order():
    merging = randomise(PatchMerging(input_resolution=4, dim=3))
    x = rng(2).standard_normal((2, 16, 3)).astype(np.float32)
    out = merging(Tensor(x))
    assert out.shape == (2, 4, 6)
    np.testing.assert_allclose(out.numpy(), patch_merging_reference(merging, x), rtol=1e-5, atol=1e-5)


def window_attention_reference(attention, x, mask):
    """softmax(q * scale @ k^T + B + mask) @ v, then proj, from the module's weights alone."""
    windows, n, c = x.shape
    heads, m = attention.num_heads, attention.window_size
    d = c // heads
    qkv = x @ attention.qkv.weight.numpy().T
    if attention.qkv.bias is not None:
        qkv = qkv + attention.qkv.bias.numpy()
    q, k, v = (qkv[..., s * c:(s + 1) * c].reshape(windows, n, heads, d).transpose(0, 2, 1, 3) for s in range(3))
    table = attention.relative_position_bias_table.numpy()
    bias = np.zeros((heads, n, n))
    for i in range(n):
        for j in range(n):
            bias[:, i, j] = table[(i // m - j // m + m - 1) * (2 * m - 1) + (i % m - j % m + m - 1)]
    logits = (q * d**-0.5) @ k.transpose(0, 1, 3, 2) + bias
    if mask is not None:
        logits = logits + mask[np.arange(windows) % mask.shape[0]][:, None]  # batch outermost
    logits = logits - logits.max(-1, keepdims=True)
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(windows, n, c)
    return out @ attention.proj.weight.numpy().T + attention.proj.bias.numpy()


@pytest.mark.parametrize("masked", [False, True], ids=["W-MSA", "SW-MSA"])
def test_window_attention_matches_numpy(masked):
    attention = randomise(WindowAttention(dim=12, window_size=3, num_heads=3))
    mask = shifted_window_mask(6, 9, 3, 1) if masked else None  # six windows per image
    x = rng(3).standard_normal((2 * 6, 9, 12)).astype(np.float32)
    out = attention(Tensor(x), mask=mask)
    np.testing.assert_allclose(out.numpy(), window_attention_reference(attention, x, mask), rtol=1e-4, atol=1e-5)


# ---- whole blocks and a whole network against NumPy (torch-free stand-ins for the timm parity tests)


def windows_back_by_loop(windows, m, b, h, w):
    """The inverse of windows_by_loop: window k goes back to image k // nW, window row, window column."""
    back = np.zeros((b, h, w, windows.shape[-1]), dtype=windows.dtype)
    places = [(n, i, j) for n in range(b) for i in range(h // m) for j in range(w // m)]
    for window, (n, i, j) in zip(windows, places):
        back[n, i * m:(i + 1) * m, j * m:(j + 1) * m] = window
    return back


def gelu_reference(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def block_reference(block, x):
    """Fig. 3(b) as the official code computes it: z = x + un-shift(W-MSA(windows(shift(LN1(x))))), with the
    map rolled by -s before windowing and by +s after, and -100 between tokens of different regions of
    the official labelling; then z + fc2(GELU(fc1(LN2(z))))."""
    b, tokens, c = x.shape
    r, m, s = block.input_resolution, block.window_size, block.shift_size
    h = layer_norm_reference(x, block.norm1.weight.numpy(), block.norm1.bias.numpy()).reshape(b, r, r, c)
    h = np.roll(h, (-s, -s), axis=(1, 2))
    mask = None
    if s:
        labels = windows_by_loop(official_region_labels(r, r, m, s), m).reshape(-1, m * m)
        mask = np.where(labels[:, :, None] != labels[:, None, :], -100.0, 0.0)
    attended = window_attention_reference(block.attn, windows_by_loop(h, m).reshape(-1, m * m, c), mask)
    h = np.roll(windows_back_by_loop(attended.reshape(-1, m, m, c), m, b, r, r), (s, s), axis=(1, 2))
    z = x + h.reshape(b, tokens, c)
    mlp = block.mlp
    y = layer_norm_reference(z, block.norm2.weight.numpy(), block.norm2.bias.numpy())
    y = gelu_reference(y @ mlp.fc1.weight.numpy().T + mlp.fc1.bias.numpy())
    return z + y @ mlp.fc2.weight.numpy().T + mlp.fc2.bias.numpy()


@pytest.mark.parametrize("shift", [0, 2], ids=["W-MSA", "SW-MSA"])
def test_swin_block_matches_numpy(shift):
    block = SwinTransformerBlock(dim=8, input_resolution=8, num_heads=2, window_size=4, shift_size=shift,
                                 mlp_ratio=2.0).to(dtype="float64").eval()
    randomise(block, seed=10)
    x = rng(11).standard_normal((2, 64, 8))
    np.testing.assert_allclose(block(Tensor(x)).numpy(), block_reference(block, x), rtol=1e-10, atol=1e-12)


def swin_reference(model, images):
    """Fig. 3(a) from the references above: patch embedding (+ absolute position embedding), each
    stage's blocks then patch merging, final LayerNorm on every token, average over tokens, head."""
    x = patch_embed_reference(model.patch_embed, images)
    if model.absolute_pos_embed is not None:
        x = x + model.absolute_pos_embed.numpy()
    for layer in model.layers:
        for block in layer.blocks:
            x = block_reference(block, x)
        if layer.downsample is not None:
            x = patch_merging_reference(layer.downsample, x)
    x = layer_norm_reference(x, model.norm.weight.numpy(), model.norm.bias.numpy()).mean(axis=1)
    if model.num_classes == 0:  # no head: the pooled features
        return x
    return x @ model.head.weight.numpy().T + model.head.bias.numpy()


# Settings off the defaults, each applied to GRADCHECK_SWIN (and the batch to run them on).
OTHER_SETTINGS = {
    "ape": dict(ape=True),
    "grey, no patch norm, no head, batch 1": dict(in_chans=1, patch_norm=False, num_classes=0, batch=1),
    # hidden widths int(8 * 1.3) = 10 and int(16 * 1.3) = 20, as the official int(dim * mlp_ratio)
    "no qkv bias, mlp_ratio 1.3, window 2": dict(qkv_bias=False, mlp_ratio=1.3, window_size=2),
    "window 8, last stage one window": dict(img_size=32, window_size=8),
    "drop rates, in eval": dict(ape=True, drop_rate=0.3, attn_drop_rate=0.3, drop_path_rate=0.3),
}


def small_swin_config(settings):
    """GRADCHECK_SWIN with ``settings`` applied and every other setting at SwinTransformer's default."""
    defaults = dict(in_chans=3, mlp_ratio=4.0, qkv_bias=True, patch_norm=True, ape=False)
    config = {**defaults, **GRADCHECK_SWIN, **settings}
    config.pop("batch", None)
    return config


@pytest.mark.parametrize("settings", OTHER_SETTINGS.values(), ids=OTHER_SETTINGS)
def test_a_whole_small_swin_matches_numpy(settings):
    config = small_swin_config(settings)
    model = SwinTransformer(**config).to(dtype="float64").eval()
    randomise(model, seed=12, scale=0.2)
    side = config["img_size"]
    x = rng(13).standard_normal((settings.get("batch", 2), config["in_chans"], side, side))
    out = model(x).numpy()
    assert out.shape == (len(x), config["num_classes"] or model.num_features)
    np.testing.assert_allclose(out, swin_reference(model, x), rtol=1e-10, atol=1e-12)


class DropEverything(nn.Module):
    """A dropout (or drop-path) stand-in whose draw dropped every element (or every sample's branch)."""

    def forward(self, x):
        return x * 0.0


def test_drop_path_covers_both_residual_branches():
    """Stochastic depth drops each residual branch (attention and MLP): with both dropped a block is the identity."""
    block = randomise(SwinTransformerBlock(dim=8, input_resolution=8, num_heads=2, window_size=4, shift_size=2,
                                           drop_path=0.5))
    assert isinstance(block.drop_path, nn.DropPath) and block.drop_path.p == 0.5
    block.drop_path = DropEverything()
    x = rng(14).standard_normal((2, 64, 8)).astype(np.float32)
    np.testing.assert_array_equal(block(Tensor(x)).numpy(), x)


class DropOnCall(nn.Module):
    """A dropout stand-in used in several places: its ``call``-th use drops everything, the others nothing."""

    def __init__(self, call):
        super().__init__()
        self.call, self.calls = call, 0

    def forward(self, x):
        self.calls += 1
        return x * 0.0 if self.calls == self.call else x


@pytest.mark.parametrize("dropout", ["attn_drop", "proj_drop"])
def test_attention_dropout_acts_on_the_attention_weights_and_after_the_projection(dropout):
    """attn_drop after the softmax: with every weight dropped, no value gets through and only the projection's
    bias is left; proj_drop after the projection: nothing is left. (Dropout(1.0) drops every element: the
    attention core takes attn_drop's rate, not its forward.)"""
    attention = randomise(WindowAttention(dim=4, window_size=2, num_heads=2))
    setattr(attention, dropout, nn.Dropout(1.0))
    out = attention(Tensor(rng(16).standard_normal((3, 4, 4)).astype(np.float32)))
    expected = np.broadcast_to(attention.proj.bias.numpy(), (3, 4, 4)) if dropout == "attn_drop" else 0.0
    np.testing.assert_array_equal(out.numpy(), expected)


@pytest.mark.parametrize("call", [1, 2], ids=["after GELU", "after fc2"])
def test_mlp_dropout_follows_each_linear_layer(call):
    """fc1 -> GELU -> dropout -> fc2 -> dropout: everything dropped after the GELU leaves fc2's bias;
    after fc2, zero."""
    mlp = randomise(Mlp(4, 6, drop=0.1))
    assert mlp.drop.p == 0.1
    mlp.drop = DropOnCall(call)
    out = mlp(Tensor(rng(17).standard_normal((2, 3, 4)).astype(np.float32))).numpy()
    assert mlp.drop.calls == 2
    np.testing.assert_array_equal(out, np.broadcast_to(mlp.fc2.bias.numpy(), (2, 3, 4)) if call == 1 else 0.0)


def test_dropout_rates_reach_the_modules_the_official_code_gives_them():
    """drop_rate: after the position embedding, after attention's projection, inside the MLP;
    attn_drop_rate: on the attention weights only."""
    model = SwinTransformer(**{**GRADCHECK_SWIN, "drop_rate": 0.1, "attn_drop_rate": 0.2})
    assert model.pos_drop.p == 0.1
    blocks = [block for layer in model.layers for block in layer.blocks]
    assert len(blocks) == 4
    for block in blocks:
        assert block.attn.attn_drop.p == 0.2 and block.attn.proj_drop.p == 0.1 and block.mlp.drop.p == 0.1


@pytest.mark.parametrize("settings", OTHER_SETTINGS.values(), ids=OTHER_SETTINGS)
def test_other_settings_give_the_official_layout(settings):
    """No patch_embed.norm without patch_norm, no qkv bias without qkv_bias, no head for num_classes=0, ..."""
    config = small_swin_config(settings)
    expected = official_shapes(**{key: config[key] for key in ("img_size", "patch_size", "in_chans", "embed_dim",
                                                                "depths", "num_heads", "window_size", "num_classes",
                                                                "mlp_ratio", "qkv_bias", "patch_norm", "ape")})
    model = SwinTransformer(**config)
    assert {key: value.shape for key, value in model.state_dict().items()} == expected
    assert (model.patch_embed.norm is None) == (not config["patch_norm"])


def official_flops(img_size, patch_size, in_chans, embed_dim, depths, num_heads, window_size, num_classes,
                   mlp_ratio, patch_norm, **_):
    """microsoft/Swin-Transformer's flops(), module by module, from the configuration alone: the window
    of a stage no larger than it is its resolution; nW and the MLP term are floats there, as here."""
    resolution = img_size // patch_size
    flops = resolution**2 * embed_dim * in_chans * patch_size**2 + (resolution**2 * embed_dim if patch_norm else 0)
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        dim, r = embed_dim * 2**i, resolution // 2**i
        m = min(window_size, r)
        n = m * m
        attention = n * dim * 3 * dim + heads * n * (dim // heads) * n * 2 + n * dim * dim
        flops += depth * (dim * r * r + r * r / m / m * attention + 2 * r * r * dim * dim * mlp_ratio + dim * r * r)
        if i < len(depths) - 1:
            flops += r * r * dim + (r // 2) * (r // 2) * 4 * dim * 2 * dim
    features = embed_dim * 2 ** (len(depths) - 1)
    return flops + features * resolution**2 // 2 ** len(depths) + features * num_classes


@pytest.mark.parametrize("settings", OTHER_SETTINGS.values(), ids=OTHER_SETTINGS)
def test_flops_of_other_settings_are_the_official_count(settings):
    """in_chans, patch_norm, mlp_ratio, num_classes=0 and the window each enter the count. The official
    count is a float where mlp_ratio makes it one; here each block's MLP term is rounded down to an integer."""
    config = small_swin_config(settings)
    flops, official = SwinTransformer(**config).flops(), official_flops(**config)
    assert isinstance(flops, int) and official - sum(config["depths"]) < flops <= official


def test_official_flops_transcription_gives_swin_t_its_published_count():
    swin_t_config = dict(img_size=224, patch_size=4, in_chans=3, embed_dim=96, depths=(2, 2, 6, 2),
                         num_heads=(3, 6, 12, 24), window_size=7, num_classes=1000, mlp_ratio=4.0, patch_norm=True)
    assert official_flops(**swin_t_config) == 4_494_405_120


def test_num_classes_0_gives_the_pooled_features():
    """As the official model: no head; the network returns the (B, num_features) features."""
    model = SwinTransformer(**{**GRADCHECK_SWIN, "num_classes": 0})
    assert not any(key.startswith("head.") for key in model.state_dict())
    x = rng(15).standard_normal((2, 3, 16, 16)).astype(np.float32)
    features = model(x)
    assert features.shape == (2, model.num_features) == (2, 16)
    np.testing.assert_array_equal(features.numpy(), model.forward_features(Tensor(x)).numpy())


# ---- gradient checks in float64


def check_gradients(module, input_shape, projections=None, **kwargs):
    """gradcheck of ``module`` with respect to its input and every parameter, in float64."""
    module.to(dtype="float64").eval()
    randomise(module, seed=5, scale=0.2)
    x = Tensor(rng(6).standard_normal(input_shape), requires_grad=True)
    parameters = list(module.parameters())
    assert parameters and all(p.dtype == np.float64 for p in parameters)
    assert minigrad.gradcheck(lambda x, *ps: module(x, **kwargs), [x, *parameters], projections=projections)


@pytest.mark.parametrize("window_size", [1, 2, 3, 7])
def test_relative_position_bias_is_the_lookup_and_its_gradient_the_scatter_add(device, window_size):
    """Forward picks table rows; backward, matrix products instead of a scatter-add (GPU atomics
    would round differently each run), must give what the scatter-add gives."""
    side, heads = 2 * window_size - 1, 3
    table = rng(4).standard_normal((side * side, heads))
    index = relative_position_index(window_size, device).reshape(-1)
    cotangent = rng(5).standard_normal((window_size**4, heads))
    leaf = minigrad.tensor(table, requires_grad=True, device=device)
    one_hot = relative_offset_one_hot(window_size, device)
    bias = RelativePositionBias.apply(leaf, index=index, one_hot=one_hot)
    np.testing.assert_array_equal(bias.numpy(), table[backend.asnumpy(index)])
    bias.backward(backend.to_device(cotangent, device))
    scattered = np.zeros_like(table)
    np.add.at(scattered, backend.asnumpy(index), cotangent)
    np.testing.assert_allclose(backend.asnumpy(leaf.grad), scattered, rtol=1e-13, atol=1e-13)
    assert minigrad.gradcheck(lambda t: RelativePositionBias.apply(t, index=index, one_hot=one_hot),
                              [minigrad.tensor(table, requires_grad=True, device=device)])


@pytest.mark.parametrize("masked", [False, True], ids=["W-MSA", "SW-MSA"])
def test_gradcheck_window_attention(masked):
    mask = shifted_window_mask(4, 4, 2, 1).astype(np.float64) if masked else None
    check_gradients(WindowAttention(dim=4, window_size=2, num_heads=2), (2 * 4, 4, 4), mask=mask)


@pytest.mark.parametrize("shift", [0, 2], ids=["unshifted", "shifted"])
def test_gradcheck_swin_block(shift):
    block = SwinTransformerBlock(dim=8, input_resolution=8, num_heads=2, window_size=4, shift_size=shift,
                                 mlp_ratio=2.0)
    assert (block.attn_mask is not None) == bool(shift)
    check_gradients(block, (2, 64, 8), projections=2)


def test_gradcheck_patch_merging():
    check_gradients(PatchMerging(input_resolution=4, dim=3), (2, 16, 3))


def test_gradcheck_patch_embed():
    check_gradients(PatchEmbed(img_size=4, patch_size=2, in_chans=3, embed_dim=4), (2, 3, 4, 4))


def test_gradcheck_mlp():
    check_gradients(Mlp(5, 7), (2, 3, 5))


def test_gradcheck_a_whole_small_swin():
    model = SwinTransformer(**GRADCHECK_SWIN)
    shifted = model.layers[0].blocks[1]
    assert shifted.shift_size == 2 and shifted.attn_mask.shape == (4, 16, 16)
    assert model.layers[0].downsample is not None
    check_gradients(model, (2, 3, 16, 16), projections=2)


# ---- full forward and backward


def test_swin_t_forward_backward_on_the_cpu():
    model = swin_t()
    x = rng(7).standard_normal((2, 3, 224, 224)).astype(np.float32)
    logits = model(x)
    assert logits.shape == (2, 1000) and logits.dtype == np.float32
    loss = F.cross_entropy(logits, np.array([3, 998]))
    assert np.isfinite(loss.item())
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.shape == parameter.shape and parameter.grad.dtype == np.float32, name
        assert np.all(np.isfinite(parameter.grad)), name


def test_swin_mini_on_each_device_agrees_with_the_cpu(device):
    reference = swin_mini(drop_path_rate=0.0, num_classes=7)
    model = swin_mini(drop_path_rate=0.0, num_classes=7)
    model.load_state_dict(reference.state_dict())
    model.to(device)
    x = rng(8).standard_normal((2, 3, 64, 64)).astype(np.float32)
    cotangent = rng(9).standard_normal((2, 7)).astype(np.float32)

    def logits_and_grads(net, dev):
        logits = net(Tensor(x, device=dev))
        assert logits.device == dev
        (logits * Tensor(cotangent, device=dev)).sum().backward()
        return logits.numpy(), {name: backend.asnumpy(p.grad) for name, p in net.named_parameters()}

    cpu_logits, cpu_grads = logits_and_grads(reference, "cpu")
    logits, grads = logits_and_grads(model, device)
    # float32 with other summation orders (cuBLAS) on a real GPU: agreement to ~1e-4 of the scale.
    np.testing.assert_allclose(logits, cpu_logits, rtol=1e-4, atol=1e-5 * np.abs(cpu_logits).max())
    assert grads.keys() == cpu_grads.keys()
    for name, grad in grads.items():
        scale = np.abs(cpu_grads[name]).max()
        np.testing.assert_allclose(grad, cpu_grads[name], rtol=1e-3, atol=1e-4 * scale + 1e-12, err_msg=name)


# ---- round 2 of the mutation audit


def test_attention_refuses_a_width_that_does_not_split_into_heads():
    with pytest.raises(ValueError, match="dim 10 must be divisible by num_heads 3"):
        WindowAttention(dim=10, window_size=2, num_heads=3)


def test_a_block_refuses_a_negative_shift():
    with pytest.raises(ValueError, match="shift_size must lie in \\[0, window_size\\), got -1"):
        SwinTransformerBlock(8, 8, 2, window_size=4, shift_size=-1)


def test_a_shift_other_than_half_the_window_is_used_for_shift_and_mask():
    """shift_size is the block's setting, not always M // 2: a 3x3 window shifted by 1 on a 6x6 map
    (and an 8x8 map with 4x4 windows shifted by 1), checked against the NumPy reference."""
    for r, m, shift in [(6, 3, 1), (8, 4, 1)]:
        block = SwinTransformerBlock(dim=4, input_resolution=r, num_heads=2, window_size=m, shift_size=shift,
                                     mlp_ratio=1.0).to(dtype="float64").eval()
        randomise(block, seed=20)
        x = rng(21).standard_normal((2, r * r, 4))
        np.testing.assert_allclose(block(Tensor(x)).numpy(), block_reference(block, x), rtol=1e-10, atol=1e-12)


def test_mlp_ratio_sets_the_hidden_width_of_every_block():
    """The official hidden width int(dim * mlp_ratio), in the block and as passed down by the model."""
    assert SwinTransformerBlock(dim=8, input_resolution=4, num_heads=2, window_size=4,
                                mlp_ratio=1.5).mlp.fc1.weight.shape == (12, 8)
    model = SwinTransformer(**GRADCHECK_SWIN, mlp_ratio=2.0)
    for i, layer in enumerate(model.layers):
        dim = 8 * 2**i
        for block in layer.blocks:
            assert block.mlp.fc1.weight.shape == (2 * dim, dim) and block.mlp.fc2.weight.shape == (dim, 2 * dim)


def test_a_single_block_gets_no_drop_path():
    """The official rates are torch.linspace(0, drop_path_rate, sum(depths)): one block gets the start, 0."""
    model = SwinTransformer(img_size=8, patch_size=2, embed_dim=4, depths=(1,), num_heads=(1,), window_size=4,
                            drop_path_rate=0.3)
    assert block_drop_rates(model) == list(np.linspace(0, 0.3, 1)) == [0.0]


@pytest.mark.parametrize("ape", [False, True])
def test_dropout_after_the_position_embedding(ape):
    """pos_drop acts on patch embedding (+ absolute position embedding), with or without one, as the official
    code: with everything dropped, neither the image nor the position embedding reaches the stages."""
    model = randomise(SwinTransformer(**GRADCHECK_SWIN, ape=ape, drop_rate=0.1), seed=22).eval()
    model.pos_drop = DropEverything()
    x, y = rng(23).standard_normal((2, 2, 3, 16, 16)).astype(np.float32)
    out = model(x).numpy()
    np.testing.assert_array_equal(model(y).numpy(), out)
    if ape:
        model.absolute_pos_embed.data = model.absolute_pos_embed.data + 1.0
        np.testing.assert_array_equal(model(x).numpy(), out)


@pytest.mark.parametrize("patch_norm", [False, True])
def test_patch_embed_flops_count_the_norm_only_when_there_is_one(patch_norm):
    # 8 px in 4x4 patches: 2 x 2 tokens, each 5 outputs of 3 * 4 * 4 multiply-adds, + 5 per token for the norm.
    embed = PatchEmbed(img_size=8, patch_size=4, in_chans=3, embed_dim=5, patch_norm=patch_norm)
    assert embed.flops() == 4 * 5 * 48 + (4 * 5 if patch_norm else 0)


def test_only_stages_followed_by_patch_merging_need_an_even_resolution():
    from swin.model import unusable_size_reason
    # One stage of odd resolution 21 = three 7x7 windows: nothing to halve, the model takes it.
    model = SwinTransformer(img_size=84, patch_size=4, embed_dim=4, depths=(2,), num_heads=(1,), window_size=7,
                            num_classes=3)
    assert model(rng(24).standard_normal((1, 3, 84, 84)).astype(np.float32)).shape == (1, 3)
    # A stage of resolution 7 (one window) before patch merging cannot be halved.
    assert unusable_size_reason(28, 4, 7, 2) == \
        "stage 1 would have the odd resolution 7, which patch merging cannot halve"
    with pytest.raises(ValueError, match="odd resolution 7"):
        SwinTransformer(img_size=28, patch_size=4, embed_dim=4, depths=(2, 2), num_heads=(1, 1), window_size=7)


def test_a_model_built_on_a_default_device_keeps_everything_there(device, monkeypatch):
    """Parameters and the derived buffers (relative position index, attention masks) are made on the
    default device, so a model built there runs there, as the CPU one does."""
    monkeypatch.setattr(backend, "_default_device", device)  # as set_default_device(device); restored after
    minigrad.manual_seed(0)
    model = SwinTransformer(**GRADCHECK_SWIN, ape=True)
    buffers = dict(model.named_buffers())
    assert "layers.0.blocks.1.attn_mask" in buffers and "layers.0.blocks.0.attn.relative_position_index" in buffers
    for name, array in [*buffers.items(), *((n, p.data) for n, p in model.named_parameters())]:
        assert backend.device_of(array) == device, name
    state = model.state_dict()
    monkeypatch.setattr(backend, "_default_device", "cpu")
    reference = SwinTransformer(**GRADCHECK_SWIN, ape=True)
    reference.load_state_dict(state)
    x = rng(25).standard_normal((2, 3, 16, 16)).astype(np.float32)
    logits = model(Tensor(x, device=device))
    assert logits.device == device
    np.testing.assert_allclose(logits.numpy(), reference(x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True], ids=["W-MSA", "SW-MSA"])
@pytest.mark.parametrize("dropped", [False, True], ids=["all kept", "attention dropout"])
def test_gradcheck_the_fused_attention_core(device, masked, dropped):
    """Its hand-derived backward (the split, the scale, the bias and mask, softmax, dropout's
    multiplier, the product with v), checked against central differences."""
    windows, n, heads, d = 4, 4, 2, 3
    qkv = minigrad.tensor(rng(30).standard_normal((windows, n, 3 * heads * d)), requires_grad=True, device=device)
    bias = minigrad.tensor(rng(31).standard_normal((heads, n, n)), requires_grad=True, device=device)
    mask = backend.to_device(shifted_window_mask(4, 4, 2, 1).astype(np.float64), device) if masked else None
    keep = None
    if dropped:
        keep = backend.to_device((rng(32).random((windows, heads, n, n)) > 0.3) / 0.7, device)
    assert minigrad.gradcheck(lambda q, b: WindowAttentionCore.apply(q, b, mask, keep, heads=heads, scale=0.4),
                              [qkv, bias])
