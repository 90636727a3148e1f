"""The Swin variants of the paper (Table 1 / Sec. 3.3), plus a small one for laptops.

Each constructor takes keyword arguments that override any setting, e.g.
``swin_t(num_classes=11, drop_path_rate=0.0)``. The window is 7 at 224 px and 12 at 384 px unless
``window_size`` is given. Drop-path rates are those of the official ImageNet-1K training configs.
"""
from __future__ import annotations

from typing import Any

from swin.model import SwinTransformer

VARIANTS: dict[str, dict[str, Any]] = {
    "swin_t": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2),
    "swin_s": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3),
    "swin_b": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5),
    "swin_l": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), drop_path_rate=0.2),
    # Small enough to train in minutes on a laptop CPU: 64 px images, 4x4 windows, 4 stages of
    # resolution 16, 8, 4, 2 (the last one a single window).
    "swin_mini": dict(img_size=64, embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                      window_size=4, drop_path_rate=0.1),
}


def settings_of(name: str, **overrides: Any) -> dict[str, Any]:
    """The settings ``build(name, **overrides)`` passes to ``SwinTransformer``: the variant's own,
    ``overrides`` applied, and the window the variant's images need (7, or 12 at 384 px) unless
    one is given."""
    if name not in VARIANTS:
        raise ValueError(f"unknown Swin variant {name!r}; choose one of {sorted(VARIANTS)}")
    settings = {**VARIANTS[name], **overrides}
    if "window_size" not in settings:
        settings["window_size"] = 12 if settings.get("img_size", 224) == 384 else 7
    return settings


def build(name: str, **overrides: Any) -> SwinTransformer:
    """Build the variant ``name`` with ``overrides`` applied."""
    return SwinTransformer(**settings_of(name, **overrides))


def swin_t(**overrides: Any) -> SwinTransformer:
    """Swin-T: C = 96, depths (2, 2, 6, 2); 28.3 M parameters, 4.5 G multiply-adds at 224 px."""
    return build("swin_t", **overrides)


def swin_s(**overrides: Any) -> SwinTransformer:
    """Swin-S: C = 96, depths (2, 2, 18, 2); 49.6 M parameters."""
    return build("swin_s", **overrides)


def swin_b(**overrides: Any) -> SwinTransformer:
    """Swin-B: C = 128, depths (2, 2, 18, 2); 87.8 M parameters."""
    return build("swin_b", **overrides)


def swin_l(**overrides: Any) -> SwinTransformer:
    """Swin-L: C = 192, depths (2, 2, 18, 2); 196.5 M parameters."""
    return build("swin_l", **overrides)


def swin_mini(**overrides: Any) -> SwinTransformer:
    """A laptop-sized Swin for 64 px images (C = 32, depths (2, 2, 2, 2), window 4)."""
    return build("swin_mini", **overrides)
