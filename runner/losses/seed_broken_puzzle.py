"""Negative control for the puzzle task: the seed's first loss (seed 002), kept to reproduce its failure.

    position_loss = generalized_box_iou_loss(sigmoid(x1, y1, x2, y2), gt_xyxy)
    rotation_loss = CE(rotation_logits, rotation)
    loss          = position_loss + rotation_loss

Use it with model.head=regress and model.box_format=xyxy (the seed's Linear -> ... -> Sigmoid
head). With pieces of 0.1% of the picture, a predicted box that misses the piece gets almost no
GIoU gradient, and the box covering the whole picture scores 1 - IoU ~ 0.999 for *every* input:
the seed's log read `train/position_loss=1.000` for hundreds of batches.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert

from runner.losses.box import generalized_box_iou_loss, paired_iou  # GIoU: torchvision's formula, no host read
from runner.losses.weighting import WeightedSum


class SeedGIoULoss(nn.Module):
    def __init__(self, position_weight: float = 1.0, rotation_weight: float = 1.0):
        super().__init__()
        self.total = WeightedSum({"position_loss": position_weight, "rotation_loss": rotation_weight},
                                 ("position_loss", "rotation_loss"))

    def forward(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        gt_xyxy = box_convert(batch["box"].float(), "cxcywh", "xyxy")
        pred_xyxy = outputs["box_xyxy"].float()
        position = generalized_box_iou_loss(pred_xyxy, gt_xyxy)
        rotation = F.cross_entropy(outputs["rotation_logits"].float(), batch["rotation"])
        with torch.no_grad():
            iou = paired_iou(pred_xyxy, gt_xyxy).mean()
        out = self.total({"position_loss": position, "rotation_loss": rotation}, {"iou": iou})
        out["total_loss"] = out["loss"].detach()
        return out
