"""The contract between the generic engine and a task (docs/own-task.md).

A task is thin wiring: it names its config sections and builds dataset, model and loss.
It knows nothing about W&B; the engine knows nothing about lanes or voxels.

Required: dataset(split), model(), criterion(), monitor_view(outputs, batch). Everything else
has a generic default: forward = model(batch["image"]); no metrics beyond the loss terms; no
overlay; baseline = the mean-target predictor's error on monitor_view targets; describe_data =
sample count, target spread and class balance measured from samples of the dataset.

Device discipline: every tensor a task hands the engine (loss terms, monitor view, metric
numerators and denominators) lives on the device of its inputs, and forward, criterion,
monitor_view and metrics never read the host (no .item(), .tolist(), float(t), bool(t),
torch.tensor(python_number) on the CPU). tests/test_task_contract.py checks both on the meta device.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import functools

import numpy as np
import torch
from torch import Tensor, nn

from runner.config import Section
from runner.data import spread_indices
from runner.errors import UserError

Batch = dict[str, Tensor]
Outputs = dict[str, Tensor]


@dataclass
class MonitorView:
    """What the collapse statistics compare, all on the device, no grad.

    pred, target: [B, D] prediction and target vectors. pred/std is the std across rows,
        averaged over D.
    mask: optional [B] bool/0-1 tensor; rows with 0 are left out (e.g. done samples have no next
        position). Use it rather than boolean indexing, which forces a host sync on a GPU.
    rates: name -> (probability, binary target), any equal shapes, for sparse or rare targets
        (occupancy voxels, the done flag). Gives pred/<name>_rate (p > 0.5), pred/<name>_mean,
        pred/<name>_max and target/<name>_rate.
    """

    pred: Tensor
    target: Tensor
    rates: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    mask: Tensor | None = None


REFERENCE_SAMPLES = 256  # samples the generic describe_data() and baseline() read per split


class TermsLoss(nn.Module):
    """A criterion given as a plain function, as a module (so it moves with .to(device))."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, outputs, batch):
        return self.fn(outputs, batch)


def as_terms(out, where: str = "criterion") -> dict[str, Tensor]:
    """A criterion's output as the engine reads it: a tensor is the single term `loss`; a dict must hold `loss`."""
    if torch.is_tensor(out):
        return {"loss": out}
    if isinstance(out, dict) and torch.is_tensor(out.get("loss")):
        return out
    got = f"a dict with keys {sorted(out)}" if isinstance(out, dict) else type(out).__name__
    raise UserError(f"{where} must return a loss tensor or a dict of named terms with 'loss', got {got}")


def _terms_hook(module, args, out):
    return as_terms(out, f"criterion {type(module).__name__}")


def terms_criterion(crit) -> nn.Module:
    """The task's criterion as a module whose output always is {"loss": ..., "<term>": ...}.

    A forward hook normalizes the output, so the module (and its state_dict keys) stay the
    task's own."""
    if not isinstance(crit, nn.Module):
        if not callable(crit):
            raise UserError(f"criterion() must return an nn.Module or a function (outputs, batch) -> loss, "
                            f"got {type(crit).__name__}")
        crit = TermsLoss(crit)
    if not getattr(crit, "_runner_terms_hook", False):
        crit.register_forward_hook(_terms_hook)
        crit._runner_terms_hook = True
    return crit


