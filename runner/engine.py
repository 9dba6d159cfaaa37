"""Trainer: the generic step/eval loop. It knows nothing about tasks' meaning or W&B;
it emits events to callbacks (tracking, checkpoints, early stopping, overlays, health).

Host reads happen once per log interval (train) and once per evaluation (val): loss terms,
metrics, gradient norms, non-finite counters and collapse statistics all accumulate on the
device in between. A step whose gradients are not finite is skipped on the device (fused AdamW
`found_inf`), counted, and after `nonfinite_patience` consecutive ones the run stops naming the
loss term that went non-finite first.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn
from tqdm import tqdm

from runner import keys
from runner.checkpoint import unwrap
from runner.health.stats import CollapseStats
from runner.meters import Meter, read_host


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


class Interrupted(Exception):
    """Training stopped on request (SIGTERM, Ctrl-C) after saving; carries the reason."""


class NonFiniteError(Exception):
    """Too many consecutive non-finite steps."""


class EpochSampler(torch.utils.data.Sampler[int]):
    """Deterministic per-epoch order (seed, epoch) that can start mid-epoch; shards for DDP.

    Each rank takes every world-th index of the same permutation (padded to equal length), so
    resuming needs only (epoch, batches done), and all ranks agree without communication.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1):
        self.n, self.seed, self.shuffle, self.rank, self.world = n, seed, shuffle, rank, world
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        per_rank = math.ceil(self.n / self.world)
        order += order[: per_rank * self.world - self.n]  # pad so every rank has as many
        return order[self.rank::self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.skip:])

    def __len__(self) -> int:
        return max(0, math.ceil(self.n / self.world) - self.skip)


def head_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters grouped by top-level child module (the 'heads' of grad/<head>)."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(name.split(".")[0], []).append(p)
    return groups


def move(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    """Host-to-device copy (non-blocking from pinned memory on CUDA); 4D images as NHWC if asked."""
    nb = device.type == "cuda"
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=nb)
            if channels_last and v.dim() == 4 and v.is_floating_point():
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def batch_size_of(batch: dict[str, Any]) -> int:
    return next(iter(v for v in batch.values() if isinstance(v, torch.Tensor))).shape[0]


