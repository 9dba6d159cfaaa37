"""Trainer: the generic step/eval loop. It knows nothing about tasks' meaning or W&B;
it emits events to callbacks (tracking, checkpoints, early stopping, overlays, health).

Host reads happen once per log interval (train) and once per evaluation (val): loss terms,
metrics, gradient norms and collapse statistics all accumulate on the device in between.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

from runner.health.stats import CollapseStats
from runner.meters import Meter, read_host


@dataclass
class RunState:
    """Mutable run state, kept apart from the frozen config."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best_metric: float | None = None
    best_epoch: int | None = None
    stop_reason: str | None = None
    last_train: dict[str, float] = field(default_factory=dict)
    last_val: dict[str, float] = field(default_factory=dict)


def head_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters grouped by top-level child module (the 'heads' of grad/<head>)."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(name.split(".")[0], []).append(p)
    return groups


def move(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    nb = device.type == "cuda"
    return {k: (v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


class Trainer:
    def __init__(self, *, task, model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                 lr_fn: Callable[[int], float], train_loader: Iterable, val_loader: Iterable,
                 device: torch.device, epochs: int, max_train_iters: int | None = None,
                 max_val_iters: int | None = None, log_every: int = 25, grad_clip: float = 1.0,
                 amp: bool = False, amp_dtype: str = "bf16", callbacks: list | None = None,
                 progress: bool = True, state: RunState | None = None):
        self.task, self.model, self.criterion, self.optimizer = task, model, criterion, optimizer
        self.lr_fn, self.train_loader, self.val_loader, self.device = lr_fn, train_loader, val_loader, device
        self.epochs, self.max_train_iters, self.max_val_iters = epochs, max_train_iters, max_val_iters
        self.log_every, self.grad_clip = log_every, grad_clip
        self.amp = amp and device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if amp_dtype == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.callbacks = callbacks or []
        self.progress = progress
        self.state = state or RunState()
        self.heads = head_groups(model)
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.should_stop = False

    # ------------------------------------------------------------------ events
    def emit(self, event: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

    def autocast(self):
        if self.amp:
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def steps_per_epoch(self) -> int:
        n = len(self.train_loader)
        return min(n, self.max_train_iters) if self.max_train_iters else n

    # ------------------------------------------------------------------ one step
    def train_step(self, batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
        """Forward, backward, clip, step. Returns (loss terms, grad norms, outputs); no host read."""
        lr = self.lr_fn(self.state.step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        with self.autocast():
            outputs = self.task.forward(self.model, batch)
            terms = self.criterion(outputs, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["loss"]).backward()
        self.scaler.unscale_(self.optimizer)
        norms = {}
        for head, ps in self.heads.items():
            grads = [p.grad for p in ps if p.grad is not None]
            if grads:
                norms[f"grad/{head}"] = torch.linalg.vector_norm(
                    torch.stack(torch._foreach_norm(grads)).float())
        max_norm = self.grad_clip if self.grad_clip > 0 else float("inf")
        norms["grad/total"] = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return terms, norms, outputs

    # ------------------------------------------------------------------ loops
    def fit(self) -> RunState:
        st = self.state
        total = self.epochs * self.steps_per_epoch()
        self.emit("on_fit_start")
        bar = tqdm(total=total, initial=st.step, disable=not self.progress, unit="step", dynamic_ncols=True,
                   desc="train", mininterval=0.5 if sys.stderr.isatty() else 30)
        try:
            while st.epoch < self.epochs and not self.should_stop:
                epoch = st.epoch + 1
                t0 = time.perf_counter()
                train = self.train_epoch(epoch, bar)
                val = self.evaluate(epoch)
                st.epoch = epoch
                elapsed = time.perf_counter() - t0
                metrics = {
                    "epoch": epoch,
                    "epoch/train_loss": train.get("loss", math.nan),
                    "epoch/val_loss": val.get("val/loss", math.nan),
                    "epoch/lr": self.lr_fn(max(0, st.step - 1)),
                    "epoch/time_seconds": elapsed,
                    "epoch/samples_per_second": train.get("_samples", 0) / max(elapsed, 1e-9),
                    **val,
                }
                st.last_val = metrics
                bar.set_postfix_str(f"epoch {epoch} val_loss {metrics['epoch/val_loss']:.4f}")
                self.emit("on_epoch_end", epoch, metrics)
        except BaseException as e:
            self.emit("on_exception", e)
            raise
        finally:
            bar.close()
        self.emit("on_fit_end")
        return st

    def train_epoch(self, epoch: int, bar) -> dict[str, float]:
        st = self.state
        self.model.train()
        meter, stats = Meter(), CollapseStats()
        epoch_meter = Meter()
        samples = interval_samples = 0
        t_data = t_step = 0.0
        t_last = time.perf_counter()
        for i, batch in enumerate(self.train_loader):
            if self.max_train_iters and i >= self.max_train_iters:
                break
            t_ready = time.perf_counter()
            t_data += t_ready - t_last
            batch = move(batch, self.device)
            n = next(iter(v for v in batch.values() if isinstance(v, torch.Tensor))).shape[0]
            terms, norms, outputs = self.train_step(batch)
            with torch.no_grad():
                # terms named "loss/..." (e.g. loss/sigma_reg of learnable weights) are logged verbatim
                meter.update_means({(k if k.startswith("loss/") else "train/" + k): v for k, v in terms.items()}, n)
                epoch_meter.update("loss", terms["loss"].detach().float() * n, n)
                for k, v in norms.items():
                    meter.update(k, v, 1)
                stats.update(self.task.monitor_view(outputs, batch))
            samples += n
            interval_samples += n
            st.step += 1
            bar.update(1)
            t_last = time.perf_counter()
            t_step += t_last - t_ready
            if st.step % self.log_every == 0:
                values = read_host({**meter.tensors(), **stats.tensors()})
                values["lr"] = self.lr_fn(st.step - 1)
                values["train/data_time"] = t_data
                values["train/step_time"] = t_step
                values["train/samples_per_second"] = interval_samples / max(t_data + t_step, 1e-9)
                values["epoch"] = epoch - 1 + (i + 1) / self.steps_per_epoch()
                st.last_train = values
                bar.set_postfix_str(f"loss {values.get('train/loss', math.nan):.4f}")
                self.emit("on_log", st.step, values)
                meter.reset()
                stats.reset()
                t_data = t_step = 0.0
                interval_samples = 0
            if self.should_stop:
                break
        out = read_host(epoch_meter.tensors())
        out["_samples"] = samples
        return out

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict[str, float]:
        self.model.eval()
        meter, stats = Meter(), CollapseStats()
        for i, batch in enumerate(self.val_loader):
            if self.max_val_iters and i >= self.max_val_iters:
                break
            batch = move(batch, self.device)
            n = next(iter(v for v in batch.values() if isinstance(v, torch.Tensor))).shape[0]
            with self.autocast():
                outputs = self.task.forward(self.model, batch)
                terms = self.criterion(outputs, batch)
            meter.update_means({k: v for k, v in terms.items() if not k.startswith("loss/")}, n, prefix="val/")
            for k, ratio in self.task.metrics(outputs, batch).items():
                meter.update("val/" + k, *ratio)
            stats.update(self.task.monitor_view(outputs, batch))
        values = read_host({**meter.tensors(), **{f"val/{k}": v for k, v in stats.tensors().items()}})
        return values
