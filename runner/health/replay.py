"""Replay of logged rows (metrics.jsonl or W&B history) through the rules: python -m runner.health RUN_DIR."""
from __future__ import annotations

from typing import Any, Iterable

from runner import keys
from runner.config import MonitorConfig
from runner.health.rules import Rules


def is_check(record: dict[str, Any]) -> bool:
    """A metrics.jsonl / W&B history row holding a log interval's values. W&B merges the epoch-end
    values logged at the same step into the same row, so a row can be both."""
    return "train/loss" in record or "grad/total" in record or "lr" in record


def is_evaluation(record: dict[str, Any]) -> bool:
    return "epoch/val_loss" in record or "epoch/train_loss" in record


# statistics the monitor itself logs at checks and evaluations: inputs to the rules, replayed with the rows
MEASURED = ("health/fixed_std_ratio", "health/nonfinite_steps", "health/param_norm", "health/fixed_input_spread",
            keys.LOSS_MEDIAN)


def replay(records: Iterable[dict[str, Any]], cfg: MonitorConfig | None = None, warmup_steps: int = 0,
           balance: dict | None = None, samples: dict | None = None, summary: dict | None = None) -> Rules:
    """Run the rules over logged rows (metrics.jsonl or W&B history), in order. `summary` (the run's
    summary.json or W&B summary) supplies what the monitor measured once at fit start: class balance and
    split sizes, input statistics, the untrained model's fixed-input spread, the gradient clip and the
    trivial baseline (baseline/*), so that the replay judges with the same inputs as the live monitor."""
    rules = Rules(cfg, warmup_steps)
    summary = summary or {}
    balance = balance or summary.get("health/class_balance")
    samples = samples or summary.get("health/split_samples")
    if balance or summary.get("health/empty_fraction"):
        rules.set_class_balance(balance or {}, samples, summary.get("health/empty_fraction"))
    if summary.get("health/input_stats"):
        rules.set_input_stats(summary["health/input_stats"])
    baseline = {k[len("baseline/"):]: v for k, v in summary.items() if k.startswith("baseline/")
                and isinstance(v, (int, float))}
    if baseline:
        rules.set_baseline(baseline)
    if isinstance(summary.get("health/start_fixed_std_ratio"), (int, float)):
        rules.by_name("collapse").start_fixed = float(summary["health/start_fixed_std_ratio"])
    if isinstance(summary.get("health/grad_clip"), (int, float)):
        rules.set_grad_clip(float(summary["health/grad_clip"]))
    rules.set_grad_scaler(bool(summary.get("health/grad_scaler", False)))
    for r in records:
        step = int(r.get("_step", 0))
        values = {k: v for k, v in r.items() if not k.startswith("_") and not k.startswith("health/") or k in MEASURED}
        if is_check(r):
            rules.check(step, float(r.get("epoch", 0)), values)
        if is_evaluation(r):
            rules.evaluation(step, float(r.get("epoch", 0)), values)
    return rules
