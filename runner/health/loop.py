"""The health monitor in a training loop the user wrote: `runner.health.Monitor`.

    monitor = Monitor(patience=3)                     # the runner's `monitor` config and defaults
    for step, (x, y) in enumerate(loader, 1):
        pred = model(x); loss = loss_fn(pred, y); ...
        monitor.step(pred, y, losses={"loss": loss})  # on the device: no host read
        if step % 25 == 0:
            for finding in monitor.log(step, epoch):  # the one host read of the interval
                ...
    monitor.evaluate(step, epoch)                     # after each evaluation (fed by monitor.eval_step)
    monitor.finish()                                  # final summary; returns the health table

The statistics are the runner's (runner/health/stats.py CollapseStats, runner/meters.py Meter) and the
findings come from the runner's rules (runner.health.rules.Rules) fed the same metric names, so a
finding, its alert and the summary keys (health/status, health/findings, health/table) are the ones the
runner gives. Alerts and summary go to the user's own W&B run (`run=`; by default `wandb.run` if one is
started) through runner/tracking.py. runner/integrations/lightning.py builds on this class.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from pydantic import ValidationError
from torch import Tensor
from tqdm import tqdm

from runner import keys
from runner.config import MonitorConfig, _explain
from runner.errors import UserError
from runner.health.findings import Finding, status_of
from runner.health.rules import Rules
from runner.health.stats import CollapseStats
from runner.health.table import health_table
from runner.meters import Meter, StepMedian, read_host
from runner.tasks.base import MonitorView

Reduce = Callable[[Tensor, str], Tensor]  # (tensor, "sum" | "min" | "max") -> the tensor combined over ranks


def monitor_config(config: MonitorConfig | Mapping[str, Any] | None = None, **overrides: Any) -> MonitorConfig:
    """A MonitorConfig from a MonitorConfig, a dict (the `monitor:` section of a runner config) or
    keyword arguments; a bad key or value is a UserError naming it."""
    if isinstance(config, MonitorConfig):
        base = config.model_dump()
    elif config is None:
        base = {}
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        raise UserError(f"monitor config must be a MonitorConfig or a dict, got {type(config).__name__}")
    try:
        return MonitorConfig.model_validate({**base, **overrides})
    except ValidationError as err:
        raise UserError("monitor: " + _explain(err, MonitorConfig)) from None


def reduce_accumulators(stats: CollapseStats, meter: Meter, reduce: Reduce) -> None:
    """Combine one rank's accumulators with the others' in place, with three collective calls
    (sums, minima, maxima) whatever the number of statistics. Every rank must have seen the same
    statistic names (the same model outputs)."""
    sums: list[Tensor] = []
    if stats.moments is not None:
        sums.append(stats.moments.double())
    names = sorted(stats.rates)
    for name in names:
        acc = stats.rates[name]
        sums += [acc[0].double(), torch.as_tensor(acc[2], dtype=torch.float64, device=acc[0].device).reshape(1)]
    groups = list(meter.groups)
    for key in groups:
        vec, count = meter.groups[key]
        sums += [vec.double(), torch.as_tensor(count, dtype=torch.float64, device=vec.device).reshape(1)]
    if not sums:
        return
    flat = reduce(torch.cat(sums), "sum")
    i = 0
    if stats.moments is not None:
        n = stats.moments.numel()
        stats.moments, i = flat[:n].to(stats.moments.dtype), n
    for name in names:
        acc = stats.rates[name]
        acc[0], acc[2], i = flat[i:i + 3].to(acc[0].dtype), flat[i + 3], i + 4
    for key in groups:
        vec = meter.groups[key][0]
        meter.groups[key] = [flat[i:i + vec.numel()].to(vec.dtype), flat[i + vec.numel()]]
        i += vec.numel() + 1
    if stats.extremes is not None:
        stats.extremes = reduce(stats.extremes, "min")
    if names:
        peaks = reduce(torch.stack([stats.rates[n][1].float() for n in names]), "max")
        for j, name in enumerate(names):
            stats.rates[name][1] = peaks[j]


class Monitor:
    """Collapse detection for a hand-written loop: feed tensors each step, ask at the log interval.

    config: a MonitorConfig, a dict or keyword arguments (the runner's `monitor` section; same defaults).
    run: the W&B run to alert and summarise into; "auto" (default) takes `wandb.run` when the user has
        started one, None sends nothing to W&B.
    echo: prints each finding as it appears (default tqdm.write, above any progress bar); None: silent.
    warmup_steps: steps before the step-level rules judge (monitor.warmup_steps overrides it), e.g.
        the user's learning-rate warm-up.
    """

    def __init__(self, config: MonitorConfig | Mapping[str, Any] | None = None, *, run: Any = "auto",
                 echo: Callable[[str], None] | None = tqdm.write, warmup_steps: int = 0, **overrides: Any):
        self.cfg = monitor_config(config, **overrides)
        warm = self.cfg.warmup_steps if self.cfg.warmup_steps is not None else warmup_steps
        self.rules = Rules(self.cfg, warm)
        self.echo = echo
        self.sink = None
        if run is not None:
            from runner import tracking  # the only module that imports wandb

            run = tracking.active_run() if isinstance(run, str) and run == "auto" else run
            self.sink = tracking.RunSink(run) if run is not None else None
        self.reporting = True  # False on DDP ranks other than 0: accumulate and reduce, judge nothing
        self.alerts = 0
        self.balance: dict[str, dict[str, float]] = {}
        self.samples: dict[str, float] = {}  # split -> samples the class balance was measured on
        self.empty: dict[str, float] = {}  # split -> fraction of samples with no positive element
        self.stats, self.meter = CollapseStats(), Meter()
        self.median = StepMedian(keys.LOSS_MEDIAN)  # of the steps' total loss: the explosion rule's
        self.val_stats, self.val_meter = CollapseStats(keys.VAL), Meter()
        self.train_loss = [0.0, 0.0]  # host-side sum of train/loss x samples over the logged intervals, samples
        self._samples = 0  # samples fed since the last log (a Python number: no device read)

    # ------------------------------------------------------------------ per step (device only)
    @torch.no_grad()
    def step(self, pred: Tensor, target: Tensor, *, mask: Tensor | None = None,
             rates: Mapping[str, tuple[Tensor, Tensor]] | None = None, losses: Mapping[str, Tensor] | None = None,
             weights: Mapping[str, Tensor] | None = None, grads: Mapping[str, Tensor] | None = None,
             n: int | None = None) -> None:
        """One training step's tensors, accumulated on their device (no host read, no sync).

        pred, target: [B, ...] predictions and targets (flattened to vectors per sample).
        mask: optional [B] 0/1 rows to count. rates: name -> (probability, 0/1 target) for sparse or
        rare targets. losses: term -> 0-d tensor ("loss" is the total; "loss/<x>" keys are kept verbatim,
        e.g. loss/sigma_<term> of an uncertainty weighting). weights: term -> effective weight of a
        learnable term. grads: head -> gradient norm ("total" for the whole model).
        """
        b = int(pred.shape[0]) if n is None else int(n)
        self.stats.update(MonitorView(pred, target, dict(rates or {}), mask))
        self._feed(self.meter, keys.train_key, keys.TRAIN, losses, weights, grads, b)
        if losses and keys.TOTAL in losses:
            self.median.update(losses[keys.TOTAL])
        self._samples += b

    @torch.no_grad()
    def eval_step(self, pred: Tensor, target: Tensor, *, mask: Tensor | None = None,
                  rates: Mapping[str, tuple[Tensor, Tensor]] | None = None,
                  losses: Mapping[str, Tensor] | None = None, n: int | None = None) -> None:
        """One validation batch (same arguments as step); read by evaluate()."""
        b = int(pred.shape[0]) if n is None else int(n)
        self.val_stats.update(MonitorView(pred, target, dict(rates or {}), mask))
        self._feed(self.val_meter, keys.val_key, keys.VAL, losses, None, None, b)

    @staticmethod
    def _feed(meter: Meter, name, prefix: str, losses, weights, grads, n: int) -> None:
        """Key names as the runner's engine logs them (runner/keys.py)."""
        means: dict[str, Tensor] = {}
        for k, v in (losses or {}).items():
            if name(k) is not None:  # loss/<x> parameters are not logged at evaluation
                means[name(k)] = v
        for k, v in (weights or {}).items():
            means[prefix + keys.WEIGHT + k] = v
        if means:
            meter.update_means(means, n)
        if grads:
            meter.update_means({keys.GRAD + k: v for k, v in grads.items()}, 1)

    # ------------------------------------------------------------------ at the user's log interval
    def log(self, step: int, epoch: float = 0.0, values: Mapping[str, float] | None = None,
            reduce: Reduce | None = None) -> list[Finding]:
        """Read the interval's statistics (one host read), run the step-level rules, report and return
        the new findings, and start the next interval. `values`: extra host numbers (e.g. {"lr": lr}).
        `reduce` combines the accumulators across DDP ranks first (see reduce_accumulators)."""
        if reduce is not None:
            reduce_accumulators(self.stats, self.meter, reduce)
        tensors = {**self.meter.tensors(), **self.stats.tensors(), **self.median.tensors()}
        if reduce is not None and keys.LOSS_MEDIAN in tensors:  # one rank's median: the largest rank's is read
            tensors[keys.LOSS_MEDIAN] = reduce(tensors[keys.LOSS_MEDIAN].reshape(1), "max").reshape(())
        self.meter.reset()
        self.stats.reset()
        self.median.reset()
        samples, self._samples = self._samples, 0
        if not self.reporting:
            return []
        read = read_host(tensors)
        total = keys.train_key(keys.TOTAL)
        if total in read:
            self.train_loss[0] += read[total] * samples
            self.train_loss[1] += samples
        read.update(values or {})
        read.setdefault("epoch", float(epoch))
        new = self.rules.check(int(step), float(epoch), read)
        self.report(new)
        return new

    def evaluate(self, step: int, epoch: float = 0.0, metrics: Mapping[str, float] | None = None,
                 reduce: Reduce | None = None) -> list[Finding]:
        """After an evaluation: read what eval_step accumulated (one host read), add epoch/train_loss and
        epoch/val_loss, run the evaluation rules, report and return the new findings. `metrics`: the
        user's own validation numbers, named as the runner logs them (e.g. val/done_recall)."""
        if reduce is not None:
            reduce_accumulators(self.val_stats, self.val_meter, reduce)
        tensors = {**self.val_meter.tensors(), **self.val_stats.tensors()}
        self.val_meter.reset()
        self.val_stats.reset()
        if not self.reporting:
            return []
        read = read_host(tensors)
        if keys.val_key(keys.TOTAL) in read:
            read[keys.EPOCH + "val_loss"] = read[keys.val_key(keys.TOTAL)]
        if self.train_loss[1] > 0:
            read[keys.EPOCH + "train_loss"] = self.train_loss[0] / self.train_loss[1]
        self.train_loss = [0.0, 0.0]
        read.update(metrics or {})
        new = self.rules.evaluation(int(step), float(epoch), read)
        self.report(new)
        return new

    # ------------------------------------------------------------------ telling the user
    def report(self, findings: list[Finding]) -> None:
        """Print each finding, alert W&B once per finding episode (at most monitor.max_alerts), tag the
        run health:<detector> and update the summary: what the runner's HealthMonitor does."""
        if not findings:
            return
        for f in findings:
            if self.echo is not None:
                self.echo(f.text())
            if self.sink is None or f.severity == "note":
                continue
            if self.alerts < self.cfg.max_alerts:
                self.alerts += 1
                self.sink.alert(title=f"{f.severity.upper()} {f.detector}: {f.title}"[:250], text=f.text(),
                                level="ERROR" if f.severity == "failed" else "WARN")
            self.sink.add_tags([f"health:{f.detector}"])
        self.publish()

    def publish(self, final: bool = False) -> None:
        if self.sink is None:
            return
        self.sink.set_summary(self.summary())
        if final:
            self.sink.add_tags([f"health:{self.status}"])

    def summary(self) -> dict[str, Any]:
        """health/status, health/findings and health/table, as the runner puts them in the run summary."""
        return {"health/status": self.status, "health/findings": [f.to_dict() for f in self.findings],
                "health/table": self.table()}

    def finish(self) -> str:
        """The final summary and health:<status> tag; returns the health table (print it if you like)."""
        self.publish(final=True)
        return self.table()

    @property
    def findings(self) -> list[Finding]:
        return self.rules.findings

    @property
    def status(self) -> str:
        return status_of(self.rules.findings)

    def failure(self, findings: list[Finding]) -> Finding | None:
        """The first failure among `findings` when monitor.on_failure is stop (the caller stops)."""
        if self.cfg.on_failure != "stop":
            return None
        return next((f for f in findings if f.severity == "failed"), None)

    def table(self) -> str:
        return health_table(self.rules.findings, self.balance)

    def set_class_balance(self, balance: dict[str, dict[str, float]], samples: dict[str, float] | None = None,
                          empty: dict[str, float] | None = None) -> None:
        """{class: {split: positive rate}} measured from the data (the rare-class rule reads it),
        {split: samples measured}: with the counts, a class rarer in one split is called a labelling
        problem only when sampling noise cannot explain it; and {split: fraction of samples without any
        positive element}: most samples empty is a labelling problem (the data rule)."""
        self.balance = {k: dict(v) for k, v in balance.items()}
        self.samples = dict(samples or {})
        self.empty = dict(empty or {})
        self.rules.set_class_balance(self.balance, self.samples, self.empty)

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {**self.rules.state_dict(), "alerts": self.alerts, "balance": self.balance,
                "samples": self.samples, "empty": self.empty,
                "train_loss": list(self.train_loss)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rules.load_state_dict(dict(state))
        self.alerts = int(state.get("alerts", 0))
        self.set_class_balance(state.get("balance", {}), state.get("samples"), state.get("empty"))
        self.train_loss = [float(x) for x in state.get("train_loss", (0.0, 0.0))]
