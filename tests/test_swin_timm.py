"""Parity with timm's Swin-T: the same weights give the same logits and the same gradients; and with
timm's SwinTransformer for small configurations off Swin-T's defaults, in float64.

Needs torch and timm (never in CI: the module skips cleanly without them). timm's model is built
with random init (no download), its state dict is loaded into ours with load_pretrained (timm
layout: downsample at the start of stages 1..3, head.fc), and both run the same float32 batch.
"""
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from minigrad.tensor import Tensor  # noqa: E402
from swin import SwinTransformer, load_pretrained, swin_t  # noqa: E402

pytestmark = pytest.mark.torch

# float32 throughout: one rounding is ~6e-8 relative, and each result sums thousands of products
# (up to 3136 tokens x 384 features for the first-stage weight gradients) in orders that differ
# between torch's kernels and NumPy's BLAS, through 12 blocks. Such errors stay around 1e-6 of a
# tensor's largest entry (about 3e-6 is seen); allowing 1e-4 of it, key by key, leaves a wide margin
# while a real mistake (a wrong index, order or scale) moves values by O(1) of their size. Measuring
# against each key's own largest gradient, not max(1, ...), keeps small gradients checked too.
LOGIT_TOLERANCE = 1e-4
GRADIENT_TOLERANCE = 1e-4


def official_name(timm_name):
    """timm's downsample of stage i is the official one of stage i - 1; its head.fc is head."""
    match = re.match(r"layers\.(\d+)\.downsample\.(.*)", timm_name)
    if match:
        return f"layers.{int(match.group(1)) - 1}.downsample.{match.group(2)}"
    return re.sub(r"^head\.fc\.", "head.", timm_name)


@pytest.fixture(scope="module")
def models_and_batch():
    torch.manual_seed(0)
    reference = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()
    with torch.no_grad():  # off the init, where biases are 0 and norms 1, so every term counts
        for name, parameter in reference.named_parameters():
            if name.endswith("relative_position_bias_table"):
                parameter.normal_(0.0, 1.0)  # position bias as large as the q.k term
            elif parameter.ndim == 1:
                parameter.add_(0.1 * torch.randn_like(parameter))
    ours = swin_t(drop_path_rate=0.0).eval()
    timm_state = {key: value.detach().numpy() for key, value in reference.state_dict().items()}
    assert load_pretrained(ours, timm_state, strict=True) == ([], [])
    generator = np.random.default_rng(0)
    images = generator.standard_normal((2, 3, 224, 224)).astype(np.float32)
    cotangent = generator.standard_normal((2, 1000)).astype(np.float32)
    return reference, ours, images, cotangent


def test_logits_match_timm(models_and_batch):
    reference, ours, images, _ = models_and_batch
    with torch.no_grad():
        expected = reference(torch.from_numpy(images)).numpy()
    logits = ours(Tensor(images)).numpy()
    difference = np.abs(logits - expected).max()
    print(f"max |logit difference| = {difference:.3g} (logits up to {np.abs(expected).max():.3g})")
    assert difference <= LOGIT_TOLERANCE


def test_gradients_match_timm(models_and_batch):
    reference, ours, images, cotangent = models_and_batch
    reference.zero_grad()
    (reference(torch.from_numpy(images)) * torch.from_numpy(cotangent)).sum().backward()
    expected = {official_name(name): p.grad.numpy() for name, p in reference.named_parameters()}
    ours.zero_grad()
    (ours(Tensor(images)) * Tensor(cotangent)).sum().backward()
    grads = {name: p.grad for name, p in ours.named_parameters()}
    assert grads.keys() == expected.keys()
    worst, worst_absolute = (0.0, None), 0.0
    for name, grad in grads.items():
        assert grad is not None and grad.shape == expected[name].shape, name
        scale = np.abs(expected[name]).max()
        relative = np.abs(grad - expected[name]).max() / max(scale, 1e-30)
        worst = max(worst, (relative, name))
        worst_absolute = max(worst_absolute, np.abs(grad - expected[name]).max() / max(1.0, scale))
        assert relative <= GRADIENT_TOLERANCE, f"{name}: max |difference| is {relative:.3g} of max |grad| {scale:.3g}"
    print(f"worst gradient difference: {worst[0]:.3g} of max |grad| ({worst[1]}); "
          f"max |difference| / max(1, max |grad|) = {worst_absolute:.3g}")


def test_an_official_pth_file_loads_without_torch_to_the_same_weights(models_and_batch, tmp_path):
    # As the official repository saves them: official names under "model", beside other state.
    reference, ours, _, _ = models_and_batch
    official = {official_name(name): value for name, value in reference.state_dict().items()}
    torch.save({"model": official, "epoch": 299, "max_accuracy": 81.2}, tmp_path / "swin_tiny.pth")
    from_file = swin_t(drop_path_rate=0.0)
    assert load_pretrained(from_file, tmp_path / "swin_tiny.pth", strict=True) == ([], [])
    expected = ours.state_dict()
    for key, value in from_file.state_dict().items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


# Small configurations off Swin-T's defaults, each built alike by timm and here: grey images without a
# head (pooled features out), no qkv bias with mlp_ratio 1.3 (hidden widths int(dim * 1.3)), a stage as
# large as the window (one window, unshifted, as timm and the official code set it), batch 1.
SMALL_CONFIGS = {
    "grey, no head": dict(img_size=16, in_chans=1, num_classes=0, window_size=4, batch=2),
    "no qkv bias, mlp_ratio 1.3, window 2": dict(img_size=16, qkv_bias=False, mlp_ratio=1.3, window_size=2,
                                                 batch=2),
    "window 8, last stage one window, batch 1": dict(img_size=32, window_size=8, batch=1),
}


@pytest.mark.parametrize("settings", SMALL_CONFIGS.values(), ids=SMALL_CONFIGS)
def test_small_configurations_match_timm_in_float64(settings):
    """The same weights give the same outputs and gradients as timm's SwinTransformer in float64,
    where only summation order differs: outputs agree to ~1e-15 (4e-16 is seen), checked at 1e-10."""
    config = dict(patch_size=2, embed_dim=8, depths=(2, 2), num_heads=(2, 4), num_classes=5, drop_path_rate=0.0)
    config.update(settings)
    batch = config.pop("batch")
    torch.manual_seed(0)
    reference = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **config).double().eval()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    ours = SwinTransformer(**config).to(dtype="float64").eval()
    assert load_pretrained(ours, {k: v.detach().numpy() for k, v in reference.state_dict().items()}) == ([], [])
    images = np.random.default_rng(1).standard_normal((batch, config.get("in_chans", 3), config["img_size"],
                                                       config["img_size"]))
    expected = reference(torch.from_numpy(images))
    out = ours(Tensor(images))
    assert out.shape == tuple(expected.shape) == (batch, config["num_classes"] or ours.num_features)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-10)
    cotangent = np.random.default_rng(2).standard_normal(out.shape)
    (expected * torch.from_numpy(cotangent)).sum().backward()
    (out * Tensor(cotangent)).sum().backward()
    grads = {official_name(name): p.grad.numpy() for name, p in reference.named_parameters()}
    assert grads.keys() == {name for name, _ in ours.named_parameters()}
    for name, parameter in ours.named_parameters():
        scale = np.abs(grads[name]).max()
        np.testing.assert_allclose(parameter.grad, grads[name], rtol=1e-10, atol=1e-10 * scale, err_msg=name)
