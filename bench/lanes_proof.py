"""Proof for the lanes task (seeds 000, 001), through the real CLI with offline W&B:

1. configs/lanes.yaml (fixed BezierLaneLoss) learns: val/point_error far below the mean predictor.
2. configs/lanes_seed_broken.yaml (the seed's learnable uncertainty weights) reproduces the seed:
   a negative loss AND one set of lanes for every image (pred/std_ratio far below 1).
3. The same broken settings with the fixed loss (--loss.kind=fixed), so the collapse can be
   blamed on the loss and not on the settings; and with the safe learnable variant.

    OMP_NUM_THREADS=1 python bench/lanes_proof.py [--out /tmp/lanes-proof] [--only fixed,broken,...]

Takes several CPU minutes per run. Prints one table and each run's `runner.predict` spread line.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = {
    "fixed": ["--config", "configs/lanes.yaml"],
    "broken": ["--config", "configs/lanes_seed_broken.yaml"],
    "broken_settings_fixed_loss": ["--config", "configs/lanes_seed_broken.yaml", "--loss.kind=fixed"],
    "broken_settings_safe_loss": ["--config", "configs/lanes_seed_broken.yaml", "--loss.kind=uncertainty_safe"],
}


def cli(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True)


def summarize(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if "epoch/val_loss" in r]
    steps = [r for r in rows if "train/loss" in r]
    last = epochs[-1]
    summary = json.loads((run_dir / "summary.json").read_text())
    out = {
        "epochs": len(epochs),
        "min_train_loss": min(r["train/loss"] for r in steps),
        "final_val_loss": last["epoch/val_loss"],
        "val_point_error": last.get("val/point_error"),
        "baseline_point_error": summary.get("baseline/point_error"),
        "val_std_ratio": last.get("val/pred/std_ratio"),
        "val_exist_recall": last.get("val/exist_recall"),
        "val_exist_precision": last.get("val/exist_precision"),
        "val_loss_exist": last.get("val/loss_exist"),
        "val_loss_curv": last.get("val/loss_curv"),
    }
    for k in ("loss/sigma_reg", "loss/sigma_exist", "loss/sigma_curv"):
        if k in steps[-1]:
            out[k.replace("loss/", "")] = steps[-1][k]
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="/tmp/lanes-proof")
    p.add_argument("--only", default=",".join(RUNS))
    args = p.parse_args()
    results, spreads = {}, {}
    for name in args.only.split(","):
        out = Path(args.out) / name
        proc = cli("runner.train", *RUNS[name], "--wandb", "--no-progress", f"--out_dir={out}")
        if proc.returncode != 0:
            print(f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
            return 1
        run_dir = sorted(out.glob("lanes-*"))[-1]
        results[name] = summarize(run_dir)
        pred = cli("runner.predict", "--checkpoint", str(run_dir / "checkpoints" / "latest.pt"), "--n", "8")
        lines = pred.stdout.strip().splitlines()
        spreads[name] = lines
        print(f"--- {name}: {run_dir}", flush=True)
        print("\n".join(lines[1:4] + ["  ..."] + lines[-2:]), flush=True)
    keys = sorted({k for r in results.values() for k in r}, key=lambda k: list(next(iter(results.values()))).index(k)
                  if k in next(iter(results.values())) else 99)
    print("\n" + "metric".ljust(24) + "".join(n[:28].rjust(30) for n in results))
    for k in keys:
        vals = [results[n].get(k) for n in results]
        print(k.ljust(24) + "".join((f"{v:.4g}" if isinstance(v, (int, float)) else "-").rjust(30) for v in vals))
    verdicts = []
    if "fixed" in results:
        r = results["fixed"]
        ok = r["val_point_error"] < 0.5 * r["baseline_point_error"] and r["min_train_loss"] >= 0
        verdicts.append(f"fixed loss learns (point error {r['val_point_error']:.2f} px vs mean predictor "
                        f"{r['baseline_point_error']:.2f} px, loss never negative): {'YES' if ok else 'NO'}")
    if "broken" in results:
        r = results["broken"]
        neg, col = r["min_train_loss"] < 0, r["val_std_ratio"] < 0.2
        verdicts.append(f"seed loss goes negative (min train/loss {r['min_train_loss']:.3f}): {'YES' if neg else 'NO'}; "
                        f"predictions collapse (val pred/std_ratio {r['val_std_ratio']:.3f} < 0.2): "
                        f"{'YES' if col else 'NO'}")
    print("\n" + "\n".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
