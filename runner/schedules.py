"""Learning rate as a pure function of the global step: linear warm-up, then cosine or constant."""
from __future__ import annotations

import math


def lr_at(step: int, *, lr: float, warmup_steps: int, total_steps: int, schedule: str = "cosine",
          min_lr_ratio: float = 0.01) -> float:
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    floor = lr * min_lr_ratio
    return floor + 0.5 * (lr - floor) * (1.0 + math.cos(math.pi * progress))


def make_lr_fn(optim_cfg, total_steps: int):
    def fn(step: int) -> float:
        return lr_at(step, lr=optim_cfg.lr, warmup_steps=optim_cfg.warmup_steps, total_steps=total_steps,
                     schedule=optim_cfg.schedule, min_lr_ratio=optim_cfg.min_lr_ratio)
    return fn
