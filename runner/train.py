"""CLI: argv -> Config -> task -> Trainer.fit.

    python -m runner.train --config configs/sequential_attention.yaml [--wandb] [--loss.threshold=0.1 ...]

Every config key can be overridden as `--a.b=v` or `--a.b v` (the forms a W&B sweep agent and a
person use). User errors print one line and exit 2; SIGTERM/Ctrl-C save a checkpoint, close the
W&B run and exit 130 with the command that resumes.
"""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import torch
import yaml

from runner import checkpoint as ckpt
from runner import distributed
from runner.resume import check_resumable, find_resume, restore, resume_command
from runner.build import make_loaders, make_optimizer, resolve_device, seed_everything
from runner.callbacks import Checkpointing, EarlyStopping, Overlays, Tracking, fixed_batch
from runner.cli import build_parser, cli_overrides
from runner.config import load_config, to_dict
from runner.engine import Interrupted, NonFiniteError, Trainer
from runner.errors import EXIT_USER_ERROR, UserError, exit_on_user_error
from runner.health.monitor import HealthMonitor
from runner.report import print_run_report
from runner.schedules import make_lr_fn
from runner.sweep.swept import swept_value_problem
from runner.tasks import build_task, safe_name
from runner.tracking import NullTracker, Tracker, new_run_id

__all__ = ["main", "fit", "make_optimizer", "resolve_device"]
EXIT_INTERRUPTED = 130


