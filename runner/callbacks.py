"""Small stateful callbacks; the Trainer calls on_<phase> hooks, each callback keeps its own state.

Their order does not matter: on_log / on_epoch_end receive the values (their own copy) and return
the dict of what they add; the trainer merges the returns and only then hands the merged values
to the sinks (`sink = True`: Checkpointing, Tracking). EarlyStopping owns the best epoch and
answers `is_best(epoch)`; Checkpointing asks it. A callback that wants a checkpoint calls
`trainer.save_checkpoint(reason, extra, name)`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import default_collate

from runner import checkpoint as ckpt
from runner.data import spread_indices
from runner.data.loading import batch_size_of
from runner.viz import grid


class Callback:
    state_key: str = ""
    sink: bool = False  # sinks get the merged values after every other callback returned its additions

    def on_fit_start(self, trainer) -> None: ...
    def on_log(self, trainer, step: int, values: dict[str, float]) -> dict[str, float] | None: ...
    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, float]) -> dict[str, float] | None: ...
    def on_fit_end(self, trainer) -> None: ...
    def on_interrupt(self, trainer, reason: str) -> None: ...
    def on_exception(self, trainer, exc: BaseException) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class EarlyStopping(Callback):
    """Track the best value of `monitor`; stop after `patience` epochs without a `min_delta` gain.

    Non-finite values never count as best. With enabled=False it still tracks the best epoch.
    """

    state_key = "early_stopping"

    def __init__(self, monitor: str, mode: str = "min", patience: int = 5, min_delta: float = 0.0,
                 enabled: bool = True):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor, self.mode, self.patience, self.min_delta, self.enabled = monitor, mode, patience, min_delta, enabled
        self.wait = 0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.judged: int | None = None  # the last epoch judged

    def improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta

    def on_fit_start(self, trainer):
        st = trainer.state  # a checkpoint written before this callback kept the best itself
        if self.best_epoch is None and st.best_epoch is not None:
            self.best_metric, self.best_epoch = st.best_metric, st.best_epoch

    def judge(self, trainer, epoch: int, metrics) -> None:
        """Decide once per epoch whether it is the best so far (idempotent: whoever asks first decides)."""
        if self.judged == epoch:
            return
        if self.monitor not in metrics:
            raise KeyError(f"early stopping monitors {self.monitor!r}, which was not logged; "
                           f"available: {sorted(k for k in metrics if not k.startswith('_'))}")
        value = metrics[self.monitor]
        if not math.isfinite(value):
            self.wait += 1
        elif self.improved(value, self.best_metric):
            self.best_metric, self.best_epoch = value, epoch
            self.wait = 0
        else:
            self.wait += 1
        self.judged = epoch
        st = trainer.state  # the run's record (summary, checkpoint header)
        st.best_metric, st.best_epoch = self.best_metric, self.best_epoch

    def is_best(self, trainer, epoch: int, metrics) -> bool:
        """Is `epoch` the best so far? (Checkpointing asks this for best.pt.)"""
        self.judge(trainer, epoch, metrics)
        return self.best_epoch == epoch

    def on_epoch_end(self, trainer, epoch, metrics):
        self.judge(trainer, epoch, metrics)
        if self.enabled and self.wait >= self.patience:
            trainer.state.stop_reason = (f"early stopping: {self.monitor} has not improved for {self.wait} epochs; "
                                         f"best {self.best_metric:.4g} at epoch {self.best_epoch}")
            trainer.should_stop = True
        return {"epoch/best_epoch": self.best_epoch if self.best_epoch is not None else math.nan}

    def state_dict(self):
        return {"wait": self.wait, "best_metric": self.best_metric, "best_epoch": self.best_epoch,
                "judged": self.judged}

    def load_state_dict(self, state):
        self.wait = int(state["wait"])
        self.best_metric, self.best_epoch = state.get("best_metric"), state.get("best_epoch")
        self.judged = state.get("judged")


class Overlays(Callback):
    """Each `every` epochs, draw `n_samples` of the trainer's fixed val batch (trainer.fixed, forwarded
    once per epoch by the trainer) into one grid image."""

    def __init__(self, tracker, n_samples: int, every: int = 1):
        self.tracker, self.n_samples, self.every = tracker, n_samples, every
        self.last_path: Path | None = None

    def on_epoch_end(self, trainer, epoch, metrics):
        fixed = trainer.fixed
        if fixed is None or self.n_samples < 1 or epoch % self.every:
            return
        n_all = batch_size_of(fixed.batch)
        pick = spread_indices(n_all, self.n_samples)
        host = lambda d: {k: (v.float() if v.is_floating_point() else v).cpu() if torch.is_tensor(v) else v  # noqa: E731
                          for k, v in d.items()}
        batch, outputs = host(fixed.batch), host(fixed.outputs)
        tiles = [trainer.task.draw(batch, outputs, i) for i in pick]
        image = grid(tiles, cols=2 if len(tiles) > 1 else 1)
        self.last_path = self.tracker.log_image("val/overlays", image, f"epoch {epoch}: fixed val samples",
                                                step=trainer.state.step, epoch=epoch)


class Checkpointing(Callback):
    """Save latest every epoch, best when early stopping says so, periodic every `save_every`; upload
    as artifacts. A sink: it runs after the other callbacks, so the checkpoint holds their state."""

    sink = True

    def __init__(self, store: ckpt.CheckpointStore, tracker, config: dict, run_id: str, save_every: int = 1,
                 upload: bool = True, criterion=None, extra_state=None, best=None):
        self.store, self.tracker, self.config, self.run_id = store, tracker, config, run_id
        self.save_every, self.upload, self.criterion = save_every, upload, criterion
        self.extra_state = extra_state or (lambda: {})
        self.best = best  # answers is_best(trainer, epoch, metrics) (EarlyStopping)

    def full_state(self, trainer, **marks) -> dict[str, Any]:
        st = trainer.state
        return {
            "model": ckpt.unwrap(trainer.model).state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            "criterion": self.criterion.state_dict() if self.criterion is not None else {},
            "rng": ckpt.rng_state(),
            "run_state": st.state_dict(),
            "step": st.step, "epoch": st.epoch,
            "best_metric": st.best_metric, "best_epoch": st.best_epoch,
            "callbacks": {cb.state_key: cb.state_dict() for cb in trainer.callbacks if cb.state_key},
            "config": self.config, "run_id": self.run_id,
            **self.extra_state(), **marks,
        }

    def on_epoch_end(self, trainer, epoch, metrics):
        is_best = self.best is not None and self.best.is_best(trainer, epoch, metrics)
        periodic = epoch % self.save_every == 0
        state = self.full_state(trainer, val_metrics={k: v for k, v in metrics.items() if isinstance(v, float)})
        paths = self.store.save(state, periodic_epoch=epoch if periodic else None, best=is_best)
        if self.upload and self.tracker.enabled:
            aliases = ["latest", f"epoch-{epoch}"] + (["best"] if is_best else [])
            meta = {"epoch": epoch, "step": trainer.state.step,
                    "val_loss": metrics.get("epoch/val_loss"), "config": self.config}
            self.tracker.log_checkpoint(paths[0], aliases, meta)

    def save_checkpoint(self, trainer, reason: str, extra: dict[str, Any], name: str | None = None) -> Path:
        """latest.pt now (mid-epoch if need be) with `extra`, and a copy as `name` if given; the copy
        (or latest.pt) is uploaded with the alias `reason`. Serves trainer.save_checkpoint."""
        state = self.full_state(trainer, **extra)
        path = self.store.save(state)[0]
        if name is not None:
            path = ckpt.save_atomic({"format_version": ckpt.FORMAT_VERSION, **state}, self.store.dir / name)
        if self.upload and self.tracker.enabled:
            try:
                self.tracker.log_checkpoint(path, ([] if name else ["latest"]) + [reason],
                                            {"epoch": trainer.state.epoch, "step": trainer.state.step, "reason": reason,
                                             **{k: v for k, v in extra.items() if isinstance(v, (str, int, float))}})
            except Exception:  # the local file is what matters; never mask the original error
                pass
        return path

    def save_latest(self, trainer, reason: str) -> Path:
        """Save (and upload) latest.pt now, mid-epoch if need be, marked interrupted with the reason."""
        return self.save_checkpoint(trainer, "interrupted", {"interrupted": reason})

    def on_interrupt(self, trainer, reason):
        self.save_latest(trainer, reason)

    def on_exception(self, trainer, exc):
        """A crash still leaves (and uploads) a loadable latest checkpoint."""
        self.save_latest(trainer, type(exc).__name__)


def fixed_batch(dataset, n: int) -> dict | None:
    """n evenly spaced samples of `dataset`, collated on the host (the Trainer's fixed_batch)."""
    idx = spread_indices(len(dataset), n)
    return default_collate([dataset[i] for i in idx]) if idx else None


class Tracking(Callback):
    """Forward scalars to the tracker: interval scalars at their step, epoch scalars at epoch end.
    A sink: it logs the merged values, after every other callback added its own."""

    sink = True

    def __init__(self, tracker):
        self.tracker = tracker

    def on_log(self, trainer, step, values):
        self.tracker.log(values, step=step)

    def on_epoch_end(self, trainer, epoch, metrics):
        self.tracker.log({k: v for k, v in metrics.items() if not k.startswith("_")}, step=trainer.state.step)

    def on_fit_end(self, trainer):
        st = trainer.state
        self.tracker.set_summary({"best_epoch": st.best_epoch, "best_metric": st.best_metric,
                                  "epochs_completed": st.epoch, "steps": st.step,
                                  "stop_reason": st.stop_reason or "completed"})
