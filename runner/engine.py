"""Trainer: the generic step/eval loop. It knows nothing about tasks' meaning or W&B;
it emits events to callbacks (tracking, checkpoints, early stopping, overlays, health).

Host reads happen once per log interval (train) and once per evaluation (val): loss terms,
metrics, gradient norms, non-finite counters and collapse statistics all accumulate on the
device in between. A step whose gradients are not finite is skipped on the device (fused AdamW
`found_inf`) and handled by the NonFiniteGuard (runner/nonfinite.py). Its parts live beside what
they serve: sampling and batch moving in runner/data/loading.py, gradient norms in
runner/grad_norms.py, resume in runner/resume.py.
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

from runner import keys
from runner.checkpoint import unwrap
from runner.data.loading import EpochSampler, batch_size_of, move
from runner.grad_norms import GradNorms, head_groups
from runner.health.stats import CollapseStats
from runner.meters import Meter, StepMedian, read_host
from runner.nonfinite import NonFiniteError, NonFiniteGuard

__all__ = ["Trainer", "RunState", "FixedBatch", "Interrupted", "NonFiniteError", "EpochSampler", "move"]


@dataclass
class RunState:
    """Mutable run state, kept apart from the frozen config."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken (skipped non-finite steps included)
    batch_in_epoch: int = 0  # batches of the current epoch already trained (mid-epoch resume)
    best_metric: float | None = None
    best_epoch: int | None = None
    stop_reason: str | None = None
    nonfinite_steps: int = 0
    data_seconds: float = 0.0  # time the training loop waited for batches (this process, since start)
    step_seconds: float = 0.0  # time of the training steps themselves (to the host: async on a GPU)
    last_train: dict[str, float] = field(default_factory=dict)
    last_val: dict[str, float] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("epoch", "step", "batch_in_epoch", "best_metric", "best_epoch",
                                               "nonfinite_steps")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


@dataclass
class FixedBatch:
    """The fixed validation samples (evenly spaced, runner.data.spread_indices), forwarded once per
    epoch after evaluate() in eval mode under no_grad; overlays and the health monitor read it."""

    batch: dict[str, Any]  # on the device
    outputs: dict[str, Any]
    view: Any  # the task's MonitorView


class Interrupted(Exception):
    """Training stopped on request (SIGTERM, Ctrl-C) after saving; carries the reason."""


