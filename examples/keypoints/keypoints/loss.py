"""Two named terms, summed with config weights by runner's WeightedSum."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from runner.losses.weighting import WeightedSum


class DiscLoss(nn.Module):
    TERMS = ("loss_xy", "loss_radius")

    def __init__(self, xy_weight: float = 1.0, radius_weight: float = 1.0, beta: float = 0.05):
        super().__init__()
        self.beta = beta
        self.sum = WeightedSum({"loss_xy": xy_weight, "loss_radius": radius_weight}, self.TERMS)

    def forward(self, outputs, batch):
        xy = F.smooth_l1_loss(outputs["xy"].float(), batch["xy"], beta=self.beta)
        radius = F.smooth_l1_loss(outputs["radius"].float(), batch["radius"], beta=self.beta)
        return self.sum({"loss_xy": xy, "loss_radius": radius})
