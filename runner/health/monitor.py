"""HealthMonitor: feeds the trainer's statistics to the detectors and tells the user, while the run goes.

At every log interval (on_log) and evaluation (on_epoch_end) the monitor passes the host-read
values the trainer already has to runner.health.rules.Rules. It adds no per-step device read;
once per evaluation it runs one forward pass of a fixed validation batch (the identical-predictions
check). For every new finding it:

  - prints it in the terminal (tqdm.write, above the progress bar),
  - sends one W&B alert per finding episode (at most monitor.max_alerts per run),
  - updates the run summary: health/status (healthy | warning | failed), health/findings, health/table,
  - tags the run health:<detector> (and health:<status> at the end),
  - with monitor.on_failure=stop and a failure: saves checkpoints/health_stop.pt (and latest.pt) marked
    with the finding, then stops the run.

Every interval it logs health/<detector> (0 ok, 1 condition holding, 2 finding active) and health/level.
Its state (findings, detector state) is saved in every checkpoint under callbacks.health.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch
from torch.utils.data import default_collate
from tqdm import tqdm

from runner.callbacks import Callback
from runner.config import MonitorConfig
from runner.data import spread_indices
from runner.engine import NonFiniteError, move
from runner.health.advice import ADVICE
from runner.health.findings import Finding, pct, status_of
from runner.health.rules import Rules
from runner.health.table import health_table

LEVEL = {"healthy": 0, "warning": 1, "failed": 2}


def class_balance(task) -> tuple[dict[str, dict[str, float]], dict[str, float], dict[str, float]]:
    """Positive rates measured from the data at start, {class: {split: rate}} from task.describe_data, the
    samples of each split they describe, {split: n} (describe_data's `samples`), and the fraction of each
    split's samples with no positive element at all, {split: fraction} (describe_data's `empty_fraction`)."""
    out: dict[str, dict[str, float]] = {}
    samples: dict[str, float] = {}
    empty: dict[str, float] = {}
    for split in ("train", "val"):
        try:
            desc = task.describe_data(split) or {}
        except NotImplementedError:
            desc = {}
        if isinstance(desc.get("samples"), (int, float)) and not isinstance(desc.get("samples"), bool):
            samples[split] = float(desc["samples"])
        if isinstance(desc.get("empty_fraction"), (int, float)) and not isinstance(desc["empty_fraction"], bool):
            empty[split] = float(desc["empty_fraction"])
        for k, v in desc.items():
            if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
                v = sum(v) / len(v)  # e.g. a rate per lane slot
            if k.endswith("_rate") and isinstance(v, (int, float)) and not isinstance(v, bool):
                out.setdefault(k[: -len("_rate")], {})[split] = float(v)
    return out, samples, empty


INPUT_KEYS = ("image", "bev", "input", "inputs", "x")  # the model's input in a sample dict, first match


def input_tensor(batch: dict) -> torch.Tensor | None:
    """The model's input of a collated batch: a float tensor [N, C, ...] under a usual input key."""
    if not isinstance(batch, dict):
        return None
    for k in INPUT_KEYS:
        x = batch.get(k)
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() >= 2:
            return x
    return None


def input_spread(x: torch.Tensor) -> torch.Tensor:
    """std across samples (per element, averaged) / std of all values; 0 when every sample is the same
    (or everything is zero). A device scalar."""
    x = x.detach().float().flatten(1)
    across = x.std(0).mean()
    overall = x.std()
    # non-finite inputs are not evidence of constant inputs: nan, which the rules skip
    none = torch.where(torch.isfinite(overall), torch.zeros_like(across), torch.full_like(across, float("nan")))
    return torch.where(overall > 0, across / overall.clamp_min(1e-30), none)


