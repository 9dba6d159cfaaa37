"""Next-object loss (seed 003): funnel distance loss on (x, y) + weighted done BCE.

Funnel on the L1 distance d = |dx| + |dy| (normalized units), threshold t:
    d < t:  d^2                 (fine localization)
    d >= t: 2 t d - t^2         (linear; value and slope continuous at d = t)
The seed's version (`t*d + t^2` above t) jumps by t^2 at the threshold and has *half* the slope
there, so its "strong linear penalty" was weaker than the quadratic it replaced.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from runner.losses.weighting import WeightedSum


def funnel(d: Tensor, threshold: float) -> Tensor:
    return torch.where(d < threshold, d * d, 2 * threshold * d - threshold * threshold)


class PointerLoss(nn.Module):
    TERMS = ("loss_spatial", "loss_done")

    def __init__(self, threshold: float = 0.1, done_weight: float = 3.0, spatial_weight: float = 1.0,
                 kind: str = "funnel", done_pos_weight: float = 1.0):
        super().__init__()
        # BCE pos_weight on done samples: rebalances a rare done class ((1-p)/p), unlike done_weight,
        # which scales the whole done term
        self.register_buffer("done_pos_weight", torch.tensor(float(done_pos_weight)))
        if kind not in ("funnel", "mse"):
            raise ValueError(f"kind must be 'funnel' or 'mse', got {kind!r}")
        self.threshold, self.kind = threshold, kind
        self.sum = WeightedSum({"loss_spatial": spatial_weight, "loss_done": done_weight}, self.TERMS)

    def forward(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        xy, gt = outputs["xy"].float(), batch["target_xy"].float()
        done = batch["done"].float()
        live = 1.0 - done  # done samples have no next object: no spatial loss for them
        n_live = live.sum().clamp_min(1.0)
        d = (xy - gt).abs().sum(1)
        sq = ((xy - gt) ** 2).sum(1)
        per = funnel(d, self.threshold) if self.kind == "funnel" else sq
        spatial = (per * live).sum() / n_live
        done_loss = F.binary_cross_entropy_with_logits(outputs["done_logit"].float(), done,
                                                       pos_weight=self.done_pos_weight)
        with torch.no_grad():
            mse = (sq * live).sum() / n_live / 2
        return self.sum({"loss_spatial": spatial, "loss_done": done_loss}, {"mse": mse})
