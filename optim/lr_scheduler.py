"""Learning-rate schedules, stepped once per iteration (the Swin recipe), as ``torch.optim.lr_scheduler``.

A schedule sets ``group["lr"]`` of every parameter group from the group's base rate and the
iteration count. Making it sets the rate for iteration 0; ``step()`` after each optimizer step
moves to the next.
"""
from __future__ import annotations

import math
from typing import Any

from optim.optimizer import Optimizer


class LRScheduler:
    def __init__(self, optimizer: Optimizer):
        self.optimizer = optimizer
        self.base_lrs = [group.setdefault("initial_lr", group["lr"]) for group in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def lr_at(self, step: int, base_lr: float) -> float:
        raise NotImplementedError

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def _apply(self) -> None:
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr_at(self.last_step, base_lr)

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = int(state["last_step"])
        self.base_lrs = list(state["base_lrs"])
        self._apply()


class ConstantLR(LRScheduler):
    """The base rate throughout."""

    def lr_at(self, step: int, base_lr: float) -> float:
        return base_lr


class StepLR(LRScheduler):
    """The base rate times ``gamma`` for every ``step_size`` iterations done."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def lr_at(self, step: int, base_lr: float) -> float:
        return base_lr * self.gamma ** (step // self.step_size)


class WarmupCosineLR(LRScheduler):
    """Linear warm-up from ``warmup_lr`` to the base rate over ``warmup_steps``, then a half cosine
    down to ``min_lr`` at ``total_steps`` (and ``min_lr`` after), as Swin's training recipe."""

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, warmup_lr: float = 0.0,
                 min_lr: float = 0.0):
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"need 0 <= warmup_steps <= total_steps, got {warmup_steps} and {total_steps}")
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.warmup_lr, self.min_lr = warmup_lr, min_lr
        super().__init__(optimizer)

    def lr_at(self, step: int, base_lr: float) -> float:
        if step < self.warmup_steps:
            return self.warmup_lr + (base_lr - self.warmup_lr) * step / self.warmup_steps
        decay_steps = self.total_steps - self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / decay_steps) if decay_steps else 1.0
        return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))
