"""The contract between the generic engine and a task.

A task is thin wiring: it names its config sections and builds dataset, model and loss.
It knows nothing about W&B; the engine knows nothing about lanes or voxels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from runner.config import Section

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


class Task:
    """Base class; subclasses set the three config classes and implement the methods."""

    name: ClassVar[str]
    DataConfig: ClassVar[type[Section]] = Section
    ModelConfig: ClassVar[type[Section]] = Section
    LossConfig: ClassVar[type[Section]] = Section

    def __init__(self, cfg):
        self.cfg = cfg

    # -- building
    def dataset(self, split: str) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def model(self) -> nn.Module:
        raise NotImplementedError

    def criterion(self) -> nn.Module:
        """An nn.Module: (outputs, batch) -> {"loss": total, "<term>": value, ...}."""
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

    def draw(self, batch: Batch, outputs: Outputs, i: int) -> np.ndarray:
        """An RGB uint8 overlay of sample i: GT green, prediction red, error yellow."""
        raise NotImplementedError

    def baseline(self) -> dict[str, float]:
        """Val metrics of the trivial predictor (e.g. always the mean target), for comparison."""
        return {}

    def describe_data(self, split: str) -> dict[str, Any]:
        """Statistics of a split measured at start (class balance, occupancy ...)."""
        return {}
