"""Proof for the puzzle task (seed 002), run through the real CLI with offline W&B:

  1. configs/puzzle.yaml learns: val centre error / IoU / rotation accuracy per epoch against the
     mean-predictor baseline;
  2. configs/puzzle_seed_broken.yaml reproduces the seed's symptom: train/position_loss pinned
     near 1 and/or predictions collapsed (pred/std_ratio far below 1).

    OMP_NUM_THREADS=1 python bench/puzzle_proof.py [--out /tmp/puzzle-proof] [--epochs 3] [--only fixed|broken]

Extra `--a.b=v` arguments are passed to both runs. Takes minutes on a CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(config: str, out: Path, extra: list[str]) -> tuple[Path, float]:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "runner.train", "--config", str(ROOT / "configs" / config), "--wandb",
           "--no-progress", f"--out_dir={out}", *extra]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{config} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    run = sorted(out.glob("puzzle-*"))[-1]
    return run, time.perf_counter() - t0


def read(run: Path) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return rows, json.loads((run / "summary.json").read_text())


def fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else str(v)


def report_fixed(run: Path, seconds: float) -> None:
    rows, summary = read(run)
    print(f"\n== configs/puzzle.yaml ({seconds:.0f} s wall, run {run})")
    keys = ["val/center_error", "val/iou", "val/found_rate", "val/rotation_accuracy", "val/pred/std_ratio",
            "val/position_loss", "val/rotation_loss"]
    print("epoch  step  " + "  ".join(k[4:] for k in keys))
    for r in rows:
        if "epoch/val_loss" in r:
            print(f"{r['epoch']:>5} {r['_step']:>5}  " + "  ".join(fmt(r.get(k)) for k in keys))
    base = {k: summary.get(f"baseline/{k}") for k in ("center_error", "iou", "found_rate", "rotation_accuracy")}
    print("mean-predictor baseline: " + ", ".join(f"{k}={fmt(v)}" for k, v in base.items()))


def report_broken(run: Path, seconds: float) -> None:
    rows, summary = read(run)
    print(f"\n== configs/puzzle_seed_broken.yaml ({seconds:.0f} s wall, run {run})")
    print(" step  train/position_loss  train/rotation_loss  pred/mean  pred/std  gt/std  pred/std_ratio  train/iou")
    for r in rows:
        if "train/position_loss" in r:
            print(f"{r['_step']:>5}  {r['train/position_loss']:>18.4f}  {r['train/rotation_loss']:>19.4f}  "
                  f"{r['pred/mean']:>9.4f}  {r['pred/std']:>8.4f}  {r['gt/std']:>6.3f}  {r['pred/std_ratio']:>14.4f}"
                  f"  {r['train/iou']:>9.4f}")
    for r in rows:
        if "epoch/val_loss" in r:
            print(f"epoch {r['epoch']}: val/position_loss={fmt(r.get('val/position_loss'))} "
                  f"val/center_error={fmt(r.get('val/center_error'))} val/pred/std_ratio={fmt(r.get('val/pred/std_ratio'))}")
    print(f"mean-predictor baseline centre error: {fmt(summary.get('baseline/center_error'))}")


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False)
    p.add_argument("--out", default="/tmp/puzzle-proof")
    p.add_argument("--only", choices=["fixed", "broken"])
    args, extra = p.parse_known_args()
    out = Path(args.out)
    if args.only in (None, "fixed"):
        report_fixed(*train("puzzle.yaml", out / "fixed", extra))
    if args.only in (None, "broken"):
        report_broken(*train("puzzle_seed_broken.yaml", out / "broken", extra))


if __name__ == "__main__":
    main()