class Trainer:
    def __init__(self, *, task, model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                 lr_fn: Callable[[int], float], train_loader: Iterable, val_loader: Iterable,
                 device: torch.device, epochs: int, max_train_iters: int | None = None,
                 max_val_iters: int | None = None, log_every: int = 25, grad_clip: float = 1.0,
                 amp: bool = False, amp_dtype: str = "bf16", callbacks: list | None = None,
                 progress: bool = True, state: RunState | None = None, nonfinite_patience: int = 5,
                 distributed: bool = False, channels_last: bool = False):
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
        self.should_stop = False
        self.interrupt_reason: str | None = None
        self.distributed = distributed  # DDP: accumulators are all-reduced before each host read
        sampler = getattr(train_loader, "sampler", None)
        self.sampler = sampler if isinstance(sampler, EpochSampler) else None
        n_batches = len(train_loader) if self.sampler is None else len(self.sampler) // train_loader.batch_size
        if self.sampler is not None and not train_loader.drop_last:
            n_batches = math.ceil(len(self.sampler) / train_loader.batch_size)
        self.batches_per_epoch = min(n_batches, max_train_iters) if max_train_iters else n_batches
        self._consec = torch.zeros((), device=device)  # consecutive non-finite steps, on device
        self._max_consec = torch.zeros((), device=device)
        self._seen_bad = torch.zeros((), dtype=torch.bool, device=device)  # any non-finite step yet
        self._first_finite: torch.Tensor | None = None  # which terms were finite at the first such step
        self._scalar_terms = True
        self._norm_plans: dict[tuple[bool, ...], tuple | None] = {}  # gradient-norm plan per grad pattern
        self._n_bad = torch.zeros((), device=device)  # non-finite (skipped) steps in this process
        self._term_names: list[str] = []

    # ------------------------------------------------------------------ events
    def emit(self, event: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

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
        with self.autocast():
            outputs = self.task.forward(self.model, batch)
            terms = self.criterion(outputs, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["loss"]).backward()
        self.scaler.unscale_(self.optimizer)
        norms, total = self._grad_norms_and_clip()
        bad = ~torch.isfinite(total)
        self._track_nonfinite(bad, terms)
        if not self.scaler.is_enabled():
            self.optimizer.found_inf = bad.float()  # fused AdamW skips the update on the device
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return terms, norms, outputs

    def _grad_norms_and_clip(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """grad/<head> and grad/total (the pre-clip norm), then clip to grad_clip.

        One _foreach_norm over every gradient gives the per-parameter norms; heads are sums of
        their squares (a matmul with a fixed 0/1 matrix), the total is the same vector_norm that
        clip_grad_norm_ computes, and clip_grads_with_norm_ scales by it: no second pass over the
        gradients, a handful of operations whatever the number of heads.
        """
        max_norm = self.grad_clip if self.grad_clip > 0 else float("inf")
        with_grad = tuple(p.grad is not None for p in self.params)
        if with_grad not in self._norm_plans:
            self._norm_plans[with_grad] = self._norm_plan(with_grad)
        plan = self._norm_plans[with_grad]
        if plan is None:  # gradients on several devices or of several dtypes: the general path
            norms = {}
            for head, ps in self.heads.items():
                hg = [p.grad for p in ps if p.grad is not None]
                if hg:
                    norms[f"grad/{head}"] = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(hg)).float())
            total = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
            norms["grad/total"] = total
            return norms, total
        names, heads_of = plan
        params = [p for p in self.params if p.grad is not None]
        if not params:
            total = torch.zeros((), device=self.device)
            return {"grad/total": total}, total
        per_param = torch.stack(torch._foreach_norm([p.grad for p in params]))
        total = torch.linalg.vector_norm(per_param)
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
        norms = dict(zip(names, (heads_of @ per_param.float().square()).sqrt().unbind())) if names else {}
        norms["grad/total"] = total
        return norms, total

    def _norm_plan(self, with_grad: tuple[bool, ...]) -> tuple[list[str], torch.Tensor] | None:
        """(grad/<head> names, [heads, parameters with a gradient] 0/1 matrix); None if the gradients
        are not all on one device with one dtype."""
        params = [p for p, g in zip(self.params, with_grad) if g]
        if len({(p.device, p.dtype) for p in params}) > 1:
            return None
        index = {id(p): i for i, p in enumerate(params)}
        names, rows = [], []
        for head, ps in self.heads.items():
            cols = [index[id(p)] for p in ps if id(p) in index]
            if cols:
                row = torch.zeros(len(params))
                row[cols] = 1.0
                names.append(f"grad/{head}")
                rows.append(row)
        device = params[0].device if params else self.device
        return names, (torch.stack(rows) if rows else torch.zeros(0, len(params))).to(device)

    def _track_nonfinite(self, bad: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        """On the device: consecutive/maximum/total non-finite steps, and the loss terms of the first
        non-finite step (which term went first is worked out at the log interval, see _first_bad)."""
        if not self._term_names:
            self._term_names = [k for k in terms if keys.is_term(k)]
            self._scalar_terms = all(terms[k].dim() == 0 for k in self._term_names)
            self._first_finite = torch.ones(len(self._term_names), dtype=torch.bool, device=bad.device)
        if self._scalar_terms:
            finite = torch.isfinite(torch.stack([terms[k].detach() for k in self._term_names]))
        else:
            finite = torch.stack([torch.isfinite(terms[k].detach()).all() for k in self._term_names])
        take = bad & ~self._seen_bad  # the first non-finite step
        self._first_finite = torch.where(take, finite, self._first_finite)
        self._seen_bad = self._seen_bad | bad
        self._consec = (self._consec + 1) * bad
        self._max_consec = torch.maximum(self._max_consec, self._consec)
        self._n_bad += bad

    def _first_bad(self) -> torch.Tensor:
        """Index into _term_names + ["gradient"] of the first non-finite value (the first non-finite
        term other than the total at the first non-finite step; only the gradient if none); -1 if none."""
        finite = self._first_finite
        if finite is None:
            return torch.tensor(-1.0, device=self.device)
        n = len(self._term_names)
        if n > 1:
            idx = torch.where(finite[1:].all(), torch.tensor(float(n), device=finite.device),
                              (~finite[1:]).float().argmax().float() + 1)
        else:
            idx = torch.tensor(float(n), device=self._seen_bad.device)
        return torch.where(self._seen_bad, idx, torch.tensor(-1.0, device=idx.device))

    # ------------------------------------------------------------------ loops
    def fit(self) -> RunState:
        st = self.state
        total = self.epochs * self.batches_per_epoch
        self._n_bad.fill_(st.nonfinite_steps)
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
                val = self.evaluate(epoch)
                st.epoch, st.batch_in_epoch = epoch, 0
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
        self.model.train()
        if self.sampler is not None:
            self.sampler.set_epoch(epoch, skip=st.batch_in_epoch * self.train_loader.batch_size)
        meter, stats, epoch_meter = Meter(), CollapseStats(), Meter()
        samples = interval_samples = 0
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
                meter.update_means(norms, 1)
                stats.update(self.task.monitor_view(outputs, batch))
            samples += n
            interval_samples += n
            st.step += 1
            st.batch_in_epoch = i + 1
            bar.update(1)
            t_last = time.perf_counter()
            t_step += t_last - t_ready
            if st.step % self.log_every == 0:
                stop = torch.tensor(float(self.interrupt_reason is not None), device=self.device)
                values = self._read(meter, stats, extra={"_max_consec": self._max_consec, "_stop": stop,
                                                         "_first_bad": self._first_bad(), "_n_bad": self._n_bad})
                if values.pop("_stop") and not self.interrupt_reason:
                    self.interrupt_reason = "SIGTERM on another rank"
                self._check_nonfinite(values)
                values["lr"] = self.lr_fn(st.step - 1)
                values["train/data_time"] = t_data
                values["train/step_time"] = t_step
                values["train/samples_per_second"] = interval_samples / max(t_data + t_step, 1e-9)
                values["epoch"] = epoch - 1 + (i + 1) / self.batches_per_epoch
                st.last_train = values
                bar.set_postfix_str(f"loss {values.get('train/loss', math.nan):.4f}")
                self.emit("on_log", st.step, values)
                meter.reset()
                stats.reset()
                st.data_seconds, st.step_seconds = st.data_seconds + t_data, st.step_seconds + t_step
                t_data = t_step = 0.0
                interval_samples = 0
            # under DDP every rank must stop at the same step: they agree at the log interval
            if self.should_stop or (self.interrupt_reason and (not self.distributed or st.step % self.log_every == 0)):
                break
        st.data_seconds, st.step_seconds = st.data_seconds + t_data, st.step_seconds + t_step  # the last part
        out = self._read(epoch_meter)
        out["_samples"] = samples
        return out

    def _check_nonfinite(self, values: dict[str, float]) -> None:
        """Count skipped steps; stop after nonfinite_patience consecutive ones, naming the term."""
        max_consec, first_bad = values.pop("_max_consec"), values.pop("_first_bad")
        self.state.nonfinite_steps = int(values.pop("_n_bad"))
        values["health/nonfinite_steps"] = float(self.state.nonfinite_steps)
        if max_consec >= self.nonfinite_patience:
            names = self._term_names + ["gradient"]
            culprit = names[int(first_bad)] if first_bad >= 0 else "unknown"
            raise NonFiniteError(f"{int(max_consec)} consecutive non-finite steps (limit {self.nonfinite_patience}); "
                                 f"the first non-finite value was {culprit!r}, at or before step {self.state.step}; "
                                 f"lower optim.lr or check the data")

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
                meter.update("val/" + k, *ratio)
            stats.update(self.task.monitor_view(outputs, batch))
        stats.prefix = "val/"
        return self._read(meter, stats)
