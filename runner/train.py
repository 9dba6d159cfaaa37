"""CLI: argv -> Config -> task -> Trainer.fit.

    python -m runner.train --config configs/sequential_attention.yaml [--wandb] [--loss.threshold=0.1 ...]

Every config key can be overridden as `--a.b=v` or `--a.b v` (the forms a W&B sweep agent and a
person use). User errors print one line and exit 2.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from runner import checkpoint as ckpt
from runner.callbacks import Checkpointing, EarlyStopping, Overlays, Tracking
from runner.config import load_config, parse_overrides, to_dict
from runner.engine import RunState, Trainer
from runner.errors import EXIT_USER_ERROR, UserError, exit_on_user_error
from runner.report import print_run_report
from runner.schedules import make_lr_fn
from runner.sweepfile import check_swept_values
from runner.tasks import build_task
from runner.tracking import Tracker, new_run_id

FLAG_KEYS = {"wandb_project": "wandb.project", "wandb_entity": "wandb.entity", "wandb_run_name": "wandb.run_name",
             "wandb_tags": "wandb.tags", "wandb_mode": "wandb.mode", "device": "train.device"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runner.train", allow_abbrev=False,
                                description="Train a task; any config key can be overridden as --section.key=value.")
    p.add_argument("--config", help="YAML config file (configs/*.yaml)")
    p.add_argument("--wandb", action="store_true", help="log to Weights & Biases (offline unless --wandb-mode online)")
    p.add_argument("--wandb-project")
    p.add_argument("--wandb-entity")
    p.add_argument("--wandb-run-name")
    p.add_argument("--wandb-tags", nargs="+")
    p.add_argument("--wandb-mode", choices=["online", "offline", "disabled"])
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument("--resume", help="checkpoint to continue from")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    return p


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but CUDA is not available on this machine "
                        "(use --device cpu or --device auto)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps was requested but MPS is not available on this machine")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: torch.nn.Module, optim_cfg, criterion: torch.nn.Module | None = None
                   ) -> torch.optim.Optimizer:
    """AdamW over the model's own parameters: weight decay on matrices/kernels, none on biases/norms.

    A loss with trainable parameters (learnable loss weights, which the user must opt into in the
    loss config) gets its own group named "loss", without weight decay, and is announced loudly.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"name": "decay", "params": decay, "weight_decay": optim_cfg.weight_decay},
              {"name": "no_decay", "params": no_decay, "weight_decay": 0.0}]
    loss_named = [(n, p) for n, p in (criterion.named_parameters() if criterion is not None else []) if p.requires_grad]
    msg = (f"optimizer: AdamW, {sum(p.numel() for p in decay):,} decayed + "
           f"{sum(p.numel() for p in no_decay):,} non-decayed model parameters")
    if loss_named:
        groups.append({"name": "loss", "params": [p for _, p in loss_named], "weight_decay": 0.0})
        msg += f"; WARNING: {len(loss_named)} learnable loss parameters ({', '.join(n for n, _ in loss_named)})"
    else:
        msg += " (no loss parameters)"
    print(msg)
    return torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=optim_cfg.betas)


