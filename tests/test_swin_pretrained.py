"""swin.load_pretrained and resize_bias_table: official and timm layouts, heads of another size,
strictness, shape errors, weight files of every kind, and bias tables of another window size."""
import importlib.util
import pickle
import re
import sys

import numpy as np
import pytest

import minigrad
from minigrad.tensor import Tensor
from swin import SwinTransformer, load_pretrained, resize_bias_table, swin_mini
from test_torch_checkpoint import TorchStorage, TorchTensor, write_checkpoint

HAS_TORCH = importlib.util.find_spec("torch") is not None


def tiny(**overrides):
    """swin_mini shrunk: 32 px, stages of resolution 8, 4, 2, 1; the first two shifted and masked."""
    settings = dict(img_size=32, embed_dim=8, num_heads=(1, 1, 2, 2), num_classes=5, drop_path_rate=0.0)
    return swin_mini(**{**settings, **overrides})


def images(seed=0, size=32):
    return np.random.default_rng(seed).standard_normal((2, 3, size, size)).astype(np.float32)


def to_timm_layout(state):
    """The official layout renamed as timm names it."""
    renamed = {}
    for key, value in state.items():
        match = re.match(r"layers\.(\d+)\.downsample\.(.*)", key)
        if match:
            key = f"layers.{int(match.group(1)) + 1}.downsample.{match.group(2)}"
        renamed[re.sub(r"^head\.", "head.fc.", key)] = value
    return renamed


@pytest.fixture
def source():
    """A model to take weights from (seed 0); the models that load them are drawn afterwards."""
    minigrad.manual_seed(0)
    return tiny().eval()


def fresh(**overrides):
    minigrad.manual_seed(1)
    return tiny(**overrides).eval()


def assert_same_parameters(model, state, skip=()):
    loaded = model.state_dict()
    for key, value in state.items():
        if key not in skip:
            np.testing.assert_array_equal(loaded[key], value, err_msg=key)


# ---- layouts


def test_official_layout_reproduces_the_logits_exactly(source):
    state = source.state_dict()
    checkpoint = dict(state)
    # Official checkpoints carry these derived buffers; they must be dropped, whatever they hold.
    checkpoint["layers.0.blocks.1.attn.relative_position_index"] = np.zeros((3, 3), dtype=np.int64)
    checkpoint["layers.0.blocks.1.attn_mask"] = np.ones((2, 2), dtype=np.float32)
    model = fresh()
    assert not np.array_equal(model.state_dict()["head.weight"], state["head.weight"])
    result = load_pretrained(model, checkpoint)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert_same_parameters(model, state)
    x = images()
    np.testing.assert_array_equal(model(x).numpy(), source(x).numpy())


def test_timm_layout_loads_identically(source):
    state = source.state_dict()
    checkpoint = to_timm_layout(state)
    assert "layers.1.downsample.reduction.weight" in checkpoint and "head.fc.weight" in checkpoint
    assert "layers.0.downsample.reduction.weight" not in checkpoint
    model = fresh()
    load_pretrained(model, checkpoint)
    assert_same_parameters(model, state)
    x = images(1)
    np.testing.assert_array_equal(model(x).numpy(), source(x).numpy())


def test_a_timm_checkpoint_of_one_stage_is_recognised_by_its_head():
    """No stage has a downsample to tell the layouts apart: timm's head.fc alone does."""
    minigrad.manual_seed(0)
    source = tiny(depths=(2,), num_heads=(1,))
    state = source.state_dict()
    assert not any("downsample" in key for key in state)
    model = fresh(depths=(2,), num_heads=(1,))
    assert load_pretrained(model, to_timm_layout(state)) == ([], [])
    assert_same_parameters(model, state)