def input_stats(dataset, n: int = 32) -> dict[str, Any] | None:
    """Per-channel mean, std, min and max and the spread across samples of a dataset's inputs, from `n`
    evenly spaced samples; None when its samples hold no float input tensor."""
    try:
        m = min(n, len(dataset))
        if m < 2:
            return None
        x = input_tensor(default_collate([dataset[i] for i in spread_indices(len(dataset), m)]))
    except Exception:  # any dataset: a sample that cannot be collated is simply not measured
        return None
    if x is None:
        return None
    x = x.detach().float()
    x = x[torch.isfinite(x.flatten(1)).all(1)]  # a non-finite sample says nothing about the spread
    if x.shape[0] < 2:
        return None
    per = x.transpose(0, 1).flatten(1)  # [C, N * ...]
    return {"mean": per.mean(1).tolist(), "std": per.std(1).tolist(), "min": per.amin(1).tolist(),
            "max": per.amax(1).tolist(), "spread": float(input_spread(x)), "samples": m}


class HealthMonitor(Callback):
    state_key = "health"

    def __init__(self, cfg: MonitorConfig, tracker, val_dataset=None, warmup_steps: int = 0,
                 echo: Callable[[str], None] | None = None):
        self.cfg, self.tracker, self.echo = cfg, tracker, echo or tqdm.write
        warm = cfg.warmup_steps if cfg.warmup_steps is not None else warmup_steps
        self.rules = Rules(cfg, warm)
        self.alerts = 0
        self.balance: dict[str, dict[str, float]] = {}
        self.samples: dict[str, float] = {}  # split -> samples the class balance was measured on
        self.empty: dict[str, float] = {}  # split -> fraction of samples with no positive element
        self.seconds = 0.0  # time spent in the monitor's hooks (bench/health_suite.py reports it)
        self.calls = 0
        self.timings: dict[str, list[float]] = {"fit_start": [], "log": [], "epoch": []}
        self.batch = None
        self.spread: float | None = None  # input spread of the fixed val batch at the last evaluation
        self.inputs: dict[str, dict] = {}  # split -> input statistics measured at start
        self.baseline: dict[str, float] | None = None  # the task's trivial-predictor val metrics, at start
        self.val_dataset = val_dataset  # the fixed samples' source for a trainer without a fixed batch

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer):
        t0 = time.perf_counter()
        if getattr(trainer, "fixed_source", None) is None and self.val_dataset is not None:
            idx = spread_indices(len(self.val_dataset), self.cfg.fixed_samples)
            self.batch = default_collate([self.val_dataset[i] for i in idx]) if len(idx) >= 2 else None
        if not self.balance:
            self.balance, self.samples, self.empty = class_balance(trainer.task)
        self.rules.set_class_balance(self.balance, self.samples, self.empty)
        self.rules.set_grad_clip(getattr(trainer, "grad_clip", 0.0))
        scaler = getattr(trainer, "scaler", None)
        self.rules.set_grad_scaler(scaler is not None and scaler.is_enabled())
        if not self.inputs:
            for split, loader in (("train", trainer.train_loader), ("val", trainer.val_loader)):
                st = input_stats(getattr(loader, "dataset", None)) if hasattr(loader, "dataset") else None
                if st:
                    self.inputs[split] = st
        self.rules.set_input_stats(self.inputs)
        if self.baseline is None:
            try:
                self.baseline = dict(trainer.task.baseline() or {})
            except (NotImplementedError, Exception):  # a task without a usable baseline: the rule stays silent
                self.baseline = {}
        self.rules.set_baseline(self.baseline)
        collapse = self.rules.by_name("collapse")
        if collapse.start_fixed is None:  # not on resume: the reference is the untrained model
            collapse.start_fixed = self.fixed_batch_stats(trainer)
        if self.balance:
            parts = [f"{r} {', '.join(f'{pct(v)} of {s}' for s, v in sp.items())}" for r, sp in self.balance.items()]
            if self.empty:
                parts.append("samples without any positive: " + ", ".join(f"{pct(v)} of {s}" for s, v in self.empty.items()))
            self.echo("[health] class balance measured at start: " + "; ".join(parts))
        # everything measured here, so that `python -m runner.health RUN_DIR --replay` judges with the same inputs
        self.tracker.set_summary({"health/status": self.rules.status(), "health/class_balance": self.balance,
                                  "health/split_samples": self.samples, "health/empty_fraction": self.empty,
                                  "health/input_stats": self.inputs,
                                  "health/start_fixed_std_ratio": collapse.start_fixed,
                                  "health/grad_clip": self.rules.by_name("gradients").clip
                                  if math.isfinite(self.rules.by_name("gradients").clip) else 0.0,
                                  "health/grad_scaler": self.rules.by_name("gradients").scaler,
                                  **{f"baseline/{k}": v for k, v in self.baseline.items()}})
        self._timed(t0, "fit_start")

    def on_log(self, trainer, step, values):
        t0 = time.perf_counter()
        norm = self.param_norm(trainer)
        added = {"health/param_norm": norm} if norm is not None else {}
        new = self.rules.check(step, float(values.get("epoch", trainer.state.epoch)), {**values, **added})
        added.update(self.levels())
        self.handle(trainer, new)
        self._timed(t0, "log")
        return added

    def on_epoch_end(self, trainer, epoch, metrics):
        t0 = time.perf_counter()
        fixed = self.fixed_batch_stats(trainer)
        added = {"health/fixed_std_ratio": fixed} if fixed is not None else {}
        if self.spread is not None:
            added["health/fixed_input_spread"] = self.spread
        new = self.rules.evaluation(trainer.state.step, float(epoch), {**metrics, **added})
        added.update(self.levels())
        self.handle(trainer, new)
        self._timed(t0, "epoch")
        return added

    def on_fit_end(self, trainer):
        self.publish(final=True)

    def on_interrupt(self, trainer, reason):
        self.publish(final=True)

    def on_exception(self, trainer, exc):
        try:
            grads = self.rules.by_name("gradients")
            if isinstance(exc, NonFiniteError) and "nonfinite" not in grads.active:  # stopped before on_log
                st = trainer.state
                f = Finding("gradients", "failed", "nonfinite", st.step, float(st.epoch), "non-finite loss or "
                            "gradients stopped the run", str(exc),
                            ADVICE["nonfinite"].causes, ADVICE["nonfinite"].fixes,
                            onset_step=st.step, values={"nonfinite_steps": float(st.nonfinite_steps)},
                            cause="nonfinite")
                self.rules.findings.append(f)
                self.handle(trainer, [f], stop=False)
            self.publish(final=True)
        except Exception:  # never mask the original error
            pass

    # ------------------------------------------------------------------ pieces
    def _timed(self, t0: float, hook: str) -> None:
        dt = time.perf_counter() - t0
        self.seconds += dt
        self.calls += 1
        self.timings[hook].append(dt)

    def levels(self) -> dict[str, float]:
        lv = self.rules.levels()
        out = {f"health/{k}": float(v) for k, v in lv.items()}
        out["health/level"] = float(LEVEL[self.rules.status()])
        return out

    @torch.no_grad()
    def param_norm(self, trainer) -> float | None:
        """Norm of the parameter vector, on the device: one host read per log interval (not per step)."""
        params = [p.detach() for p in getattr(trainer, "params", []) if p.numel()]
        if not params:
            return None
        return float(torch.linalg.vector_norm(torch.stack([n.float() for n in torch._foreach_norm(params)])))

    def fixed_forward(self, trainer):
        """(inputs batch, MonitorView) of the fixed validation samples: the trainer's own fixed batch
        (trainer.fixed, forwarded once per epoch after evaluate(); at fit start, before any epoch, it is
        forwarded here once), or the monitor's own samples for a trainer that keeps none."""
        if getattr(trainer, "fixed_source", None) is not None:
            fixed = trainer.fixed if trainer.fixed is not None else trainer.forward_fixed()
            return (fixed.batch, fixed.view) if fixed is not None else (None, None)
        if self.batch is None:
            return None, None
        model = trainer.model
        was_training = model.training
        model.eval()
        try:
            batch = move(self.batch, trainer.device)
            with trainer.autocast():
                outputs = trainer.task.forward(model, batch)
            return batch, trainer.task.monitor_view(outputs, batch)
        finally:
            model.train(was_training)

    @torch.no_grad()
    def fixed_batch_stats(self, trainer) -> float | None:
        """Spread of the predictions for the fixed val inputs / spread of their targets (one host read)."""
        self.spread = None
        batch, view = self.fixed_forward(trainer)
        if view is None:
            return None
        pred, target = view.pred.detach().float().flatten(1), view.target.detach().float().flatten(1)
        if view.mask is not None:  # once per evaluation, so boolean indexing (a host sync) is fine here
            keep = view.mask.reshape(-1).bool()
            pred, target = pred[keep], target[keep]
        if pred.shape[0] < 2:
            return None
        pstd, tstd = pred.std(0).mean(), target.std(0).mean()
        k = min(3, pred.shape[0])
        x = input_tensor(batch)
        spread = input_spread(x.to(pstd.device)) if x is not None else pstd.new_full((), float("nan"))
        host = torch.cat([torch.stack([pstd, tstd]), pred[:k].flatten(), target[:k].flatten(),
                          spread.reshape(1).float()]).tolist()
        self.spread = host[-1] if host[-1] == host[-1] else None
        d = pred.shape[1]
        collapse = self.rules.by_name("collapse")
        collapse.sample_rows = [host[2 + i * d: 2 + (i + 1) * d] for i in range(k)]
        collapse.target_rows = [host[2 + k * d + i * d: 2 + k * d + (i + 1) * d] for i in range(k)]
        if host[1] < 1e-8:
            return None  # the fixed targets do not vary: nothing to compare
        return host[0] / host[1]

    def handle(self, trainer, findings: list[Finding], stop: bool = True) -> None:
        if not findings:
            return
        for f in findings:
            self.echo(f.text())
            if f.severity != "note" and self.alerts < self.cfg.max_alerts:
                self.alerts += 1
                self.tracker.alert(title=f.alert_title(), text=f.text(),
                                   level="ERROR" if f.severity == "failed" else "WARN")
            if f.severity != "note":
                self.tracker.add_tags([f"health:{f.detector}"])
        self.publish()
        failure = next((f for f in findings if f.severity == "failed"), None)
        if stop and failure is not None and self.cfg.on_failure == "stop" and not trainer.should_stop:
            self.stop(trainer, failure)

    def publish(self, final: bool = False) -> None:
        findings = self.rules.findings
        status = status_of(findings)
        self.tracker.set_summary({
            "health/status": status,
            "health/findings": [f.to_dict() for f in findings],
            "health/table": health_table(findings, self.balance),
            "health/monitor_seconds": self.seconds,
        })
        if final:
            self.tracker.add_tags([f"health:{status}"])

    def checkpoint_mark(self) -> dict[str, Any]:
        """Top-level `health` entry of every checkpoint (Checkpointing extra_state): resume refuses a
        checkpoint whose status is failed unless forced."""
        failures = [f for f in self.rules.findings if f.severity == "failed"]
        summary = "; ".join(f"{f.detector} at step {f.step}: {f.title}" for f in failures) or self.rules.status()
        return {"health": {"status": self.rules.status(), "summary": summary,
                           "findings": [f.to_dict() for f in self.rules.findings]}}

    def stop(self, trainer, f: Finding) -> None:
        """Save a checkpoint marked with the failure (latest.pt and health_stop.pt), then stop."""
        path = trainer.save_checkpoint("health-stop", extra={"health_stop": f.to_dict(), "health_title": f.title},
                                       name="health_stop.pt")
        if path is not None:
            self.echo(f"[health] on_failure=stop: saved {path} marked with the finding; stopping")
        trainer.should_stop = True
        trainer.state.stop_reason = f"health monitor ({f.detector} at step {f.step}): {f.title}"

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {**self.rules.state_dict(), "alerts": self.alerts, "balance": self.balance, "samples": self.samples,
                "empty": self.empty, "inputs": self.inputs,
                "baseline": self.baseline}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rules.load_state_dict(state)
        self.alerts = int(state.get("alerts", 0))
        self.balance = {k: dict(v) for k, v in state.get("balance", {}).items()}
        self.samples = dict(state.get("samples") or {})
        self.empty = dict(state.get("empty") or {})
        self.inputs = {k: dict(v) for k, v in (state.get("inputs") or {}).items()}
        if state.get("baseline") is not None:
            self.baseline = dict(state["baseline"])
