"""Outcome oracle of the health benchmark: did a run fail, judged from what it produced, not from any rule.

It imports nothing from runner.health and shares no threshold with the monitor (runner/config.py's
MonitorConfig): its own limits are below, chosen as "clearly" by an engineer reading a finished run,
before any run of the suite was looked at. It reads a finished run directory (runner/tracking.py's
files: metrics.jsonl, summary.json with the task's trivial baseline/* measured on the validation
split, by the health monitor at fit start or by runner.train after training) and decides from the final validation outcome:

  worse_than_baseline   the task's primary validation metric (PRIMARY: the error a user reads, or IoU for
                        occupancy) is no better than the trivial baseline's (within BASELINE_MARGIN)
  identical             the final validation predictions do not vary across inputs: their std across
                        the validation set below IDENTICAL x the targets' std (val/pred/std, val/gt/std)
  class_never_predicted a class with validation positives (val/target/<r>_rate > 0) has recall 0
  overfit               final val loss OVERFIT x above its best while train loss fell since that epoch;
                        its onset (evidence "overfit_onset") is the first evaluation after the best one
  nonfinite             the run stopped on non-finite values, or its final losses are not finite

A healthy run beats the baseline by HEALTHY_MARGIN and shows none of these.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

BASELINE_MARGIN = 0.02  # "no better": within 2% of the trivial predictor
HEALTHY_MARGIN = 0.10  # "clearly better": at least 10% better than the trivial predictor
IDENTICAL = 0.02  # prediction std below 2% of the target std: the same output for every input
OVERFIT = 0.25  # final val loss 25% above its best


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def higher_is_better(name: str) -> bool:
    return any(name.endswith(w) for w in ("iou", "recall", "precision", "accuracy", "f1", "dice"))


def read(run_dir: str | Path) -> tuple[list[dict], dict]:
    run_dir = Path(run_dir)
    evals = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "epoch/val_loss" in r or "epoch/train_loss" in r:
            evals.append(r)
    return evals, json.loads((run_dir / "summary.json").read_text())


# The metric a user of each task reads to decide whether the model works (docs/<task>.md), with its
# trivial baseline (summary baseline/<name>). Occupancy is judged by IoU, not by its loss: a composite
# focal + dice + mean-matching loss can sit above the constant predictor's while the model segments.
PRIMARY = {"sequence": "pixel_error", "lanes": "cp_error", "puzzle": "center_error", "occupancy": "iou"}


def primary(summary: dict, last: dict, task: str | None = None) -> tuple[str, float, float] | None:
    """(logged key, final value, baseline value) of the primary metric: the task's (PRIMARY), else the
    baseline's first error, else its loss."""
    name = PRIMARY.get(task or "")
    if name and _finite(last.get(f"val/{name}")) and _finite(summary.get(f"baseline/{name}")):
        return f"val/{name}", float(last[f"val/{name}"]), float(summary[f"baseline/{name}"])
    for k, b in summary.items():
        if not k.startswith("baseline/"):
            continue
        name = k[len("baseline/"):]
        key = "epoch/val_loss" if name == "loss" else f"val/{name}"
        if (name.endswith("_error") or name == "loss") and _finite(last.get(key)) and _finite(b):
            return key, float(last[key]), float(b)
    return None


def task_of(run_dir: str | Path) -> str | None:
    """The run's task, from the config.yaml runner.train writes beside metrics.jsonl."""
    path = Path(run_dir) / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}).get("task") if path.exists() else None


def judge(run_dir: str | Path) -> dict[str, Any]:
    """{failures: [...], healthy: bool, evidence: {...}} for one finished run."""
    evals, summary = read(run_dir)
    out: dict[str, Any] = {"failures": [], "evidence": {}}
    stop = str(summary.get("stop_reason", ""))
    if "non-finite" in stop or "nonfinite" in stop:
        out["failures"].append("nonfinite")
    if not evals:
        out["healthy"] = False
        out["failures"].append("no_evaluation")
        return out
    last = evals[-1]
    if not (_finite(last.get("epoch/val_loss")) and _finite(last.get("epoch/train_loss"))):
        if "nonfinite" not in out["failures"]:
            out["failures"].append("nonfinite")
    p = primary(summary, last, task_of(run_dir))
    better = None
    if p:
        key, v, b = p
        hib = higher_is_better(key)
        scale = abs(b) if b else 1.0  # a baseline of 0 (IoU of the all-empty predictor): the gain is absolute
        gain = (v - b) / scale if hib else (b - v) / scale  # > 0: better than the baseline
        out["evidence"]["primary"] = {"key": key, "value": v, "baseline": b, "gain": gain}
        better = gain
        if gain <= BASELINE_MARGIN:
            out["failures"].append("worse_than_baseline")
    ps, gs = last.get("val/pred/std"), last.get("val/gt/std")
    if _finite(ps) and _finite(gs) and gs > 0:
        out["evidence"]["pred_std_ratio"] = ps / gs
        if ps < IDENTICAL * gs:
            out["failures"].append("identical")
    for k, rate in last.items():
        if k.startswith("val/target/") and k.endswith("_rate") and _finite(rate) and rate > 0:
            r = k[len("val/target/"):-len("_rate")]
            rec = last.get(f"val/{r}_recall")
            if _finite(rec) and rec == 0:
                out["failures"].append(f"class_never_predicted:{r}")
    vals = [e.get("epoch/val_loss") for e in evals]
    trains = [e.get("epoch/train_loss") for e in evals]
    if len(vals) >= 3 and all(_finite(v) for v in vals + trains):
        best = min(range(len(vals)), key=vals.__getitem__)
        if vals[-1] > vals[best] + OVERFIT * abs(vals[best]) and trains[-1] < trains[best]:
            out["failures"].append("overfit")
            # the failure starts after the best epoch: lag is counted from there, not from the first evaluation
            out["evidence"]["overfit_onset"] = {"index": best + 1, "step": evals[best + 1].get("_step")}
    out["healthy"] = not out["failures"] and better is not None and better >= HEALTHY_MARGIN
    return out
