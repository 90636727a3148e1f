"""Loading official and timm Swin checkpoints into ``SwinTransformer``.

The official checkpoints (microsoft/Swin-Transformer) use our parameter names. timm's differ in
two places: its ``layers.{i}.downsample`` sits at the start of stage i (ours, the official, at the
end of stage i - 1), and its classifier is ``head.fc``. Buffers derived from the configuration
(``relative_position_index``, ``attn_mask``) are rebuilt, not loaded. A bias table trained for
another window size is resized bicubically, as the official code does to fine-tune at 384 px.
A checkpoint of another variant (Swin-S weights for a Swin-T), of Swin V2 or of another model
altogether is named as such, rather than by the hundreds of keys that do not match.
"""
from __future__ import annotations

import math
import os
import re
from typing import Any, Mapping

from minigrad import backend
from minigrad.nn import init
from minigrad.nn.module import IncompatibleKeys
from minigrad.serialization import load_arrays
from swin.model import SwinTransformer
from swin.variants import VARIANTS

_DERIVED_BUFFERS = ("relative_position_index", "attn_mask")
_HEAD_KEYS = ("head.weight", "head.bias")


def from_timm_keys(state: Mapping[str, Any]) -> dict[str, Any]:
    """Rename a timm state dict to the official layout."""
    renamed = {}
    for key, value in state.items():
        key = re.sub(r"^head\.fc\.", "head.", key)
        match = re.match(r"^layers\.(\d+)\.downsample\.(.*)$", key)
        if match:
            key = f"layers.{int(match.group(1)) - 1}.downsample.{match.group(2)}"
        renamed[key] = value
    return renamed


def _is_timm_layout(state: Mapping[str, Any]) -> bool:
    return any(key.startswith("head.fc.") for key in state) or (
        any(key.startswith("layers.1.downsample.") for key in state)
        and not any(key.startswith("layers.0.downsample.") for key in state))


def _checkpoint_architecture(state: Mapping[str, Any]) -> tuple[int, tuple[int, ...]] | None:
    """The embed_dim and depths of a checkpoint in the official layout, read from its keys and
    shapes (a block missing a key still counts); None where it holds no Swin blocks."""
    depths = []
    while blocks := {int(match.group(1)) for key in state
                     if (match := re.match(rf"layers\.{len(depths)}\.blocks\.(\d+)\.", key))}:
        depths.append(max(blocks) + 1)
    if not depths or "patch_embed.proj.weight" not in state:
        return None
    return state["patch_embed.proj.weight"].shape[0], tuple(depths)


def _architecture_name(embed_dim: int, depths: tuple[int, ...]) -> str:
    """E.g. 'swin_s (embed_dim 96, depths (2, 2, 18, 2))'; the variant's name where one matches."""
    names = [name for name, settings in VARIANTS.items()
             if settings["embed_dim"] == embed_dim and tuple(settings["depths"]) == depths]
    settings = f"embed_dim {embed_dim}, depths {depths}"
    return f"{names[0]} ({settings})" if names else f"a Swin with {settings}"


def _check_architecture(state: Mapping[str, Any], model: SwinTransformer) -> None:
    """Name what the checkpoint holds when it is not this model's architecture."""
    if any(key.endswith(("logit_scale", "cpb_mlp.0.weight")) for key in state):
        raise ValueError("the checkpoint is of a Swin Transformer V2 (it has logit_scale and cpb_mlp weights); "
                         "this model is Swin V1: take V1 weights, e.g. swin_tiny_patch4_window7_224")
    found = _checkpoint_architecture(state)
    if found is None:
        raise ValueError(f"the checkpoint holds no Swin weights (no patch_embed.proj and layers.0.blocks.* keys); "
                         f"its keys begin {_some(sorted(state), 5)}")
    expected = (model.patch_embed.embed_dim, model.depths)
    if found != expected:
        key = "patch_embed.proj.weight"  # where a width shows first
        shapes = (f" ({key}: the checkpoint has shape {tuple(state[key].shape)}, the model "
                  f"{tuple(model.patch_embed.proj.weight.shape)})" if found[0] != expected[0] else "")
        raise ValueError(f"the checkpoint holds {_architecture_name(*found)}, the model is "
                         f"{_architecture_name(*expected)}{shapes}: build the checkpoint's variant (--model in the "
                         f"training scripts) to load it")