@pytest.mark.parametrize("layout", ["official", "timm"])
def test_a_head_of_another_size_is_left_out_and_zeroed(source, layout):
    minigrad.manual_seed(2)
    state = tiny(num_classes=1000).state_dict()
    checkpoint = to_timm_layout(state) if layout == "timm" else state
    model = fresh(num_classes=11)
    model.head.bias.data[...] = 1.0  # as after training: zeroing must reach the bias too
    result = load_pretrained(model, checkpoint, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert np.all(model.head.weight.numpy() == 0) and np.all(model.head.bias.numpy() == 0)
    assert model.head.weight.shape == (11, tiny().num_features)
    assert_same_parameters(model, state, skip=("head.weight", "head.bias"))


@pytest.mark.parametrize("layout", ["official", "timm"])
def test_a_backbone_without_a_head_loads_strictly_and_the_head_is_zeroed(source, layout):
    """Without head.fc, timm's layout is told by its downsample at the start of stage 1 alone."""
    state = {key: value for key, value in source.state_dict().items() if not key.startswith("head.")}
    model = fresh()
    result = load_pretrained(model, to_timm_layout(state) if layout == "timm" else state, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert not model.head.weight.numpy().any() and not model.head.bias.numpy().any()
    assert_same_parameters(model, state)


def test_strict_names_a_missing_key(source):
    checkpoint = source.state_dict()
    del checkpoint["layers.1.blocks.0.norm1.weight"]
    with pytest.raises(RuntimeError, match=r"layers\.1\.blocks\.0\.norm1\.weight"):
        load_pretrained(fresh(), checkpoint, strict=True)
    result = load_pretrained(fresh(), checkpoint, strict=False)
    assert result.missing_keys == ["layers.1.blocks.0.norm1.weight"]


def test_strict_names_an_unexpected_key(source):
    checkpoint = {**source.state_dict(), "layers.0.blocks.0.gamma": np.ones(8, dtype=np.float32)}
    with pytest.raises(RuntimeError, match=r"layers\.0\.blocks\.0\.gamma"):
        load_pretrained(fresh(), checkpoint)


def test_a_checkpoint_of_another_variant_is_named_not_listed_key_by_key(source):
    checkpoint = swin_mini(img_size=32, depths=(2, 2, 4, 2)).state_dict()
    with pytest.raises(ValueError) as error:
        load_pretrained(swin_mini(img_size=32), checkpoint)
    message = str(error.value)
    assert ("the checkpoint holds a Swin with embed_dim 32, depths (2, 2, 4, 2), the model is swin_mini "
            "(embed_dim 32, depths (2, 2, 2, 2))") in message
    assert "layers.2.blocks.3" not in message
    with pytest.raises(ValueError, match=r"holds swin_mini \(embed_dim 32.*the model is a Swin with embed_dim 8"):
        load_pretrained(fresh(), swin_mini(img_size=32).state_dict())
    # Without strict, what fits is loaded: the first two blocks of stage 3.
    result = load_pretrained(swin_mini(img_size=32), checkpoint, strict=False)
    assert "layers.2.blocks.3.norm1.weight" in result.unexpected_keys and result.missing_keys == []


def test_swin_v2_and_other_models_are_named(source):
    checkpoint = {**source.state_dict(), "layers.0.blocks.0.attn.logit_scale": np.zeros((1, 1, 1), np.float32)}
    with pytest.raises(ValueError, match="Swin Transformer V2"):
        load_pretrained(fresh(), checkpoint)
    vit = {"cls_token": np.zeros((1, 1, 8), np.float32), "blocks.0.attn.qkv.weight": np.zeros((24, 8), np.float32)}
    with pytest.raises(ValueError, match=r"holds no Swin weights .* its keys begin blocks\.0\.attn\.qkv\.weight, "
                                         r"cls_token$"):
        load_pretrained(fresh(), vit)


def test_a_long_list_of_keys_is_cut_short(source):
    checkpoint = {**source.state_dict(), **{f"extra.{i:02}": np.zeros(1, np.float32) for i in range(20)}}
    with pytest.raises(RuntimeError) as error:
        load_pretrained(fresh(), checkpoint)
    assert "extra.07, ... and 12 more" in str(error.value) and "extra.08" not in str(error.value)


def test_a_shape_mismatch_names_the_key_and_both_shapes(source):
    checkpoint = source.state_dict()
    checkpoint["layers.0.blocks.0.mlp.fc1.weight"] = np.zeros((16, 8), dtype=np.float32)
    with pytest.raises(ValueError) as error:
        load_pretrained(fresh(), checkpoint)
    message = str(error.value)
    assert "layers.0.blocks.0.mlp.fc1.weight" in message
    assert "(16, 8)" in message and "(32, 8)" in message


def test_loading_onto_a_device(device, source):
    model = fresh().to(device)
    load_pretrained(model, source.state_dict())
    assert all(p.device == device for p in model.parameters())
    x = images(2)
    expected = source(x).numpy()
    np.testing.assert_allclose(model(Tensor(x, device=device)).numpy(), expected, rtol=1e-4,
                               atol=1e-5 * np.abs(expected).max())  # float32, other summation orders on a GPU


# ---- files


def write_minigrad(path, state):
    minigrad.save(state, path)


def write_numpy(path, state):
    np.savez(path, **state)


def write_official_nesting(path, state):
    minigrad.save({"model": state, "epoch": 300, "config": "swin_tiny_patch4_window7_224"}, path)


@pytest.mark.parametrize("write", [write_minigrad, write_numpy, write_official_nesting],
                         ids=["minigrad.save", "numpy.savez", "nested-model"])
def test_weights_files(tmp_path, source, write):
    path = tmp_path / "weights.npz"
    write(path, source.state_dict())
    for where in (path, str(path)):
        model = fresh()
        load_pretrained(model, where)
        assert_same_parameters(model, source.state_dict())


def test_official_pth_file_without_torch(tmp_path, source):
    state = source.state_dict()
    storages = {key: TorchStorage(str(index), value.reshape(-1)) for index, (key, value) in enumerate(state.items())}
    tensors = {key: TorchTensor(storages[key], 0, value.shape, [step // value.itemsize for step in value.strides])
               for key, value in state.items()}
    write_checkpoint(tmp_path / "swin.pth", {"model": tensors, "epoch": 300}, storages.values())
    for where in (tmp_path / "swin.pth", str(tmp_path / "swin.pth")):
        model = fresh()
        load_pretrained(model, where)
        assert_same_parameters(model, state)


def test_pth_of_pytorch_before_1_6_without_torch_explains_how_to_convert(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    path.write_bytes(pickle.dumps({"not": "a zip"}))  # the old format is a bare pickle stream
    with pytest.raises(ImportError, match="format of PyTorch before 1.6") as error:
        load_pretrained(fresh(), path)
    assert ("torch.save(torch.load('swin_tiny_patch4_window7_224.pth', map_location='cpu', weights_only=True), "
            "'swin_tiny_patch4_window7_224-new.pth')") in str(error.value)


@pytest.mark.torch
@pytest.mark.skipif(not HAS_TORCH, reason="writing a .pth file needs torch")
def test_pth_file_and_torch_tensors(tmp_path, source):
    import torch
    state = source.state_dict()
    tensors = {key: torch.from_numpy(value) for key, value in state.items()}
    torch.save({"model": tensors, "epoch": 300}, tmp_path / "weights.pth")
    for where in (tmp_path / "weights.pth", tensors):
        model = fresh()
        load_pretrained(model, where)
        assert_same_parameters(model, state)


def test_safetensors_file(tmp_path, source):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    state = source.state_dict()
    safetensors_numpy.save_file(state, str(tmp_path / "weights.safetensors"))
    for where in (tmp_path / "weights.safetensors", str(tmp_path / "weights.safetensors")):
        model = fresh()
        load_pretrained(model, where)
        assert_same_parameters(model, state)


def test_a_missing_file():
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_pretrained(fresh(), "nowhere.npz")


# ---- bias tables of another window size


def test_resize_to_the_same_size_is_the_identity():
    table = np.random.default_rng(3).standard_normal((13 * 13, 3)).astype(np.float32)
    resized = resize_bias_table(table, 7)
    assert resized.dtype == np.float32
    np.testing.assert_array_equal(resized, table)


def test_resize_keeps_a_constant_table_constant():
    table = np.full((13 * 13, 4), 0.37, dtype=np.float32)
    resized = resize_bias_table(table, 12)
    assert resized.shape == (23 * 23, 4)
    np.testing.assert_allclose(resized, 0.37, rtol=1e-6)


# torch.nn.functional.interpolate(mode="bicubic", align_corners=False) from 3 to 5 samples, worked by hand:
# output i samples the input at x = (i + 0.5) * 3/5 - 0.5 = -0.2, 0.4, 1.0, 1.6, 2.2, weighting the
# inputs floor(x) - 1 .. floor(x) + 2 (clamped to the edges) by Keys' cubic kernel with a = -0.75,
#   W(d) = 1.25|d|^3 - 2.25|d|^2 + 1 for |d| <= 1,  -0.75|d|^3 + 3.75|d|^2 - 6|d| + 3 for 1 < |d| < 2.
# For x = -0.2: W(1.8) = -0.024 and W(0.8) = 0.2 (inputs -2 and -1, clamped to 0), W(0.2) = 0.92, W(1.2) = -0.096.
# For x = 0.4: W(1.4) = -0.108 (input -1, clamped to 0), W(0.4) = 0.72, W(0.6) = 0.46, W(1.6) = -0.072.
BICUBIC_3_TO_5 = np.array([[-0.024 + 0.2 + 0.92, -0.096, 0.0],
                           [-0.108 + 0.72, 0.46, -0.072],
                           [0.0, 1.0, 0.0],
                           [-0.072, 0.46, 0.72 - 0.108],
                           [0.0, -0.096, 0.92 + 0.2 - 0.024]])


@pytest.mark.parametrize("axis", ["dh", "dw"])
def test_resize_from_window_2_to_3_by_hand(axis):
    """A 3 x 3 grid of offsets that varies along one axis only is resized along that axis alone;
    the table's rows are the grid row-major, dh outermost."""
    profile = np.array([1.0, 2.0, 4.0])
    grid = np.tile(profile[:, None], (1, 3)) if axis == "dh" else np.tile(profile[None, :], (3, 1))
    table = np.stack([grid.ravel(), -grid.ravel()], axis=1)  # two heads
    resized = BICUBIC_3_TO_5 @ profile
    expected = np.tile(resized[:, None], (1, 5)) if axis == "dh" else np.tile(resized[None, :], (5, 1))
    np.testing.assert_allclose(resize_bias_table(table, 3), np.stack([expected.ravel(), -expected.ravel()], 1),
                               rtol=1e-12, atol=1e-12)


def test_resize_refuses_a_table_that_is_not_square():
    with pytest.raises(ValueError, match="square number of rows"):
        resize_bias_table(np.zeros((12, 2)), 4)


@pytest.mark.torch
@pytest.mark.skipif(not HAS_TORCH, reason="compares with torch.nn.functional.interpolate")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window_in, window_out", [(7, 12), (12, 7), (4, 5)])
def test_resize_is_torch_bicubic(window_in, window_out, dtype):
    """Computed in float64 whatever the table's dtype, and rounded to it once: a float32 table comes
    out as torch's float64 result rounded to float32, a float64 one to float64 rounding error."""
    import torch
    heads, side_in, side_out = 3, 2 * window_in - 1, 2 * window_out - 1
    table = np.random.default_rng(4).standard_normal((side_in * side_in, heads)).astype(dtype)
    grid = torch.from_numpy(table.T.reshape(1, heads, side_in, side_in).astype(np.float64))
    expected = torch.nn.functional.interpolate(grid, size=(side_out, side_out), mode="bicubic", align_corners=False)
    expected = expected.numpy().reshape(heads, side_out * side_out).T
    resized = resize_bias_table(table, window_out)
    assert resized.dtype == dtype
    if dtype == np.float32:
        np.testing.assert_array_equal(resized, expected.astype(np.float32))
    else:  # sums of 16 products of entries of order 1: rounding errors near 1e-16, whatever the sum's size
        np.testing.assert_allclose(resized, expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("window_from, window_to", [(7, 12), (12, 7)])
def test_a_table_for_another_window_is_resized_to_the_models(window_from, window_to):
    config = dict(patch_size=4, embed_dim=8, depths=(2, 2), num_heads=(1, 2), num_classes=5, drop_path_rate=0.0)
    size = {7: 56, 12: 96}  # stages of resolution 14, 7 and 24, 12
    minigrad.manual_seed(0)
    checkpoint = SwinTransformer(img_size=size[window_from], window_size=window_from, **config)
    minigrad.manual_seed(1)
    model = SwinTransformer(img_size=size[window_to], window_size=window_to, **config).eval()
    state = checkpoint.state_dict()
    assert load_pretrained(model, state) == ([], [])
    loaded = model.state_dict()
    for key, value in state.items():
        if key.endswith("relative_position_bias_table"):
            side_from, side_to = 2 * window_from - 1, 2 * window_to - 1
            assert value.shape[0] == side_from**2 and loaded[key].shape[0] == side_to**2
            np.testing.assert_array_equal(loaded[key], resize_bias_table(value, window_to), err_msg=key)
        else:
            np.testing.assert_array_equal(loaded[key], value, err_msg=key)
    assert np.all(np.isfinite(model(images(5, size=size[window_to])).numpy()))


class TensorStandIn:
    """What load_pretrained asks of a torch tensor (a Parameter that needs a gradient, on a GPU):
    .detach().cpu().numpy(), whose numpy() refuses, as torch's does, before both. No torch needed."""

    def __init__(self, array, requires_grad=True, device="cuda"):
        self.array, self.requires_grad, self.device = array, requires_grad, device

    def detach(self):
        return TensorStandIn(self.array, False, self.device)

    def cpu(self):
        return TensorStandIn(self.array, self.requires_grad, "cpu")

    def numpy(self):
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        if self.device != "cpu":
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                            "to host memory first.")
        return self.array

    def __array__(self, *args, **kwargs):  # what np.asarray of a real torch tensor with grad refuses
        raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")


def test_a_state_dict_of_torch_tensors_without_torch(source):
    state = source.state_dict()
    model = fresh()
    assert load_pretrained(model, {key: TensorStandIn(value) for key, value in state.items()}) == ([], [])
    assert_same_parameters(model, state)
