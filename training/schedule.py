"""Learning-rate schedules as pure functions of the iteration, so a resumed run needs only the step count."""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("paper", "step", "cosine", "onecycle")


@dataclass(frozen=True)
class LRSchedule:
    """lr at iteration ``step`` (0-based) of ``total_steps``.

    * ``paper``: /10 at 50% and 75% of training (CIFAR: 32k and 48k of 64k iterations, section 4.2).
    * ``step``: x ``gamma`` every ``step_size_steps`` iterations (ImageNet: /10 every 30 epochs).
    * ``cosine``: cosine decay to 0.
    * ``onecycle``: linear ramp to the peak over 30% of training, then cosine down to lr / 1e4.

    Warm-up (``warmup_steps`` > 0) overrides the first iterations: ``constant`` holds ``warmup_lr``
    (the paper's ResNet-110 trick: 0.01 for 400 iterations), ``linear`` ramps from ``warmup_lr`` to ``lr``.
    """

    name: str
    lr: float
    total_steps: int
    step_size_steps: int = 0
    gamma: float = 0.1
    warmup_steps: int = 0
    warmup_lr: float = 0.0
    warmup_mode: str = "constant"

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown lr schedule {self.name!r}; choose one of {SCHEDULES}")
        if self.name == "step" and self.step_size_steps <= 0:
            raise ValueError("the step schedule needs a positive step size")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            if self.warmup_mode == "linear":
                return self.warmup_lr + (self.lr - self.warmup_lr) * step / self.warmup_steps
            return self.warmup_lr
        progress = min(step / max(self.total_steps, 1), 1.0)
        if self.name == "paper":
            return self.lr * (0.1 ** ((progress >= 0.5) + (progress >= 0.75)))
        if self.name == "step":
            return self.lr * self.gamma ** (step // self.step_size_steps)
        if self.name == "cosine":
            return 0.5 * self.lr * (1 + math.cos(math.pi * progress))
        peak_at = 0.3
        if progress < peak_at:
            start = self.lr / 25
            return start + (self.lr - start) * progress / peak_at
        rest = (progress - peak_at) / (1 - peak_at)
        floor = self.lr / 1e4
        return floor + 0.5 * (self.lr - floor) * (1 + math.cos(math.pi * rest))