def fit(cfg, resume: str | None = None, progress: bool = True) -> dict:
    """Train one run from a validated config; returns the run's summary."""
    device = resolve_device(cfg.train.device)
    resumed = ckpt.load(resume) if resume else None
    seed_everything(cfg.seed)
    task = build_task(cfg)
    train_ds, val_ds = task.dataset("train"), task.dataset("val")
    loader = dict(batch_size=cfg.train.batch_size, num_workers=cfg.train.num_workers,
                  pin_memory=device.type == "cuda", persistent_workers=cfg.train.num_workers > 0)
    train_dl = torch.utils.data.DataLoader(train_ds, shuffle=True, drop_last=len(train_ds) >= cfg.train.batch_size,
                                           generator=torch.Generator().manual_seed(cfg.seed), **loader)
    val_dl = torch.utils.data.DataLoader(val_ds, shuffle=False, **loader)
    model, criterion = task.model().to(device), task.criterion().to(device)
    optimizer = make_optimizer(model, cfg.optim, criterion)
    if resumed:
        run_id, run_dir = resumed["run_id"], Path(resume).resolve().parent.parent
    else:
        run_id = new_run_id()
        run_dir = Path(cfg.out_dir) / f"{cfg.task}-{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"
    run_dir.mkdir(parents=True, exist_ok=True)
    config = to_dict(cfg)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    n_params = sum(p.numel() for p in model.parameters())
    tracker = Tracker(cfg.wandb, run_dir, run_id, {**config, "model_parameters": n_params}, resume=bool(resumed))
    try:  # under `wandb agent`: every swept value must have reached the resolved config
        check_swept_values(cfg, tracker.sweep_values())
    except UserError:
        tracker.finish(EXIT_USER_ERROR)
        raise
    steps = min(len(train_dl), cfg.train.max_train_iters or len(train_dl))
    early = EarlyStopping(cfg.early_stop.monitor, cfg.early_stop.mode, cfg.early_stop.patience,
                          cfg.early_stop.min_delta, cfg.early_stop.enabled)
    store = ckpt.CheckpointStore(run_dir, cfg.checkpoint.keep_periodic)
    callbacks = [early, Overlays(tracker, val_ds, cfg.viz.n_samples, cfg.viz.every),
                 Checkpointing(store, tracker, config, run_id, cfg.checkpoint.save_every, cfg.checkpoint.upload,
                               criterion), Tracking(tracker)]
    trainer = Trainer(task=task, model=model, criterion=criterion, optimizer=optimizer,
                      lr_fn=make_lr_fn(cfg.optim, cfg.train.epochs * steps), train_loader=train_dl,
                      val_loader=val_dl, device=device, epochs=cfg.train.epochs,
                      max_train_iters=cfg.train.max_train_iters, max_val_iters=cfg.train.max_val_iters,
                      log_every=cfg.train.log_every, grad_clip=cfg.train.grad_clip, amp=cfg.train.amp,
                      amp_dtype=cfg.train.amp_dtype, callbacks=callbacks, progress=progress)
    if resumed:
        restore(trainer, resumed, criterion, resume)
    print(f"run {run_id}: task {cfg.task}, {n_params:,} parameters, device {device}, "
          f"{len(train_ds)} train / {len(val_ds)} val samples, dir {run_dir}")
    tracker.set_summary({"model_parameters": n_params, "run_dir": str(run_dir)})
    exit_code = 1
    try:
        state = trainer.fit()
        tracker.set_summary({f"baseline/{k}": v for k, v in task.baseline().items()})
        exit_code = 0
    finally:
        summary = {**tracker.summary, **state_summary(trainer.state)}
        wandb_dir = tracker.wandb_dir
        tracker.finish(exit_code)
        print_run_report(run_dir, wandb_dir, summary, trainer.state.last_val)
    return {**summary, "run_dir": str(run_dir), "wandb_dir": wandb_dir, "state": state}


def state_summary(st: RunState) -> dict:
    return {"best_epoch": st.best_epoch, "best_metric": st.best_metric, "epochs_completed": st.epoch,
            "stop_reason": st.stop_reason or "completed"}


def restore(trainer: Trainer, state: dict, criterion, source: str) -> None:
    ckpt.load_model_state(trainer.model, state["model"], source)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scaler.load_state_dict(state["scaler"])
    criterion.load_state_dict(state["criterion"])
    ckpt.set_rng_state(state["rng"])
    st = trainer.state
    st.step, st.epoch, st.best_metric, st.best_epoch = state["step"], state["epoch"], state["best_metric"], state["best_epoch"]
    for cb in trainer.callbacks:
        if cb.state_key:
            cb.load_state_dict(state["callbacks"][cb.state_key])


def main(argv: list[str] | None = None) -> int:
    with exit_on_user_error("runner.train"):
        args, rest = build_parser().parse_known_args(argv)
        overrides = parse_overrides(rest)
        if args.wandb:
            overrides["wandb.enabled"] = True
        overrides.update({key: getattr(args, flag) for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None})
        cfg = load_config(args.config, overrides)
        if args.print_config:
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        fit(cfg, resume=args.resume, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
