"""Learning-rate schedules with warmup, stepped once per iteration."""
from __future__ import annotations

import bisect
import math
from typing import List, Sequence

import torch


def warmup_factor(it: int, warmup_iters: int, warmup_factor: float, method: str) -> float:
    """Multiplier during warmup: ``constant`` keeps ``warmup_factor``, ``linear`` ramps it to 1."""
    if it >= warmup_iters:
        return 1.0
    if method == "constant":
        return warmup_factor
    if method == "linear":
        alpha = it / warmup_iters
        return warmup_factor * (1 - alpha) + alpha
    raise ValueError(f"unknown warmup method '{method}': use 'linear' or 'constant'")


class WarmupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    """Warmup, then multiply by ``gamma`` at each of ``milestones`` (iterations).

    Args:
        optimizer: the optimizer.
        milestones: increasing iterations.
        gamma: decay factor.
        warmup_factor, warmup_iters, warmup_method: the warmup.
    """

    def __init__(self, optimizer, milestones: Sequence[int], gamma: float = 0.1,
                 warmup_factor: float = 1.0 / 3, warmup_iters: int = 500, warmup_method: str = "linear",
                 last_epoch: int = -1) -> None:
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing, got {milestones}")
        self.milestones = list(milestones)
        self.gamma = gamma
        self.warmup = (warmup_factor, warmup_iters, warmup_method)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        f, n, m = self.warmup
        w = warmup_factor(self.last_epoch, n, f, m)
        decay = self.gamma ** bisect.bisect_right(self.milestones, self.last_epoch)
        return [base * w * decay for base in self.base_lrs]


class WarmupCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """Warmup, then half-cosine from the base lr to ``end_factor`` times it at ``max_iters``."""

    def __init__(self, optimizer, max_iters: int, end_factor: float = 0.0, warmup_factor: float = 1.0 / 3,
                 warmup_iters: int = 500, warmup_method: str = "linear", last_epoch: int = -1) -> None:
        self.max_iters = max_iters
        self.end_factor = end_factor
        self.warmup = (warmup_factor, warmup_iters, warmup_method)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        f, n, m = self.warmup
        w = warmup_factor(self.last_epoch, n, f, m)
        t = min(self.last_epoch, self.max_iters) / max(1, self.max_iters)
        cos = self.end_factor + (1 - self.end_factor) * 0.5 * (1 + math.cos(math.pi * t))
        return [base * w * cos for base in self.base_lrs]
