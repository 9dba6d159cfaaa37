"""Puzzle position + rotation loss (seed 002, as fixed).

    position_loss = w_ciou * CIoU(box_xyxy, gt_xyxy)          torchvision.ops.complete_box_iou_loss
                  + w_l1   * SmoothL1(box, gt)                 on the model's parametrization
                  + w_cmse * MSE(centre, gt centre)            optional (seed advice 2)
                  + w_var  * relu(min_var - Var_batch(centre)) optional variance penalty (seed advice 4)
    rotation_loss = CE(rotation_logits, rotation)
    heatmap_loss  = CE(heatmap logits, cell holding the true centre)   optional, detection-style
    loss          = w_pos * position_loss + w_rot * rotation_loss + w_heat * heatmap_loss

position_loss is on the seed's scale (its log read 1.000 with GIoU and ~0.6 after adding
SmoothL1), so runs compare with it directly; the heatmap term is kept apart for that reason.

Why CIoU and not GIoU: for the seed's tiny pieces (0.1% of the area) a predicted box that does
not overlap the truth gets a GIoU gradient of ~0.08 per coordinate but a CIoU gradient of ~0.9
(CIoU adds the normalized centre distance), and GIoU is minimised to ~0.999 by a box covering
the whole picture, which is where the seed's loss sat. SmoothL1 gives each coordinate a direct
pull; its beta is in normalized units (0.02 = ~4 px of a 192 px wide puzzle), so beyond a few
pixels it acts like L1 and does not fade as the error shrinks, which it does with beta=1.

Returns {"loss", "position_loss", "rotation_loss", "heatmap_loss" (unweighted),
"weighted/<each>", "total_loss" (= loss, detached), "position/<term>" (unweighted),
"weighted/position/<term>", "iou" (diagnostic, no grad)}.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert

from runner.losses.weighting import WeightedSum

POSITION_TERMS = ("ciou", "smooth_l1", "center_mse", "variance")
TOTAL_TERMS = ("position_loss", "rotation_loss", "heatmap_loss")


def paired_iou(a_xyxy: Tensor, b_xyxy: Tensor) -> Tensor:
    """IoU of row i of a with row i of b, [N]; inverted boxes count as empty."""
    wh_a = (a_xyxy[:, 2:] - a_xyxy[:, :2]).clamp_min(0)
    wh_b = (b_xyxy[:, 2:] - b_xyxy[:, :2]).clamp_min(0)
    lt = torch.maximum(a_xyxy[:, :2], b_xyxy[:, :2])
    rb = torch.minimum(a_xyxy[:, 2:], b_xyxy[:, 2:])
    inter = _area((rb - lt).clamp_min(0))
    union = _area(wh_a) + _area(wh_b) - inter
    return inter / union.clamp_min(1e-12)


def _area(wh: Tensor) -> Tensor:
    """w * h of [N, 2] sizes. Not wh.prod(1): prod's backward on CUDA asks the host whether any factor is 0
    (a stream sync every step; measured on an H200 by bench/cuda_check.py), and clamped overlaps often are."""
    return wh[:, 0] * wh[:, 1]


def _inter_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """torchvision.ops._utils._loss_inter_union without its boolean-mask assignment, which on a GPU
    reads the host (nonzero) every step; clamping at 0 gives the same values."""
    inter = _area((torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp_min(0))
    return inter, _area(a[:, 2:] - a[:, :2]) + _area(b[:, 2:] - b[:, :2]) - inter


def generalized_box_iou_loss(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """Mean of torchvision.ops.generalized_box_iou_loss, the same formula, free of host reads."""
    inter, union = _inter_union(a, b)
    hull = _area(torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2]))
    return (1 - inter / (union + eps) + (hull - union) / (hull + eps)).mean()


def complete_box_iou_loss(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """Mean of torchvision.ops.complete_box_iou_loss, the same formula, free of host reads."""
    inter, union = _inter_union(a, b)
    iou = inter / (union + eps)
    lo, hi = torch.minimum(a[:, :2], b[:, :2]), torch.maximum(a[:, 2:], b[:, 2:])
    diag = ((hi - lo) ** 2).sum(1) + eps
    centre = (((a[:, :2] + a[:, 2:]) - (b[:, :2] + b[:, 2:])) / 2).pow(2).sum(1)
    wh_a, wh_b = a[:, 2:] - a[:, :2], b[:, 2:] - b[:, :2]
    v = (4 / torch.pi ** 2) * (torch.atan(wh_b[:, 0] / wh_b[:, 1]) - torch.atan(wh_a[:, 0] / wh_a[:, 1])) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return (1 - iou + centre / diag + alpha * v).mean()


def heatmap_target(box: Tensor, h: int, w: int) -> Tensor:
    """Flat index of the heatmap cell holding each box centre, [B] long."""
    col = (box[:, 0] * w).long().clamp(0, w - 1)
    row = (box[:, 1] * h).long().clamp(0, h - 1)
    return row * w + col


class PuzzleLoss(nn.Module):
    def __init__(self, ciou_weight: float = 0.5, smooth_l1_weight: float = 0.5, smooth_l1_beta: float = 0.02,
                 center_mse_weight: float = 0.0, variance_weight: float = 0.0, min_variance: float = 0.01,
                 heatmap_weight: float = 0.0, position_weight: float = 1.0, rotation_weight: float = 1.0,
                 box_format: str = "cxcywh"):
        super().__init__()
        if box_format not in ("cxcywh", "xyxy"):
            raise ValueError(f"box_format must be 'cxcywh' or 'xyxy', got {box_format!r}")
        self.beta, self.min_variance, self.box_format = smooth_l1_beta, min_variance, box_format
        self.position = WeightedSum({"ciou": ciou_weight, "smooth_l1": smooth_l1_weight,
                                     "center_mse": center_mse_weight, "variance": variance_weight}, POSITION_TERMS)
        self.total = WeightedSum({"position_loss": position_weight, "rotation_loss": rotation_weight,
                                  "heatmap_loss": heatmap_weight}, TOTAL_TERMS)

    def forward(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        gt = batch["box"].float()  # (cx, cy, w, h)
        gt_xyxy = box_convert(gt, "cxcywh", "xyxy")
        pred, pred_xyxy = outputs["box"].float(), outputs["box_xyxy"].float()
        if self.box_format == "xyxy":
            l1 = F.smooth_l1_loss(pred_xyxy, gt_xyxy, beta=self.beta)
        else:
            l1 = F.smooth_l1_loss(pred, gt, beta=self.beta)
        centre = pred[:, :2]
        if centre.shape[0] > 1:
            variance = F.relu(self.min_variance - centre.var(0).mean())
        else:
            variance = centre.sum() * 0.0
        heat = outputs["heatmap_logits"].float()
        target = heatmap_target(gt, *heat.shape[-2:])
        terms = {
            "ciou": complete_box_iou_loss(pred_xyxy, gt_xyxy),
            "smooth_l1": l1,
            "center_mse": F.mse_loss(centre, gt[:, :2]),
            "variance": variance,
        }
        pos = self.position(terms)
        rotation = F.cross_entropy(outputs["rotation_logits"].float(), batch["rotation"])
        heatmap = F.cross_entropy(heat.flatten(1), target)
        with torch.no_grad():
            iou = paired_iou(pred_xyxy, gt_xyxy).mean()
        out = self.total({"position_loss": pos["loss"], "rotation_loss": rotation, "heatmap_loss": heatmap},
                         {"iou": iou})
        out["total_loss"] = out["loss"].detach()
        for k in POSITION_TERMS:
            out[f"position/{k}"] = pos[k].detach()
            out[f"weighted/position/{k}"] = pos[f"weighted/{k}"]
        return out
