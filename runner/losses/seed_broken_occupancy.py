"""The seed 004 loss the seed blamed, kept as a negative control: BCE with pos_weight 10.

    loss = mean over voxels of -(pos_weight * t * log p + (1 - t) * log(1 - p))

What the math says (docs/occupancy.md has the measurements): for a voxel occupied with
probability q this loss is minimised at p = w q / (w q + 1 - q) >= q, so at its optimum the
mean prediction sits *above* the occupancy rate (7.7% for a constant predictor at 0.83%, w = 10),
never below it. A collapse under this loss therefore comes from the optimisation path or from
empty targets, not from the loss's optimum; the `_seed_broken` config shows what it does here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from runner.losses.weighting import WeightedSum


class WeightedBCELoss(nn.Module):
    TERMS = ("loss_bce",)

    def __init__(self, pos_weight: float = 10.0):
        super().__init__()
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))
        self.sum = WeightedSum({"loss_bce": 1.0}, self.TERMS)

    def forward(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = outputs["logits"].float()
        target = batch["occupancy"].to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)
        return self.sum({"loss_bce": bce})