def _some(keys: list[str], count: int = 8) -> str:
    """At most ``count`` keys, and how many more: a list of 150 keys says less than its length."""
    shown = ", ".join(keys[:count])
    return shown + (f", ... and {len(keys) - count} more" if len(keys) > count else "")


def _cubic_weights_matrix(size_in: int, size_out: int):
    """The (size_out, size_in) matrix of bicubic interpolation as ``torch.nn.functional.interpolate``
    computes it (mode 'bicubic', align_corners=False, a = -0.75, edges clamped)."""
    xp = backend.array_module_for("cpu")
    a = -0.75

    def near(t):  # |t| <= 1
        return ((a + 2) * t - (a + 3)) * t * t + 1

    def far(t):  # 1 < |t| < 2
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a

    matrix = xp.zeros((size_out, size_in))
    scale = size_in / size_out
    for out in range(size_out):
        source = scale * (out + 0.5) - 0.5
        left = math.floor(source)
        t = source - left
        for offset, weight in zip((-1, 0, 1, 2), (far(t + 1), near(t), near(1 - t), far(2 - t))):
            matrix[out, min(max(left + offset, 0), size_in - 1)] += weight
    return matrix


def resize_bias_table(table: Any, window_size: int) -> Any:
    """Resize a relative position bias table ``((2M - 1)^2, heads)`` to the table of another
    window size by bicubic interpolation over its (2M - 1) x (2M - 1) grid of offsets."""
    xp = backend.array_module_for("cpu")
    rows, heads = table.shape
    side_in, side_out = round(rows**0.5), 2 * window_size - 1
    if side_in * side_in != rows:
        raise ValueError(f"a bias table has a square number of rows, not {rows}")
    weights = _cubic_weights_matrix(side_in, side_out)
    grid = xp.asarray(table, dtype=xp.float64).T.reshape(heads, side_in, side_in)
    resized = weights @ grid @ weights.T
    return resized.reshape(heads, side_out * side_out).T.astype(table.dtype)


def load_pretrained(model: SwinTransformer, source: str | os.PathLike | Mapping[str, Any],
                    strict: bool = True) -> IncompatibleKeys:
    """Load official or timm weights from a file (``.npz``, ``.safetensors``, ``.pth``) or a mapping.

    When the checkpoint's classifier does not fit the model (another number of classes, or a head
    on one side only, as in a backbone-only checkpoint), it is left out and the model's head is
    zeroed, as the official fine-tuning code does.
    Bias tables of another window size are resized. Other shape differences raise an error
    naming the key and both shapes; with ``strict``, so do missing or unexpected keys, and a
    checkpoint of another architecture (variant, Swin V2, not a Swin) is named as such.
    """
    raw = load_arrays(source) if isinstance(source, (str, os.PathLike)) else source
    state = {key: _host_array(value) for key, value in raw.items()}
    if _is_timm_layout(state):
        state = from_timm_keys(state)
    state = {key: value for key, value in state.items() if key.rsplit(".", 1)[-1] not in _DERIVED_BUFFERS}
    if strict:
        _check_architecture(state, model)
    model_state = dict(model.named_parameters())
    for key, value in state.items():
        if key.endswith("relative_position_bias_table") and key in model_state \
                and value.shape != model_state[key].shape:
            window = round(((model_state[key].shape[0]) ** 0.5 + 1) / 2)
            state[key] = resize_bias_table(value, window)
    model_head = {key: model_state[key].shape for key in _HEAD_KEYS if key in model_state}
    head_fits = model_head == {key: state[key].shape for key in _HEAD_KEYS if key in state}
    if not head_fits:
        state = {key: value for key, value in state.items() if key not in _HEAD_KEYS}
        for key in _HEAD_KEYS:
            if key in model_state:
                init.zeros_(model_state[key])
    result = model.load_state_dict(state, strict=False)
    missing = [key for key in result.missing_keys if head_fits or key not in _HEAD_KEYS]
    if strict and (missing or result.unexpected_keys):
        raise RuntimeError("load_pretrained(strict=True): the checkpoint does not match the model.\n"
                           f"  missing from the checkpoint: {_some(missing) or 'none'}\n"
                           f"  unexpected in the checkpoint: {_some(result.unexpected_keys) or 'none'}\n"
                           "Check the variant (swin_t/s/b/l) and its settings, or pass strict=False.")
    return IncompatibleKeys(missing, result.unexpected_keys)


def _host_array(value: Any) -> Any:
    """A host array from a NumPy/CuPy array or a torch tensor (without importing torch)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return backend.asnumpy(value)
