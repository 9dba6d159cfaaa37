"""The seeds' broken losses, kept as negative controls, plus opt-in safe variants.

Each task's section is self-contained. Nothing here is a default: a config has to ask for it.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from runner.losses.bezier import LANE_TERMS, lane_terms


# ================================================================ lanes (seeds 000, 001)
#
# The seed trained Kendall et al.'s uncertainty weighting with the log-variances s in the optimizer:
#     total = sum_i 0.5 * exp(-s_i) * L_i + 0.5 * s_i
# For a fixed L_i the s_i-part is minimized at s_i = log L_i, where it equals 0.5 * (1 + log L_i):
# negative whenever L_i < 1/e, and unbounded below as any term goes to 0. Near that optimum the
# gradient on the network is 0.5 * grad(L_i) / L_i: each term's weight grows as the term shrinks,
# so whichever term is easiest to drive to zero takes over the shared features. The seed reached a
# validation loss of -2.47 with one constant set of lanes for every image.
#
# The safe variant keeps learnable weights but bounds them: s_i = lo + (hi - lo) * sigmoid(raw_i)
# (a smooth clamp into [lo, hi] that never stops the gradient), and the regulariser
# log(1 + sigma_i^2) with sigma_i^2 = exp(s_i) (Liebel & Koerner, 2018) instead of s_i, so each
# term 0.5 * L_i / sigma_i^2 + log(1 + sigma_i^2) is > 0 for every s_i and L_i >= 0.

def _lane_weights(w_reg: float, w_exist: float, w_curv: float) -> dict[str, float]:
    weights = {"loss_reg": w_reg, "loss_exist": w_exist, "loss_curv": w_curv}
    bad = {k: w for k, w in weights.items() if w < 0}
    if bad:
        raise ValueError(f"loss weights must be >= 0: {bad}")
    return weights


class UncertaintyBezierLoss(nn.Module):
    """The seed's loss (negative control): learnable, unbounded log-variances; can go negative.

    Each term is first scaled by its fixed weight (1.0 each in the seed), then weighted by
    0.5 * exp(-s). Returns {"loss", "<term>" (unweighted), "weight/<term>" (0.5 * exp(-s)),
    "loss/sigma_<term>" (exp(s / 2))}.
    """

    TERMS = LANE_TERMS

    def __init__(self, w_reg: float = 1.0, w_exist: float = 1.0, w_curv: float = 1.0):
        super().__init__()
        self.weights = _lane_weights(w_reg, w_exist, w_curv)
        # the seed's parameters log_var_reg, log_var_exist, log_var_curv; runner.train puts them in
        # the optimizer's "loss" group, as the seed's `model.parameters() + criterion.parameters()` did
        for key in self.TERMS:
            self.register_parameter("log_var_" + key.removeprefix("loss_"), nn.Parameter(torch.zeros(())))

    def raw(self, name: str) -> nn.Parameter:
        return getattr(self, "log_var_" + name)

    def log_variance(self, name: str) -> Tensor:
        return self.raw(name)

    def regulariser(self, s: Tensor) -> Tensor:
        return 0.5 * s

    def forward(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        terms = lane_terms(outputs, batch)
        total = 0.0
        out: dict[str, Tensor] = {}
        for key in self.TERMS:
            name = key.removeprefix("loss_")
            s = self.log_variance(name)
            scaled = self.weights[key] * terms[key]
            total = total + 0.5 * torch.exp(-s) * scaled + self.regulariser(s)
            out[f"weight/{name}"] = (0.5 * torch.exp(-s)).detach()
            out[f"loss/sigma_{name}"] = torch.exp(0.5 * s).detach()
        return {"loss": total, **terms, **out}


class SafeUncertaintyBezierLoss(UncertaintyBezierLoss):
    """Learnable weighting that cannot cheat: s clamped (smoothly) to [lo, hi], regulariser
    log(1 + sigma^2) >= 0, so the total is never negative and no weight exceeds 0.5 * exp(-lo)."""

    def __init__(self, w_reg: float = 1.0, w_exist: float = 1.0, w_curv: float = 0.1,
                 log_var_min: float = -2.0, log_var_max: float = 2.0):
        super().__init__(w_reg, w_exist, w_curv)
        if not log_var_min < 0.0 < log_var_max:
            raise ValueError(f"need log_var_min < 0 < log_var_max, got [{log_var_min}, {log_var_max}]")
        self.lo, self.hi = float(log_var_min), float(log_var_max)
        # raw parameter chosen so that s starts at 0 (sigma = 1, weight 0.5)
        raw0 = torch.logit(torch.tensor(-self.lo / (self.hi - self.lo)))
        with torch.no_grad():
            for p in self.parameters():
                p.fill_(raw0)

    def log_variance(self, name: str) -> Tensor:
        return self.lo + (self.hi - self.lo) * torch.sigmoid(self.raw(name))

    def regulariser(self, s: Tensor) -> Tensor:
        return torch.log1p(torch.exp(s))
