"""Evidence for the occupancy task (seed 004): loss-term scales, monitor cost, and training runs.

    python bench/occupancy_proof.py terms      # loss terms for trivial predictions, 64^2x16 and 200^2x121
    python bench/occupancy_proof.py cost       # per-step cost of the collapse statistics at the seed's size
    python bench/occupancy_proof.py train      # fixed loss vs the seed's weighted BCE (+ empty labels), CLI runs

`train` runs `python -m runner.train` on configs/occupancy.yaml and configs/occupancy_seed_broken.yaml
(a few CPU minutes each) and prints the last validation figures beside the trivial baselines.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runner.config import build_config  # noqa: E402
from runner.data.synthetic.occupancy import OccupancyDataset, OccupancySpec  # noqa: E402
from runner.health.stats import CollapseStats  # noqa: E402
from runner.losses.seed_broken_occupancy import WeightedBCELoss  # noqa: E402
from runner.losses.occupancy import OccupancyLoss  # noqa: E402
from runner.models.occupancy import BEVOccupancyNet  # noqa: E402
from runner.tasks.base import MonitorView  # noqa: E402
from runner.tasks.occupancy import OccupancyTask  # noqa: E402


def batch_of(grid, n, split="val"):
    ds = OccupancyDataset(OccupancySpec(grid=grid), split, n)
    return default_collate([ds[i] for i in range(n)])


def terms(_args) -> None:
    for grid, n in (((64, 64, 16), 8), ((200, 200, 121), 3)):
        b = batch_of(grid, n)
        t = b["occupancy"].float()
        r = float(t.mean())
        print(f"\ngrid {grid}, batch {n}: {t[0].numel():,} voxels per sample, occupancy {r:.4%}")
        preds = {
            "p=0.5 (logit 0, the seed's start)": torch.zeros_like(t),
            f"mean predictor p={r:.4f}": torch.full_like(t, math.log(r / (1 - r))),
            "all-zero, logit -5 (p=0.0067)": torch.full_like(t, -5.0),
            "all-zero, logit -10 (p=4.5e-5)": torch.full_like(t, -10.0),
            "perfect, logits +-10": (2 * t - 1) * 10,
        }
        fixed, fixed_pos, bce = OccupancyLoss(), OccupancyLoss(focal_norm="positives"), WeightedBCELoss(10.0)
        print(f"  {'prediction':<34} {'focal':>9} {'dice':>7} {'mean':>9} {'10*mean':>9} {'total':>7} "
              f"{'focal/pos':>9} {'wBCE':>7}")
        for name, logits in preds.items():
            o = {"logits": logits}
            f, fp, w = fixed(o, b), fixed_pos(o, b), bce(o, b)
            print(f"  {name:<34} {float(f['loss_focal']):9.2e} {float(f['loss_dice']):7.4f} "
                  f"{float(f['loss_mean']):9.2e} {float(f['weighted/loss_mean']):9.2e} {float(f['loss']):7.4f} "
                  f"{float(fp['loss_focal']):9.3f} {float(w['loss']):7.4f}")
        # the constant prediction that minimises weighted BCE, found numerically
        x = torch.zeros((), requires_grad=True)
        opt = torch.optim.LBFGS([x], max_iter=100)

        def closure():
            opt.zero_grad()
            loss = bce({"logits": x.expand_as(t)}, b)["loss"]
            loss.backward()
            return loss

        opt.step(closure)
        p = float(torch.sigmoid(x.detach()))
        print(f"  weighted BCE (pos_weight 10): best constant p = {p:.4f} (analytic 10r/(1+9r) = "
              f"{10 * r / (1 + 9 * r):.4f}) = {p / r:.1f} x the occupancy rate, loss "
              f"{float(bce({'logits': x.detach().expand_as(t)}, b)['loss']):.4f}")


def cost(_args) -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    b = batch_of((200, 200, 121), 3, "train")
    task = OccupancyTask(build_config({"task": "occupancy", "data": {"grid": [200, 200, 121]}}))
    model, crit = BEVOccupancyNet(2, 121, 64), OccupancyLoss()

    def full_view(out, batch):
        probs, target = torch.sigmoid(out["logits"].float()), batch["occupancy"].float()
        return MonitorView(probs.flatten(1), target.flatten(1), {"occupancy": (probs, target)})

    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    print(f"model width 64: {sum(p.numel() for p in model.parameters()):,} parameters")
    for step in range(2):
        t0 = time.perf_counter()
        out = model(b["bev"])
        loss = crit(out, b)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        t_step = time.perf_counter() - t0
        timings = {}
        for name, view_fn in (("task.monitor_view (subsampled pred/target)", task.monitor_view),
                              ("every voxel in pred/target", full_view)):
            stats = CollapseStats()
            t1 = time.perf_counter()
            with torch.no_grad():
                for _ in range(3):
                    stats.update(view_fn(out, b))
            timings[name] = (time.perf_counter() - t1) / 3
        print(f"step {step}: forward+backward+step {t_step:.2f} s (CPU, batch 3, 200x200x121); monitor view + "
              "CollapseStats.update: " + ", ".join(f"{k} {v:.3f} s = {v / t_step:.1%}" for k, v in timings.items()))


def last(path: Path, key: str):
    value = None
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if key in rec:
            value = rec[key]
    return value


def run_cli(config: str, out: Path, *overrides: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "runner.train", "--config", config, "--no-progress",
                    f"--out_dir={out}", *overrides], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    (run,) = set(out.iterdir()) - before
    print(f"  {config} {' '.join(overrides)}: {time.time() - t0:.0f} s wall")
    return run


def train(args) -> None:
    out = Path(args.out)
    arms = [("fixed loss (configs/occupancy.yaml)", "configs/occupancy.yaml", []),
            ("seed's weighted BCE (configs/occupancy_seed_broken.yaml)", "configs/occupancy_seed_broken.yaml", []),
            ("seed's weighted BCE + 95% empty labels", "configs/occupancy_seed_broken.yaml",
             ["--data.empty_label_fraction=0.95"])]
    if args.quick:
        arms = arms[:2]
    rows = []
    for name, config, extra in arms:
        run = run_cli(config, out, *extra, *args.overrides)
        m, s = run / "metrics.jsonl", json.loads((run / "summary.json").read_text())
        rows.append((name, {k: last(m, k) for k in (
            "val/iou", "val/precision", "val/recall", "val/pred/mean", "val/pred/max", "val/target/occupancy_rate",
            "val/pred/occupancy_rate", "pred/mean", "target/occupancy_rate", "train/loss")}, s, run))
    print("\nlast validation epoch (train/* and pred/* = last logging interval):")
    for name, v, s, run in rows:
        print(f"\n{name}\n  run {run}")
        print("  val: iou {val/iou:.3f}  precision {p}  recall {val/recall:.3f}".format(
            p="n/a" if v["val/precision"] is None else f"{v['val/precision']:.3f}", **v))
        print("  val: pred/mean {val/pred/mean:.5f}  pred/max {val/pred/max:.3f}  pred/occupancy_rate "
              "{val/pred/occupancy_rate:.5f}  target/occupancy_rate {val/target/occupancy_rate:.5f}  "
              "(pred/mean / target rate = {ratio:.1f})".format(
                  ratio=v["val/pred/mean"] / max(v["val/target/occupancy_rate"], 1e-12), **v))
        print(f"  train: loss {v['train/loss']:.4f}  pred/mean {v['pred/mean']:.5f}  "
              f"target/occupancy_rate {v['target/occupancy_rate']:.5f}")
        print("  baselines: mean predictor iou {baseline/iou:.3f} recall {baseline/recall:.3f} val loss "
              "{baseline/loss:.4f}; all-occupied iou {baseline/all_occupied_iou:.4f}; extrude rule iou "
              "{baseline/extrude_iou:.3f} precision {baseline/extrude_precision:.3f} recall "
              "{baseline/extrude_recall:.3f}".format(**s))


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("terms")
    sub.add_parser("cost")
    t = sub.add_parser("train")
    t.add_argument("--out", default="/tmp/occupancy-proof-runs")
    t.add_argument("--quick", action="store_true", help="only the fixed loss and the seed's weighted BCE")
    t.add_argument("overrides", nargs="*", help="extra --a.b=v overrides for every run")
    args = p.parse_args()
    {"terms": terms, "cost": cost, "train": train}[args.cmd](args)


if __name__ == "__main__":
    main()
