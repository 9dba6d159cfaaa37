"""Print a checkpoint's predictions beside the truth for a few samples, and how much they differ.

    python -m runner.predict --checkpoint runs/<run>/checkpoints/best.pt --n 8 [--split val] [--data.root=...]

For lanes this is the seed's inference printout (`Lane 1: P0=(x, y) -> P5=(x, y)` per sample);
other tasks print their monitored prediction and target vectors. The last line measures the
spread of the predictions across the samples against the spread of the truth (pred/std_ratio):
seed 000's collapsed model gave every image the same lanes, which shows here as a ratio near 0.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from torch.utils.data import default_collate

from runner import checkpoint as ckpt
from runner.config import build_config, parse_overrides
from runner.errors import UserError, exit_on_user_error
from runner.health.stats import CollapseStats
from runner.tasks import build_task
from runner.tasks.base import MonitorView

COLLAPSED = 0.1  # pred/std_ratio below this: predictions nearly identical across samples
NARROW = 0.5  # below this: much less varied than the truth


def spread_line(pred: torch.Tensor, target: torch.Tensor) -> str:
    """One line comparing the across-sample spread of predictions [N, D] and targets [N, D]."""
    stats = CollapseStats()
    stats.update(MonitorView(pred=pred, target=target))
    t = {k: float(v) for k, v in stats.tensors().items()}
    n = pred.shape[0]
    gap = float(torch.cdist(pred.float(), pred.float(), p=float("inf")).max()) if n > 1 else 0.0
    ratio = t.get("pred/std_ratio", float("nan"))
    if n < 2:
        verdict = "need at least 2 samples to compare"
    elif ratio < COLLAPSED:
        verdict = "predictions are nearly IDENTICAL across samples while the truth varies: collapse"
    elif ratio < NARROW:
        verdict = "predictions vary much less than the truth (partial collapse)"
    else:
        verdict = "predictions vary across samples about as much as the truth"
    return (f"spread across {n} samples: pred std {t.get('pred/std', 0):.4f} vs true std {t.get('gt/std', 0):.4f} "
            f"(pred/std_ratio {ratio:.3f}); largest difference between two samples' predictions {gap:.4f}"
            f" -> {verdict}")


def rate_line(name: str, prob: torch.Tensor, pos: torch.Tensor) -> str:
    """How much a predicted probability (e.g. lane existence) varies across samples vs its target."""
    p, t = prob.float().reshape(prob.shape[0], -1), pos.float().reshape(pos.shape[0], -1)
    ps = float(p.std(0, unbiased=False).mean()) if p.shape[0] > 1 else 0.0
    ts = float(t.std(0, unbiased=False).mean()) if t.shape[0] > 1 else 0.0
    return (f"{name}: predicted probability std across samples {ps:.4f} vs target {ts:.4f}; "
            f"mean {float(p.mean()):.3f} vs target rate {float(t.mean()):.3f}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runner.predict", allow_abbrev=False,
                                description="Print predictions beside the truth; config keys can be "
                                            "overridden as --section.key=value (e.g. --data.root=...).")
    p.add_argument("--checkpoint", required=True, help="a runner checkpoint (.pt)")
    p.add_argument("--n", type=int, default=8, help="number of samples, spread evenly over the split")
    p.add_argument("--split", default="val", choices=["train", "val"])
    p.add_argument("--device", default="cpu")
    return p


def _vec(v: torch.Tensor, k: int = 8) -> str:
    return "[" + ", ".join(f"{x:.3f}" for x in v[:k].tolist()) + (" ..." if len(v) > k else "") + "]"


@torch.no_grad()
def predict(checkpoint: str, n: int = 8, split: str = "val", device: str = "cpu",
            overrides: dict | None = None) -> list[str]:
    """The printed lines (also returned, for tests)."""
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    state = ckpt.load(checkpoint)
    if not isinstance(state.get("config"), dict):
        raise UserError(f"checkpoint {checkpoint!r} holds no config")
    cfg = build_config(state["config"], overrides)
    task = build_task(cfg)
    model = task.model()
    ckpt.load_model_state(model, state["model"], checkpoint)
    model.to(device).eval()
    ds = task.dataset(split)
    idx = np.unique(np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int))
    batch = default_collate([ds[int(i)] for i in idx])
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    outputs = task.forward(model, batch)
    batch = {k: v.cpu() if torch.is_tensor(v) else v for k, v in batch.items()}
    outputs = {k: v.float().cpu() if torch.is_tensor(v) else v for k, v in outputs.items()}
    view = task.monitor_view(outputs, batch)
    lines = [f"checkpoint {checkpoint}: task {cfg.task}, epoch {state.get('epoch')}, step {state.get('step')}; "
             f"{len(idx)} {split} samples"]
    for row, i in enumerate(idx):
        lines.append(f"Sample {i}:")
        if hasattr(task, "format_prediction"):
            lines.extend(task.format_prediction(batch, outputs, row))
        elif view.pred.shape[0] == len(idx):  # one monitored row per sample: print it
            lines.append(f"  pred {_vec(view.pred[row])} | true {_vec(view.target[row])}")
    lines.append(spread_line(view.pred, view.target))
    for name, (prob, pos) in view.rates.items():
        lines.append(rate_line(name, prob, pos))
    return lines


def main(argv: list[str] | None = None) -> int:
    with exit_on_user_error("runner.predict"):
        args, rest = build_parser().parse_known_args(argv)
        for line in predict(args.checkpoint, args.n, args.split, args.device, parse_overrides(rest)):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
