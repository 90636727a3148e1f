"""Parameter groups for weight decay, as the Swin recipe builds them."""
from __future__ import annotations

from typing import Any

from minigrad.nn import Module

NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


def weight_decay_groups(model: Module, weight_decay: float,
                        skip_names: tuple[str, ...] = NO_DECAY_NAMES) -> list[dict[str, Any]]:
    """Two groups: weights that decay, and those that should not: biases and norm scales (every
    1-D parameter) and position tables (names containing one of ``skip_names``)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        skip = parameter.ndim <= 1 or name.endswith(".bias") or any(s in name for s in skip_names)
        (no_decay if skip else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
