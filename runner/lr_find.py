"""Exponential LR range test on the real model and data (Smith 2015; the LR finder of seed 002).

    python -m runner.lr_find --config configs/sequential_attention.yaml [--wandb] [--steps 100]
                             [--start-lr 1e-7] [--end-lr 1] [--section.key=value ...]

Trains from the config's initial weights for `--steps` optimizer steps, raising the learning rate
exponentially from `--start-lr` to `--end-lr` (one step of the real Trainer each: same model,
loss, optimizer groups, clipping and AMP as runner.train), and stops early once the loss diverges
(non-finite, or the smoothed loss above `--diverge` times its minimum). Then it reports:

- suggested LR: where the smoothed loss falls fastest against log(lr) (the steepest descent,
  as Lightning's `lr_find().suggestion()`, which printed the seed's 2.57e-3);
- stable range: from where the loss has made 10% of its total drop to the last LR, past the
  minimum, at which the smoothed loss is still below its starting value;
and writes lr_find.png (loss vs LR), lr_find.csv and lr_find.json to a run directory, logging
them with `--wandb` (scalars `lr_find/*`, the plot as the image `lr_find/plot`).
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from tqdm import tqdm

from runner import viz
from runner.config import load_config, to_dict
from runner.engine import Trainer, move
from runner.errors import UserError, exit_on_user_error
from runner.tasks import build_task, safe_name
from runner.tracking import Tracker, new_run_id
from runner.build import make_loaders, make_optimizer, resolve_device, seed_everything
from runner.cli import build_parser, cli_overrides

SMOOTH_BETA = 0.98  # EMA of the loss, bias-corrected (fastai / Lightning)
DROP_FRACTION = 0.1  # the stable range starts once the loss has made this share of its total drop


@dataclass
class RangeTest:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    start_lr: float
    end_lr: float
    stop_reason: str
    suggested_lr: float | None = None
    min_loss_lr: float | None = None
    stable_min_lr: float | None = None
    stable_max_lr: float | None = None


def exp_lr(start: float, end: float, steps: int):
    """lr(i) for i in [0, steps): start at i = 0, end at i = steps - 1, geometric in between."""
    ratio = end / start
    return lambda i: start * ratio ** (min(i, steps - 1) / max(1, steps - 1))


def smooth(losses: list[float], beta: float = SMOOTH_BETA) -> list[float]:
    avg, out = 0.0, []
    for i, v in enumerate(losses):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def analyze(result: RangeTest) -> RangeTest:
    """Fill in the suggestion and stable range from the recorded (lr, smoothed loss) curve."""
    lrs, sm = np.asarray(result.lrs), np.asarray(result.smoothed)
    finite = np.isfinite(sm)
    lrs, sm = lrs[finite], sm[finite]
    n = len(sm)
    if n < 5:
        return result
    skip_begin, skip_end = max(1, round(0.1 * n)), 1
    seg_lr, seg = lrs[skip_begin:n - skip_end], sm[skip_begin:n - skip_end]
    if len(seg) >= 3:
        grad = np.gradient(seg, np.log10(seg_lr))
        result.suggested_lr = float(seg_lr[int(np.argmin(grad))])
    i_min = int(np.argmin(sm))
    result.min_loss_lr = float(lrs[i_min])
    loss0, lowest = float(sm[0]), float(sm[i_min])
    if lowest < loss0:
        level = loss0 - DROP_FRACTION * (loss0 - lowest)
        i_lo = int(np.argmax(sm[:i_min + 1] <= level))
        j = i_min
        while j + 1 < n and sm[j + 1] < loss0:
            j += 1
        result.stable_min_lr, result.stable_max_lr = float(lrs[i_lo]), float(lrs[j])
    return result


def run_range_test(trainer: Trainer, loader, device: torch.device, start: float, end: float, steps: int,
                   diverge: float, progress: bool = True) -> RangeTest:
    """Step the trainer `steps` times with lr rising from start to end; stop when the loss diverges."""
    lr_fn = exp_lr(start, end, steps)
    trainer.lr_fn = lr_fn
    trainer.model.train()
    lrs, losses = [], []
    reason = f"completed {steps} steps"
    batches, epoch = iter(loader), 1
    best = math.inf
    bar = tqdm(total=steps, disable=not progress, unit="step", desc="lr range test", dynamic_ncols=True)
    for i in range(steps):
        try:
            batch = next(batches)
        except StopIteration:  # next epoch: a fresh permutation
            epoch += 1
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
            batches = iter(loader)
            batch = next(batches)
        lr = lr_fn(i)
        terms, _, _ = trainer.train_step(move(batch, device))
        trainer.state.step += 1
        loss = float(terms["loss"].detach())  # one host read a step: the stop rule needs it
        lrs.append(lr)
        losses.append(loss)
        bar.update(1)
        if not math.isfinite(loss):
            reason = f"loss became non-finite at lr {lr:.3g}"
            break
        sm = smooth(losses)[-1]
        best = min(best, sm)
        if i >= 5 and best > 0 and sm > diverge * best:
            reason = f"loss diverged at lr {lr:.3g} (smoothed loss above {diverge:g}x its minimum)"
            break
    bar.close()
    return analyze(RangeTest(lrs=lrs, losses=losses, smoothed=smooth(losses), start_lr=start, end_lr=end,
                             stop_reason=reason))


# ---------------------------------------------------------------- plot

def plot(result: RangeTest, title: str, width: int = 760, height: int = 460) -> np.ndarray:
    """Loss (grey) and smoothed loss (blue) against log10(lr); stable range green, suggestion red."""
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 70, 20, 40, 50
    lrs = np.asarray(result.lrs)
    sm = np.asarray(result.smoothed)
    raw = np.asarray(result.losses)
    ok = np.isfinite(sm)
    x0, x1 = math.log10(result.start_lr), math.log10(result.end_lr)
    if ok.any():
        i_min = int(np.nanargmin(np.where(ok, sm, np.nan)))
        fin = np.isfinite(raw[:i_min + 1])
        lo = float(min(np.nanmin(np.where(ok, sm, np.nan)), raw[:i_min + 1][fin].min() if fin.any() else np.inf))
        hi = float(max(sm[0], np.nanmax(sm[:i_min + 1])))
    else:
        lo, hi = 0.0, 1.0
    span = max(hi - lo, 1e-12)
    y0, y1 = lo - 0.08 * span, hi + 0.25 * span

    def px(lr: float) -> int:
        return int(round(left + (math.log10(lr) - x0) / (x1 - x0) * (width - left - right)))

    def py(v: float) -> int:
        v = min(max(v, y0), y1)
        return int(round(height - bottom - (v - y0) / (y1 - y0) * (height - top - bottom)))

    if result.stable_min_lr and result.stable_max_lr:
        cv2.rectangle(img, (px(result.stable_min_lr), top), (px(result.stable_max_lr), height - bottom),
                      (215, 245, 215), -1)
    for d in range(math.ceil(x0), math.floor(x1) + 1):  # decade grid
        x = px(10.0 ** d)
        cv2.line(img, (x, top), (x, height - bottom), (225, 225, 225), 1)
        cv2.putText(img, f"1e{d}", (x - 14, height - bottom + 18), viz.FONT, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    for k in range(5):
        v = y0 + (y1 - y0) * k / 4
        cv2.line(img, (left - 4, py(v)), (left, py(v)), (60, 60, 60), 1)
        cv2.putText(img, f"{v:.3g}", (6, py(v) + 4), viz.FONT, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (width - right, height - bottom), (90, 90, 90), 1)
    fin = np.isfinite(raw)
    pts = np.array([[px(l), py(v)] for l, v in zip(lrs[fin], raw[fin])], np.int32)
    if len(pts) > 1:
        cv2.polylines(img, [pts], False, (190, 190, 190), 1, cv2.LINE_AA)
    pts = np.array([[px(l), py(v)] for l, v in zip(lrs[ok], sm[ok])], np.int32)
    if len(pts) > 1:
        cv2.polylines(img, [pts], False, (30, 90, 230), 2, cv2.LINE_AA)
    if result.suggested_lr:
        x = px(result.suggested_lr)
        cv2.line(img, (x, top), (x, height - bottom), (220, 30, 30), 2)
        label = f"suggested {result.suggested_lr:.3g}"
        cv2.putText(img, label, (min(x + 5, width - right - 150), top + 16), viz.FONT, 0.5, (220, 30, 30), 1,
                    cv2.LINE_AA)
    cv2.putText(img, title, (left, 24), viz.FONT, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    cv2.putText(img, "learning rate (log scale)", (width // 2 - 90, height - 12), viz.FONT, 0.45, (20, 20, 20), 1,
                cv2.LINE_AA)
    cv2.putText(img, "grey: loss  blue: smoothed  green: stable range", (left + 6, height - bottom - 8), viz.FONT,
                0.4, (80, 80, 80), 1, cv2.LINE_AA)
    return img


# ---------------------------------------------------------------- CLI

def report(result: RangeTest, configured_lr: float) -> str:
    lines = [f"LR range test: {len(result.lrs)} steps, lr {result.start_lr:.3g} -> {result.lrs[-1]:.3g} "
             f"(asked up to {result.end_lr:.3g}); {result.stop_reason}"]
    if result.suggested_lr is None:
        lines.append("no suggestion: too few finite losses (lower --start-lr or raise --steps)")
        return "\n".join(lines)
    ratio = result.suggested_lr / configured_lr
    lines.append(f"suggested lr : {result.suggested_lr:.3g}  (steepest descent of the smoothed loss; "
                 f"config optim.lr is {configured_lr:.3g}, {ratio:.3g}x)")
    if result.stable_min_lr is not None:
        lines.append(f"stable range : {result.stable_min_lr:.3g} .. {result.stable_max_lr:.3g}  (loss falling, and "
                     f"below its starting value {result.smoothed[0]:.4g}; lowest at lr {result.min_loss_lr:.3g})")
    else:
        lines.append(f"stable range : none: the smoothed loss never fell below its start {result.smoothed[0]:.4g}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    with exit_on_user_error("runner.lr_find"):
        p = build_parser()
        p.prog = "python -m runner.lr_find"
        p.description = "Exponential LR range test on the config's model and data."
        p.add_argument("--start-lr", type=float, default=1e-7)
        p.add_argument("--end-lr", type=float, default=1.0)
        p.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
        p.add_argument("--diverge", type=float, default=4.0, help="stop when the smoothed loss exceeds this x its min")
        args, rest = p.parse_known_args(argv)
        if args.resume:
            raise UserError("--resume is not used by the LR range test: it starts from the config's initial weights")
        if not (0 < args.start_lr < args.end_lr):
            raise UserError(f"need 0 < --start-lr < --end-lr, got {args.start_lr:g} and {args.end_lr:g}")
        if args.steps < 5:
            raise UserError(f"--steps must be at least 5, got {args.steps}")
        if args.diverge <= 1:
            raise UserError(f"--diverge must be > 1, got {args.diverge:g}")
        cfg = load_config(args.config, cli_overrides(args, rest))
        if args.print_config:
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        run(cfg, args.start_lr, args.end_lr, args.steps, args.diverge, progress=not args.no_progress)
    return 0


def run(cfg, start: float, end: float, steps: int, diverge: float, progress: bool = True) -> RangeTest:
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.seed)
    task = build_task(cfg)
    loader, _ = make_loaders(cfg, task.dataset("train"), task.dataset("val"), device)  # runner.train's loader
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(1)
    model, criterion = task.model().to(device), task.criterion().to(device)
    optimizer = make_optimizer(model, cfg.optim, criterion)
    trainer = Trainer(task=task, model=model, criterion=criterion, optimizer=optimizer, lr_fn=exp_lr(start, end, steps),
                      train_loader=loader, val_loader=[], device=device, epochs=1, grad_clip=cfg.train.grad_clip,
                      amp=cfg.train.amp, amp_dtype=cfg.train.amp_dtype, progress=False)
    run_id = new_run_id()
    run_dir = Path(cfg.out_dir) / f"lr_find-{safe_name(cfg.task)}-{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"
    run_dir.mkdir(parents=True, exist_ok=True)
    config = to_dict(cfg)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    wandb_cfg = cfg.wandb.model_copy(update={"tags": [*cfg.wandb.tags, "lr_find"],
                                             "run_name": cfg.wandb.run_name or f"lr_find-{run_id}"})
    tracker = Tracker(wandb_cfg, run_dir, run_id, {**config, "lr_find": {"start_lr": start, "end_lr": end,
                                                                          "steps": steps, "diverge": diverge}})
    print(f"lr_find {run_id}: task {cfg.task}, device {device}, batch {cfg.train.batch_size}, "
          f"{steps} steps from {start:.3g} to {end:.3g}, dir {run_dir}", flush=True)
    exit_code = 1
    try:
        result = run_range_test(trainer, loader, device, start, end, steps, diverge, progress)
        for i, (lr, loss, sm) in enumerate(zip(result.lrs, result.losses, result.smoothed)):
            tracker.log({"lr_find/lr": lr, "lr_find/loss": loss, "lr_find/smoothed_loss": sm}, step=i)
        with open(run_dir / "lr_find.csv", "w") as f:
            f.write("step,lr,loss,smoothed_loss\n")
            for i, (lr, loss, sm) in enumerate(zip(result.lrs, result.losses, result.smoothed)):
                f.write(f"{i},{lr:.6g},{loss:.6g},{sm:.6g}\n")
        (run_dir / "lr_find.json").write_text(json.dumps(asdict(result), indent=2))
        title = f"LR range test, task {cfg.task}: " + (f"suggested lr {result.suggested_lr:.3g}"
                                                       if result.suggested_lr else "no suggestion")
        image = plot(result, title)
        cv2.imwrite(str(run_dir / "lr_find.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        tracker.log_image("lr_find/plot", image, title, step=len(result.lrs), epoch=0)
        tracker.set_summary({f"lr_find/{k}": v for k, v in asdict(result).items() if not isinstance(v, list)})
        print(report(result, cfg.optim.lr), flush=True)
        print(f"plot         : {run_dir / 'lr_find.png'}", flush=True)
        exit_code = 0
    finally:
        if tracker.wandb_dir:
            print(f"W&B run      : {tracker.wandb_dir}", flush=True)
        tracker.finish(exit_code)
    return result


if __name__ == "__main__":
    sys.exit(main())
