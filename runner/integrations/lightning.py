"""PyTorch Lightning: `Trainer(callbacks=[HealthCallback()])` runs the runner's health rules on a LightningModule.

What to compare: `training_step` and `validation_step` return a dict with the loss and the tensors
to compare, e.g. `{"loss": loss, "pred": pred, "target": y}`; optional keys `mask`, `rates`
(name -> (probability, 0/1 target)), `losses` (term -> 0-d tensor), `weights` (term -> effective
learnable weight). A module that would rather not return them defines
`health_view(self, batch, outputs) -> dict` with the same keys; it wins over the output dict.

At every `log_every_n_steps` (the trainer's) the statistics are reduced across ranks with the
strategy's reduce (one host read per interval on rank 0), the rules run on rank 0 and the new
findings are printed and, with a WandbLogger, sent as alerts to the logger's run, whose summary gets
health/status, health/findings and health/table. After each validation epoch the evaluation rules run.
At the end of fit rank 0 prints the health table. With `on_failure="stop"` a failure saves
`health_stop.ckpt` through `trainer.save_checkpoint` (this callback's state holds the finding), and
rank 0's decision is broadcast so every rank stops at the same step.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Mapping

if importlib.util.find_spec("lightning") is None:  # before any heavy import: the message comes at once
    raise ImportError("runner.integrations.lightning needs PyTorch Lightning: "
                      "pip install 'runner[integrations]' (or pip install lightning)")

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.loggers import WandbLogger  # noqa: E402

from runner.config import MonitorConfig  # noqa: E402
from runner.errors import UserError
from runner.health.loop import Monitor

VIEW_KEYS = ("mask", "rates", "losses", "weights")


class HealthCallback(pl.Callback):
    """config / keyword arguments: the runner's `monitor` section (runner.config.MonitorConfig).
    grad_norm: log grad/total (the gradient norm before the optimizer step, on the device) for the
    gradient rule."""

    def __init__(self, config: MonitorConfig | Mapping[str, Any] | None = None, *, grad_norm: bool = True,
                 **overrides: Any):
        self.monitor = Monitor(config, run=None, **overrides)
        self.cfg = self.monitor.cfg
        self.grad_norm = grad_norm
        self.stopped: dict[str, Any] | None = None  # the finding that stopped the run
        self._grad: torch.Tensor | None = None
        self._last_log = -1

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.monitor.reporting = trainer.is_global_zero
        self.monitor.echo = self.monitor.echo if trainer.is_global_zero else None
        if trainer.is_global_zero and self.monitor.sink is None:
            logger = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
            if logger is not None:
                from runner.tracking import RunSink

                self.monitor.sink = RunSink(logger.experiment)

    # ------------------------------------------------------------------ what to compare
    @staticmethod
    def view(pl_module, batch, outputs) -> dict[str, Any] | None:
        hook = getattr(pl_module, "health_view", None)
        got = hook(batch, outputs) if callable(hook) else outputs
        if got is None:
            return None
        if not isinstance(got, Mapping) or "pred" not in got or "target" not in got:
            raise UserError(f"{type(pl_module).__name__}: for HealthCallback, training_step/validation_step must "
                            "return a dict with 'pred' and 'target' (or define health_view(batch, outputs))")
        return got

    def _feed(self, fn, pl_module, batch, outputs, **extra) -> None:
        v = self.view(pl_module, batch, outputs)
        if v is None:
            return
        losses = dict(v.get("losses") or {})
        if "loss" not in losses and isinstance(v.get("loss"), torch.Tensor):
            losses["loss"] = v["loss"]
        kw = {k: v[k] for k in VIEW_KEYS if k in v and k not in ("losses",)}
        if fn == self.monitor.eval_step:
            kw.pop("weights", None)
        fn(v["pred"], v["target"], losses=losses, **kw, **extra)

    # ------------------------------------------------------------------ hooks
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self.grad_norm:
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:
            with torch.no_grad():
                self._grad = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        grads, self._grad = ({"total": self._grad} if self._grad is not None else None), None
        self._feed(self.monitor.step, pl_module, batch, outputs, grads=grads)
        step = trainer.global_step
        if step == self._last_log or step % max(1, trainer.log_every_n_steps) != 0:
            return
        self._last_log = step
        epoch = trainer.current_epoch + (batch_idx + 1) / max(1, _batches(trainer))
        lr = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups][:1]
        new = self.monitor.log(step, epoch, {"lr": float(lr[0])} if lr else None, reduce=self._reducer(trainer))
        self._maybe_stop(trainer, new)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self._feed(self.monitor.eval_step, pl_module, batch, outputs)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        new = self.monitor.evaluate(trainer.global_step, float(trainer.current_epoch + 1),
                                    reduce=self._reducer(trainer))
        self._maybe_stop(trainer, new)

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            table = self.monitor.finish()
            if self.monitor.echo is not None:
                self.monitor.echo("[health] run health:\n" + table)

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _reducer(trainer):
        if trainer.world_size <= 1:
            return None
        return lambda t, op: trainer.strategy.reduce(t, reduce_op=op)

    def _maybe_stop(self, trainer, new) -> None:
        failure = self.monitor.failure(new) if trainer.is_global_zero else None
        if self.cfg.on_failure != "stop":
            return
        failure = failure.to_dict() if failure is not None else None
        if trainer.world_size > 1:
            failure = trainer.strategy.broadcast(failure, src=0)  # every rank stops at the same step
        if failure is None or self.stopped is not None:
            return
        self.stopped = failure
        root = getattr(trainer.checkpoint_callback, "dirpath", None) or trainer.default_root_dir
        path = os.path.join(root, "health_stop.ckpt")
        trainer.save_checkpoint(path)  # collective under DDP; rank 0 writes it, with this callback's state
        if self.monitor.echo is not None:
            self.monitor.echo(f"[health] on_failure=stop: saved {path} marked with the finding; stopping")
        trainer.should_stop = True

    # ------------------------------------------------------------------ Lightning callback state
    def state_dict(self) -> dict[str, Any]:
        return {**self.monitor.state_dict(), "stopped": self.stopped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state_dict)
        self.stopped = state_dict.get("stopped")


def _batches(trainer) -> int:
    n = trainer.num_training_batches
    return int(n) if isinstance(n, (int, float)) and n != float("inf") else 1