class Task:
    """Base class; subclasses set the three config classes and implement the methods."""

    name: ClassVar[str] = ""
    DataConfig: ClassVar[type[Section]] = Section
    ModelConfig: ClassVar[type[Section]] = Section
    LossConfig: ClassVar[type[Section]] = Section

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("criterion")
        if own is not None and not getattr(own, "_terms_wrapped", False):
            @functools.wraps(own)
            def criterion(self):
                return terms_criterion(own(self))
            criterion._terms_wrapped = True
            cls.criterion = criterion
        if not cls.__dict__.get("name"):
            cls.name = cls.__name__

    def __init__(self, cfg):
        self.cfg = cfg
        self._views: dict[str, list] = {}

    # -- building
    def dataset(self, split: str) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def model(self) -> nn.Module:
        raise NotImplementedError

    def criterion(self) -> nn.Module:
        """An nn.Module (or a function) (outputs, batch) -> a loss tensor, or {"loss": total, "<term>": value, ...}.

        A tensor is logged as the single term `loss`. runner.losses.weighting.WeightedSum builds
        the dict from named terms and config weights."""
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: Batch) -> Outputs:
        return model(batch["image"])

    # -- monitoring
    def monitor_view(self, outputs: Outputs, batch: Batch) -> MonitorView:
        raise NotImplementedError

    def metrics(self, outputs: Outputs, batch: Batch) -> dict[str, tuple]:
        """name -> (numerator, denominator[, empty]) device tensors; logged: sum(num)/sum(den).

        `empty` (a float) is reported while the denominator is 0, e.g. 0.0 for the precision of a
        class never predicted; without it such a metric is left out of the log.
        """
        return {}

    def draw(self, batch: Batch, outputs: Outputs, i: int) -> np.ndarray | None:
        """An RGB uint8 overlay of sample i (batch and outputs on the CPU): GT green, prediction red,
        error yellow. None (the default): no overlay; the run says so once at start."""
        return None

    @classmethod
    def has_overlay(cls) -> bool:
        return cls.draw is not Task.draw

    @classmethod
    def overlay_note(cls) -> str:
        return (f"overlays off: task {cls.name} defines no draw(batch, outputs, i); return an RGB uint8 "
                f"image from it to get val/overlays (docs/own-task.md)")

    # -- references measured from the data (generic defaults)
    def reference_views(self, split: str) -> list[MonitorView]:
        """monitor_view()s of up to REFERENCE_SAMPLES evenly spaced samples of a split, on the CPU.

        Targets come from the batch; the outputs of a freshly built model only fill the `pred`
        side, which the references below never read. Cached per split."""
        if split not in self._views:
            ds = self.dataset(split)
            idx = spread_indices(len(ds), REFERENCE_SAMPLES)
            model, views = self.model().eval(), []
            bs = max(1, min(getattr(getattr(self.cfg, "train", None), "batch_size", 16), 64))
            with torch.no_grad():
                for i in range(0, len(idx), bs):
                    batch = torch.utils.data.default_collate([ds[j] for j in idx[i:i + bs]])
                    views.append(self.monitor_view(self.forward(model, batch), batch))
            self._views[split] = views
        return self._views[split]

    @staticmethod
    def _targets(views: list[MonitorView]) -> Tensor:
        rows = []
        for v in views:
            t = v.target.float().flatten(1)
            rows.append(t if v.mask is None else t[v.mask.bool()])
        return torch.cat(rows) if rows else torch.zeros(0, 0)

    def baseline(self) -> dict[str, float]:
        """Val metrics of the trivial predictor, for comparison. Default: the mean-target predictor
        (every sample gets the train split's mean monitor_view target): its mean absolute error."""
        try:
            train, val = self._targets(self.reference_views("train")), self._targets(self.reference_views("val"))
        except NotImplementedError:
            return {}
        if not len(train) or not len(val):
            return {}
        err = (val - train.mean(0)).abs()
        return {"mean_target_mae": float(err.mean()), "mean_target_rmse": float(err.pow(2).mean().sqrt())}

    def describe_data(self, split: str) -> dict[str, Any]:
        """Statistics of a split measured at start. Default, from samples of any dataset: the
        spread of the monitor_view targets (target_std, as gt/std is measured) and the positive
        rate of each `rates` target (<name>_rate: the class balance the health rules read)."""
        n = len(self.dataset(split))
        views = self.reference_views(split)
        out: dict[str, Any] = {"samples": n}
        t = self._targets(views)
        if len(t) > 1:
            out["target_std"] = float(t.std(0).mean())
        for name in (views[0].rates if views else {}):
            target = torch.cat([v.rates[name][1].float().flatten() for v in views])
            out[f"{name}_rate"] = float((target > 0.5).float().mean()) if target.numel() else 0.0
        return out
