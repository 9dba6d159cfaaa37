"""Check a task's data before training: does it feed every head?

    python -m runner.check_data --config configs/sequential_attention.yaml [--max-samples 1000] [--strict] [--a.b=v ...]

Per split: the sample count; for every binary target the class balance (a per-sample flag such as
done, as the seed's check_done_balance script) or, for a binary grid, the positive rate and the
samples with no positive at all (as the seed's occupancy verify script); for every small float
target its spread (std per dimension); integer fields as counts; plus whatever the task measures
itself (Task.describe_data). Warnings name the head the data will starve and a fix. Samples are
taken evenly across each split (at most --max-samples). Exit 0, or 1 with --strict when there are
warnings; a bad config is one error line and exit 2.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from runner.config import load_config, parse_overrides
from runner.data import spread_indices
from runner.errors import UserError, exit_on_user_error
from runner.health.findings import MOSTLY_EMPTY
from runner.tasks import build_task

RARE = 0.10  # a per-sample flag positive in fewer samples than this starves its head (seed 003: 3%)
SPARSE = 0.05  # a grid positive in fewer elements than this is sparse (seed 004: 0.83%)
SMALL = 64  # float fields with at most this many values per sample are targets, larger ones inputs
CATEGORIES = 8  # integer fields with at most this many distinct values are reported as classes


@dataclass
class Field:
    shape: tuple[int, ...] = ()
    dtype: str = ""
    binary: bool = True
    integer: bool = False
    n: int = 0
    positives: list[float] = field(default_factory=list)  # per sample
    s1: Any = None
    s2: Any = None
    vmin: Any = None
    vmax: Any = None
    values: dict[int, int] = field(default_factory=dict)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach()
        self.shape, self.dtype = tuple(x.shape[1:]), str(x.dtype).replace("torch.", "")
        self.integer = not (x.is_floating_point() or x.dtype == torch.bool)
        flat = x.reshape(x.shape[0], -1).double()
        self.n += flat.shape[0]
        self.binary &= bool(((flat == 0) | (flat == 1)).all())
        if self.binary:
            self.positives += flat.sum(1).tolist()
        if flat.shape[1] <= SMALL:
            s1, s2 = flat.sum(0), (flat * flat).sum(0)
            mn, mx = flat.min(0).values, flat.max(0).values
            if self.s1 is None:
                self.s1, self.s2, self.vmin, self.vmax = s1, s2, mn, mx
            else:
                self.s1, self.s2 = self.s1 + s1, self.s2 + s2
                self.vmin, self.vmax = torch.minimum(self.vmin, mn), torch.maximum(self.vmax, mx)
        if self.integer and flat.shape[1] == 1:
            for v in flat[:, 0].long().tolist():
                self.values[v] = self.values.get(v, 0) + 1

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def kind(self) -> str:
        if self.binary and self.size == 1:
            return "class"
        if self.binary:
            return "grid"
        if self.integer and self.size == 1:
            return "integer"
        if self.s1 is not None:
            return "target"
        return "input"


def scan(ds, max_samples: int, batch_size: int = 32) -> tuple[int, dict[str, Field]]:
    idx = spread_indices(len(ds), max_samples)
    n = len(idx)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx), batch_size=batch_size)
    fields: dict[str, Field] = {}
    for batch in loader:
        for k, v in batch.items():
            if torch.is_tensor(v):
                fields.setdefault(k, Field()).add(v)
    return n, fields


def pct(x: float) -> str:
    return f"{100 * x:.2g}%" if x < 0.1 else f"{100 * x:.1f}%"


def describe(name: str, f: Field) -> str:
    kind = f.kind()
    if kind == "class":
        p = float(np.mean(f.positives))
        return f"{name:<14} class balance  positive {pct(p)} ({int(sum(f.positives))} of {f.n} samples)"
    if kind == "grid":
        per = np.array(f.positives) / f.size
        empty = int((per == 0).sum())
        return (f"{name:<14} sparse target  {list(f.shape)}: positive {pct(float(per.mean()))} of elements; "
                f"per sample median {pct(float(np.median(per)))}, max {pct(float(per.max()))}; "
                f"empty samples {empty} of {f.n} ({pct(empty / f.n)})")
    if kind == "integer":
        if len(f.values) <= CATEGORIES:
            hist = ", ".join(f"{v}: {pct(c / f.n)}" for v, c in sorted(f.values.items()))
            return f"{name:<14} classes        {hist}"
        vals = np.repeat(list(f.values), list(f.values.values()))
        return f"{name:<14} integer        mean {vals.mean():.1f}, range {vals.min()}-{vals.max()}"
    if kind == "target":
        mean = f.s1 / f.n
        std = (f.s2 / f.n - mean * mean).clamp_min(0).sqrt() * (f.n / max(f.n - 1, 1)) ** 0.5
        return (f"{name:<14} target spread  std per dim [{', '.join(f'{v:.3g}' for v in std.tolist()[:8])}"
                f"{' ...' if std.numel() > 8 else ''}] (mean {std.mean():.3g}), range "
                f"[{f.vmin.min():.3g}, {f.vmax.max():.3g}]")
    return f"{name:<14} input          {list(f.shape)} {f.dtype}"


def warnings_for(split: str, name: str, f: Field, loss_cfg: dict[str, Any]) -> list[str]:
    out = []
    kind = f.kind()
    weight = next((f"set loss.{k}, now {v}" for k, v in loss_cfg.items() if k == f"{name}_pos_weight"), None)
    weight = weight or next((f"loss.{k} is {v}" for k, v in loss_cfg.items() if k in (f"{name}_weight", f"w_{name}")),
                            None)
    if kind == "class":
        p = float(np.mean(f.positives))
        if p == 0:
            out.append(f"{split} {name}: no positive sample at all: its head can only learn to say no")
        elif p < RARE:
            out.append(f"{split} {name}: only {pct(p)} of samples are positive: an unweighted BCE head learns to "
                       f"never predict it (seed 003: 3% done); a positive weight of about (1-p)/p = {(1 - p) / p:.0f} "
                       f"balances it{f' ({weight})' if weight else ''}, or sample the positives more often")
    elif kind == "grid":
        per = np.array(f.positives) / f.size
        rate, empty = float(per.mean()), float((per == 0).mean())
        if rate == 0:
            out.append(f"{split} {name}: every sample is empty: nothing to learn (check the labels)")
        elif empty > MOSTLY_EMPTY:
            out.append(f"{split} {name}: {pct(empty)} of samples have no positive element: the loss learns to "
                       f"predict empty (seed 004: most UAVScenes grids came out empty); fix the labels first")
        elif rate < SPARSE:
            out.append(f"{split} {name}: {pct(rate)} of elements are positive: weighted BCE/dice can settle on "
                       f"'all empty' (seed 004); use focal + dice + mean matching and watch pred/{name}_mean")
    elif kind == "target":
        mean = f.s1 / f.n
        std = (f.s2 / f.n - mean * mean).clamp_min(0).sqrt()
        flat_dims = [i for i, s in enumerate(std.tolist()) if s < 1e-6]
        if len(flat_dims) == std.numel():
            out.append(f"{split} {name}: constant over the checked samples: a regression head has nothing to learn")
        elif flat_dims:
            out.append(f"{split} {name}: dimensions {flat_dims} are constant; predict the others only")
    return out  # integer fields may be counts as well as classes: reported, never warned about


def main(argv: list[str] | None = None) -> int:
    with exit_on_user_error("runner.check_data"):
        p = argparse.ArgumentParser(prog="python -m runner.check_data", allow_abbrev=False,
                                    description="Per-split data statistics and warnings before training.")
        p.add_argument("--config", required=True, help="YAML config file (configs/*.yaml)")
        p.add_argument("--max-samples", type=int, default=1000, help="samples checked per split (evenly spaced)")
        p.add_argument("--splits", nargs="+", default=["train", "val"])
        p.add_argument("--strict", action="store_true", help="exit 1 when there are warnings")
        args, rest = p.parse_known_args(argv)
        if args.max_samples < 1:
            raise UserError(f"--max-samples must be at least 1, got {args.max_samples}")
        cfg = load_config(args.config, parse_overrides(rest))
        task = build_task(cfg)
        loss_cfg = cfg.loss.model_dump()
        warnings: list[str] = []
        rates: dict[str, dict[str, float]] = {}
        print(f"check_data: task {cfg.task}, config {args.config}")
        for split in args.splits:
            try:
                ds = task.dataset(split)
            except (KeyError, ValueError) as e:
                raise UserError(f"split {split!r} of task {cfg.task!r} cannot be built: {e}") from None
            n, fields = scan(ds, args.max_samples)
            print(f"split {split}: {len(ds)} samples ({n} checked)")
            if len(ds) == 0:
                warnings.append(f"{split}: the split is empty")
                continue
            for name, f in fields.items():
                print("  " + describe(name, f))
                warnings += warnings_for(split, name, f, loss_cfg)
                if f.kind() in ("class", "grid"):
                    rates.setdefault(name, {})[split] = float(np.mean(f.positives)) / f.size
            extra = task.describe_data(split)
            if extra:
                print("  task measures: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                      for k, v in extra.items()))
        for name, by_split in rates.items():
            if "train" in by_split and "val" in by_split and min(by_split.values()) > 0:
                ratio = by_split["val"] / by_split["train"]
                if ratio > 2 or ratio < 0.5:
                    warnings.append(f"{name}: val positive rate {pct(by_split['val'])} differs from train "
                                    f"{pct(by_split['train'])} by {max(ratio, 1 / ratio):.1f}x")
        for w in warnings:
            print(f"WARNING {w}")
        if not warnings:
            print("no warnings")
    return 1 if (args.strict and warnings) else 0


if __name__ == "__main__":
    sys.exit(main())