def fit(cfg, resume: str | None = None, progress: bool = True, force: bool = False) -> dict:
    """Train one run from a validated config; returns the run's summary."""
    device = resolve_device(cfg.train.device)
    d, device = distributed.setup(device)
    source = find_resume(cfg, resume)
    resumed = ckpt.load(source) if source else None
    if resumed:
        check_resumable(resumed, cfg, source, force)
    seed_everything(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    task = build_task(cfg)
    train_ds, val_ds = task.dataset("train"), task.dataset("val")
    train_dl, val_dl = make_loaders(cfg, train_ds, val_ds, device, d.rank, d.world)
    model, criterion = task.model().to(device), task.criterion().to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if resumed:  # before the optimizer exists, so a shape mismatch is reported first
        ckpt.load_model_state(model, resumed["model"], str(source))
    optimizer = make_optimizer(model, cfg.optim, criterion, verbose=d.main)
    n_params = sum(p.numel() for p in model.parameters())
    model = distributed.wrap(model, d, device)
    if cfg.train.compile:
        model = torch.compile(model)
    run_id = distributed.broadcast(resumed["run_id"] if resumed else new_run_id(), d)
    run_dir = Path(distributed.broadcast(str(source.resolve().parent.parent) if resumed else
                                         str(Path(cfg.out_dir) / f"{safe_name(cfg.task)}-{time.strftime('%Y%m%d-%H%M%S')}-{run_id}"), d))
    config = to_dict(cfg)
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        tracker = Tracker(cfg.wandb, run_dir, run_id, {**config, "model_parameters": n_params,
                                                        "world_size": d.world}, resume=bool(resumed))
    else:
        tracker = NullTracker(run_dir, run_id)
    # under `wandb agent`: every swept value must have reached the resolved config (rank 0 reads
    # W&B; all ranks stop together)
    problem = distributed.broadcast(swept_value_problem(cfg, tracker.sweep_values()), d)
    if problem:
        tracker.finish(EXIT_USER_ERROR)
        raise UserError(problem)
    early = EarlyStopping(cfg.early_stop.monitor, cfg.early_stop.mode, cfg.early_stop.patience,
                          cfg.early_stop.min_delta, cfg.early_stop.enabled)
    # every rank runs the monitor (its inputs are all-reduced, so all ranks stop together); rank 0 reports
    monitor = HealthMonitor(cfg.monitor, tracker, val_ds, cfg.optim.warmup_steps,
                            echo=None if d.main else (lambda text: None)) if cfg.monitor.enabled else None
    callbacks = [early] + ([monitor] if monitor else [])  # in any order (see runner.callbacks)
    if d.main:  # overlays, checkpoints and W&B belong to rank 0
        store = ckpt.CheckpointStore(run_dir, cfg.checkpoint.keep_periodic)
        if not task.has_overlay():
            print(task.overlay_note())
        callbacks += [Overlays(tracker, cfg.viz.n_samples, cfg.viz.every)] if task.has_overlay() else []
        callbacks += [Checkpointing(store, tracker, config, run_id, cfg.checkpoint.save_every, cfg.checkpoint.upload,
                                    criterion, extra_state=monitor.checkpoint_mark if monitor else None, best=early),
                      Tracking(tracker)]
    steps = min(len(train_dl), cfg.train.max_train_iters or len(train_dl))
    trainer = Trainer(task=task, model=model, criterion=criterion, optimizer=optimizer,
                      lr_fn=make_lr_fn(cfg.optim, cfg.train.epochs * steps), train_loader=train_dl,
                      val_loader=val_dl, device=device, epochs=cfg.train.epochs,
                      max_train_iters=cfg.train.max_train_iters, max_val_iters=cfg.train.max_val_iters,
                      log_every=cfg.train.log_every, grad_clip=cfg.train.grad_clip, amp=cfg.train.amp,
                      amp_dtype=cfg.train.amp_dtype, callbacks=callbacks, progress=progress and d.main,
                      nonfinite_patience=cfg.train.nonfinite_patience, distributed=d.enabled,
                      channels_last=cfg.train.channels_last,
                      fixed_batch=fixed_batch(val_ds, max(cfg.viz.n_samples, cfg.monitor.fixed_samples
                                                          if cfg.monitor.enabled else 0)))
    if resumed:
        restore(trainer, resumed, criterion)
    if d.main:
        print(f"run {run_id}: task {cfg.task}, {n_params:,} parameters, device {device}"
              f"{f' x {d.world} processes' if d.enabled else ''}, {len(train_ds)} train / {len(val_ds)} val samples, "
              f"dir {run_dir}" + (f", resumed at epoch {trainer.state.epoch} step {trainer.state.step}" if resumed else ""))
    tracker.set_summary({"model_parameters": n_params, "run_dir": str(run_dir)})
    exit_code, previous = 1, install_signal_handlers(trainer)
    try:
        trainer.fit()
        if d.main:  # the health monitor measured it at fit start (same val split): not computed twice
            baseline = monitor.baseline if monitor is not None and monitor.baseline is not None else task.baseline()
            tracker.set_summary({f"baseline/{k}": v for k, v in baseline.items()})
        exit_code = 0
    except Interrupted as e:
        trainer.state.stop_reason = f"interrupted by {e}"
        if d.main:
            print(f"runner.train: interrupted by {e}; checkpoint saved; resume with: {resume_command(store.latest)}",
                  file=sys.stderr)
        exit_code = EXIT_INTERRUPTED
    except NonFiniteError as e:
        trainer.state.stop_reason = str(e)
        print(f"runner.train: error: {e}", file=sys.stderr)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        summary = {**tracker.summary, "best_epoch": trainer.state.best_epoch, "best_metric": trainer.state.best_metric,
                   "epochs_completed": trainer.state.epoch, "stop_reason": trainer.state.stop_reason or "completed"}
        st = trainer.state
        if st.data_seconds + st.step_seconds > 0:
            summary["perf/data_share"] = st.data_seconds / (st.data_seconds + st.step_seconds)
            summary["perf/num_workers"] = cfg.train.num_workers
        tracker.set_summary(summary)
        wandb_dir = tracker.wandb_dir
        tracker.finish(exit_code)
        if d.main:
            print_run_report(run_dir, wandb_dir, summary, trainer.state.last_val)
        distributed.teardown(d)
    return {**summary, "run_dir": str(run_dir), "wandb_dir": wandb_dir, "exit_code": exit_code}


def install_signal_handlers(trainer: Trainer) -> dict:
    """First SIGTERM/SIGINT: finish the step, checkpoint, exit 130. A second SIGINT aborts at once."""
    def handler(signum, frame):
        name = signal.Signals(signum).name
        if trainer.interrupt_reason and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.request_stop(name)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    return previous


def main(argv: list[str] | None = None) -> int:
    with exit_on_user_error("runner.train"):
        args, rest = build_parser().parse_known_args(argv)
        cfg = load_config(args.config, cli_overrides(args, rest))
        if args.print_config:
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        result = fit(cfg, resume=args.resume, progress=not args.no_progress, force=args.force)
    return result["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
