"""Occupancy loss (seed 004): sigmoid focal + soft dice + mean matching, fixed config weights.

    focal = torchvision.ops.sigmoid_focal_loss(logits, target, alpha, gamma), summed and divided
            by the number of voxels (focal_norm="mean", the seed's reduction) or by the number of
            occupied voxels (focal_norm="positives", RetinaNet's normalization)
    dice  = 1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s) over the whole batch (s = dice_smooth)
    mean  = (mean(p) - mean(t))^2 over the whole batch (the seed's `MSE(pred.mean(), target.mean())`)
    loss  = focal_weight * focal + dice_weight * dice + mean_weight * mean

Scale of the terms (measured at 0.83% occupancy, see docs/occupancy.md): with the "mean"
reduction the focal term is a rate-weighted average, ~0.003 at p = 0.5 and ~0.04 for an all-zero
prediction (logit -5); dice is ~1 for any prediction that misses the objects; the mean term is
2.4 at p = 0.5 (it dominates the first steps and pulls the mean down to the rate) but only
10 * 0.0083^2 = 7e-4 for an all-zero prediction, so it does not stop a collapse: dice does.
Dice is taken over the batch, not per sample, so an empty scene does not give a dice of ~1 for
any probability mass it holds.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from runner.losses.weighting import WeightedSum


class OccupancyLoss(nn.Module):
    TERMS = ("loss_focal", "loss_dice", "loss_mean")

    def __init__(self, focal_alpha: float = 0.99, focal_gamma: float = 2.0, dice_weight: float = 1.0,
                 mean_weight: float = 10.0, focal_weight: float = 1.0, focal_norm: str = "mean",
                 dice_smooth: float = 1.0):
        super().__init__()
        if focal_norm not in ("mean", "positives"):
            raise ValueError(f"focal_norm must be 'mean' or 'positives', got {focal_norm!r}")
        self.alpha, self.gamma, self.focal_norm, self.smooth = focal_alpha, focal_gamma, focal_norm, dice_smooth
        self.sum = WeightedSum({"loss_focal": focal_weight, "loss_dice": dice_weight, "loss_mean": mean_weight},
                               self.TERMS)

    def forward(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """outputs["logits"] [B, X, Y, Z], batch["occupancy"] {0, 1} [B, X, Y, Z] -> terms."""
        logits = outputs["logits"].float()
        target = batch["occupancy"].to(logits.dtype)
        return self.sum(self.terms(logits, target))

    def terms(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        focal = sigmoid_focal_loss(logits, target, alpha=self.alpha, gamma=self.gamma, reduction="sum")
        denom = target.sum().clamp_min(1.0) if self.focal_norm == "positives" else float(target.numel())
        p = torch.sigmoid(logits)
        inter, p_sum, t_sum = (p * target).sum(), p.sum(), target.sum()
        dice = 1.0 - (2.0 * inter + self.smooth) / (p_sum + t_sum + self.smooth)
        n = float(target.numel())
        mean = (p_sum / n - t_sum / n) ** 2
        return {"loss_focal": focal / denom, "loss_dice": dice, "loss_mean": mean}
