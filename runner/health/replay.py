"""Replay of logged rows (metrics.jsonl or W&B history) through the rules: python -m runner.health RUN_DIR."""
from __future__ import annotations

from typing import Any, Iterable

from runner.config import MonitorConfig
from runner.health.rules import Rules


def is_check(record: dict[str, Any]) -> bool:
    """A metrics.jsonl / W&B history row holding a log interval's values. W&B merges the epoch-end
    values logged at the same step into the same row, so a row can be both."""
    return "train/loss" in record or "grad/total" in record or "lr" in record


def is_evaluation(record: dict[str, Any]) -> bool:
    return "epoch/val_loss" in record or "epoch/train_loss" in record


def replay(records: Iterable[dict[str, Any]], cfg: MonitorConfig | None = None, warmup_steps: int = 0,
           balance: dict | None = None, samples: dict | None = None) -> Rules:
    """Run the rules over logged rows (metrics.jsonl or W&B history), in order."""
    rules = Rules(cfg, warmup_steps)
    if balance:
        rules.set_class_balance(balance, samples)
    for r in records:
        step = int(r.get("_step", 0))
        values = {k: v for k, v in r.items() if not k.startswith("_") and not k.startswith("health/")
                  or k in ("health/fixed_std_ratio", "health/nonfinite_steps")}
        if is_check(r):
            rules.check(step, float(r.get("epoch", 0)), values)
        if is_evaluation(r):
            rules.evaluation(step, float(r.get("epoch", 0)), values)
    return rules