class Trainer:
    def __init__(self, *, task, model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                 lr_fn: Callable[[int], float], train_loader: Iterable, val_loader: Iterable,
                 device: torch.device, epochs: int, max_train_iters: int | None = None,
                 max_val_iters: int | None = None, log_every: int = 25, grad_clip: float = 1.0,
                 amp: bool = False, amp_dtype: str = "bf16", callbacks: list | None = None,
                 progress: bool = True, state: RunState | None = None, nonfinite_patience: int = 5,
                 distributed: bool = False, channels_last: bool = False, fixed_batch: dict | None = None):
        self.task, self.model, self.criterion, self.optimizer = task, model, criterion, optimizer
        self.lr_fn, self.train_loader, self.val_loader, self.device = lr_fn, train_loader, val_loader, device
        self.epochs, self.max_train_iters, self.max_val_iters = epochs, max_train_iters, max_val_iters
        self.log_every, self.grad_clip, self.nonfinite_patience = log_every, grad_clip, nonfinite_patience
        self.amp = amp and device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if amp_dtype == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.callbacks = callbacks or []
        self.progress = progress
        self.state = state or RunState()
        self.channels_last = channels_last
        self.heads = head_groups(unwrap(model))  # grad/<head> names from the bare module
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.grad_norms = GradNorms(self.heads, self.params, device)
        self.should_stop = False
        self.interrupt_reason: str | None = None
        self.distributed = distributed  # DDP: accumulators are all-reduced before each host read
        sampler = getattr(train_loader, "sampler", None)
        self.sampler = sampler if isinstance(sampler, EpochSampler) else None
        n_batches = len(train_loader) if self.sampler is None else len(self.sampler) // train_loader.batch_size
        if self.sampler is not None and not train_loader.drop_last:
            n_batches = math.ceil(len(self.sampler) / train_loader.batch_size)
        self.batches_per_epoch = min(n_batches, max_train_iters) if max_train_iters else n_batches
        self.fixed_source = fixed_batch  # collated fixed val samples on the host (None: no fixed batch)
        self.fixed: FixedBatch | None = None  # set after each evaluation
        self.guard = NonFiniteGuard(unwrap(model), device, nonfinite_patience)

    # ------------------------------------------------------------------ events
    def emit(self, event: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

    def emit_values(self, event: str, head, values: dict[str, Any]) -> dict[str, Any]:
        """on_log / on_epoch_end: every callback sees the same values (its own copy) and returns what it
        adds; the merged values then go to the sinks (checkpoints, tracking), so no order matters."""
        added: dict[str, Any] = {}
        for cb in self.callbacks:
            if not getattr(cb, "sink", False):
                out = getattr(cb, event)(self, head, dict(values))
                if out:
                    added.update(out)
        merged = {**values, **added}
        for cb in self.callbacks:
            if getattr(cb, "sink", False):
                getattr(cb, event)(self, head, merged)
        return merged

    def save_checkpoint(self, reason: str, extra: dict[str, Any] | None = None, name: str | None = None):
        """A checkpoint now (latest.pt, and `name` too if given), marked with `reason` and `extra`; the
        callback that owns checkpoints writes it. Returns its path, or None where none is kept (rank > 0)."""
        for cb in self.callbacks:
            save = getattr(cb, "save_checkpoint", None)
            if save is not None:
                return save(self, reason, extra or {}, name)
        return None

    def autocast(self):
        if self.amp:
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def request_stop(self, reason: str) -> None:
        """Finish the current step, save, and raise Interrupted (signal handlers call this)."""
        self.interrupt_reason = reason

    # ------------------------------------------------------------------ one step
    def train_step(self, batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
        """Forward, backward, clip, step. Returns (loss terms, grad norms, outputs); no host read."""
        lr = self.lr_fn(self.state.step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        bn = self.guard.snapshot()
        with self.autocast():
            outputs = self.task.forward(self.model, batch)
            terms = self.criterion(outputs, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["loss"]).backward()
        self.scaler.unscale_(self.optimizer)
        norms, total = self._grad_norms_and_clip()
        bad = ~torch.isfinite(total)
        self.guard.update(bad, terms, bn)
        if not self.scaler.is_enabled():
            self.optimizer.found_inf = bad.float()  # fused AdamW skips the update on the device
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return terms, norms, outputs

    def _grad_norms_and_clip(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return self.grad_norms(self.grad_clip)

    # ------------------------------------------------------------------ loops
    def fit(self) -> RunState:
        st = self.state
        total = self.epochs * self.batches_per_epoch
        self.guard.start(st.nonfinite_steps)
        self.emit("on_fit_start")
        initial = st.epoch * self.batches_per_epoch + st.batch_in_epoch
        bar = tqdm(total=total, initial=initial, disable=not self.progress, unit="step", dynamic_ncols=True,
                   desc="train", mininterval=0.5 if sys.stderr.isatty() else 30)
        try:
            while st.epoch < self.epochs and not self.should_stop:
                epoch = st.epoch + 1
                t0 = time.perf_counter()
                train = self.train_epoch(epoch, bar)
                if self.interrupt_reason:
                    self.emit("on_interrupt", self.interrupt_reason)
                    raise Interrupted(self.interrupt_reason)
                if self.should_stop and st.batch_in_epoch < self.batches_per_epoch:
                    break  # stopped mid-epoch (health): the epoch is not complete; its checkpoint stays latest.pt
                val = self.evaluate(epoch)
                self.fixed = self.forward_fixed()
                st.epoch, st.batch_in_epoch = epoch, 0
                elapsed = time.perf_counter() - t0
                metrics = {
                    "epoch": epoch,
                    "epoch/train_loss": train.get("loss", math.nan),
                    "epoch/val_loss": val.get(keys.val_key(keys.TOTAL), math.nan),
                    "epoch/lr": self.lr_fn(max(0, st.step - 1)),
                    "epoch/time_seconds": elapsed,
                    "epoch/samples_per_second": train.get("_samples", 0) / max(elapsed, 1e-9),
                    **val,
                }
                bar.set_postfix_str(f"epoch {epoch} val_loss {metrics['epoch/val_loss']:.4f}")
                st.last_val = self.emit_values("on_epoch_end", epoch, metrics)
        except Interrupted:
            raise
        except BaseException as e:
            self.emit("on_exception", e)
            raise
        finally:
            bar.close()
        self.emit("on_fit_end")
        return st

    def _read(self, *accumulators, extra: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        """The one host read: all-reduce the accumulators across ranks (DDP), then read once."""
        tensors: dict[str, torch.Tensor] = {}
        for acc in accumulators:
            if self.distributed:
                acc.all_reduce()
            tensors.update(acc.tensors())
        if extra:
            if self.distributed:
                extra = dict(extra)
                stacked = torch.stack([extra[k] for k in extra])
                torch.distributed.all_reduce(stacked, op=torch.distributed.ReduceOp.MAX)
                extra = dict(zip(extra, stacked))
            tensors.update(extra)
        return read_host(tensors)

    def train_epoch(self, epoch: int, bar) -> dict[str, float]:
        st = self.state
        self._bar = bar
        self.model.train()
        if self.sampler is not None:
            self.sampler.set_epoch(epoch, skip=st.batch_in_epoch * self.train_loader.batch_size)
        meter, stats, epoch_meter = Meter(), CollapseStats(), Meter()
        median = StepMedian(keys.LOSS_MEDIAN)
        samples = interval_samples = pending = 0  # pending: steps not yet logged
        t_data = t_step = 0.0
        t_last = time.perf_counter()
        for i, batch in enumerate(self.train_loader, start=st.batch_in_epoch):
            if i >= self.batches_per_epoch:
                break
            t_ready = time.perf_counter()
            t_data += t_ready - t_last
            batch = move(batch, self.device, self.channels_last)
            n = batch_size_of(batch)
            terms, norms, outputs = self.train_step(batch)
            with torch.no_grad():
                meter.update_means({keys.train_key(k): v for k, v in terms.items()}, n)
                epoch_meter.update_means({keys.TOTAL: terms[keys.TOTAL]}, n)
                median.update(terms[keys.TOTAL])
                meter.update_means(norms, 1)
                stats.update(self.task.monitor_view(outputs, batch))
            samples += n
            interval_samples += n
            st.step += 1
            st.batch_in_epoch = i + 1
            bar.update(1)
            t_last = time.perf_counter()
            t_step += t_last - t_ready
            pending += 1
            if st.step % self.log_every == 0:
                self._log_interval(epoch, meter, stats, median, t_data, t_step, interval_samples)
                t_data = t_step = 0.0
                interval_samples = pending = 0
            # under DDP every rank must stop at the same step: they agree at the log interval
            if self.should_stop or (self.interrupt_reason and (not self.distributed or st.step % self.log_every == 0)):
                break
        if pending:  # the epoch's last, partial interval is logged and judged too (every rank has it)
            self._log_interval(epoch, meter, stats, median, t_data, t_step, interval_samples)
        else:
            st.data_seconds, st.step_seconds = st.data_seconds + t_data, st.step_seconds + t_step
        out = self._read(epoch_meter)
        out["_samples"] = samples
        return out

    def _log_interval(self, epoch: int, meter: Meter, stats: CollapseStats, median: StepMedian, t_data: float,
                      t_step: float, samples: int) -> None:
        """One log interval: the host read, the non-finite check, the callbacks; then reset the meters."""
        st = self.state
        stop = torch.full((), float(self.interrupt_reason is not None), device=self.device)  # a fill, not a copy
        # the step-loss median is one rank's; under DDP the largest rank's is read (extra: MAX-reduced)
        values = self._read(meter, stats, extra={"_stop": stop, **self.guard.tensors(), **median.tensors()})
        if values.pop("_stop") and not self.interrupt_reason:
            self.interrupt_reason = "SIGTERM on another rank"
        st.nonfinite_steps = self.guard.check(values, st.step)
        values["lr"] = self.lr_fn(st.step - 1)
        values["train/data_time"] = t_data
        values["train/step_time"] = t_step
        values["train/samples_per_second"] = samples / max(t_data + t_step, 1e-9)
        values["epoch"] = epoch - 1 + st.batch_in_epoch / self.batches_per_epoch
        self._bar.set_postfix_str(f"loss {values.get('train/loss', math.nan):.4f}")
        st.last_train = self.emit_values("on_log", st.step, values)
        meter.reset()
        stats.reset()
        median.reset()
        st.data_seconds, st.step_seconds = st.data_seconds + t_data, st.step_seconds + t_step

    @torch.no_grad()
    def forward_fixed(self) -> FixedBatch | None:
        """The fixed validation batch through the bare model (no DDP collectives), once, in eval mode."""
        if self.fixed_source is None:
            return None
        model = unwrap(self.model)
        was_training = model.training
        model.eval()
        try:
            batch = move(self.fixed_source, self.device, self.channels_last)
            with self.autocast():
                outputs = self.task.forward(model, batch)
            return FixedBatch(batch, outputs, self.task.monitor_view(outputs, batch))
        finally:
            model.train(was_training)

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict[str, float]:
        self.model.eval()
        meter, stats = Meter(), CollapseStats()
        for i, batch in enumerate(self.val_loader):
            if self.max_val_iters and i >= self.max_val_iters:
                break
            batch = move(batch, self.device, self.channels_last)
            n = batch_size_of(batch)
            with self.autocast():
                outputs = self.task.forward(self.model, batch)
                terms = self.criterion(outputs, batch)
            meter.update_means({vk: v for k, v in terms.items() if (vk := keys.val_key(k))}, n)
            for k, ratio in self.task.metrics(outputs, batch).items():
                meter.update(keys.VAL + k, *ratio)
            stats.update(self.task.monitor_view(outputs, batch))
        stats.prefix = keys.VAL
        return self._read(meter, stats)
