"""Lane loss (seeds 000/001) and the Bezier curve math the lanes data, loss and metrics share.

A lane is a degree-5 Bezier curve with 6 control points P0..P5 in normalized image coordinates
(x / width, y / height); P0 is the far end (near the horizon), P5 the near end.

    B(t) = sum_k C(5, k) t^k (1 - t)^(5 - k) P_k,   t in [0, 1]

`BezierLaneLoss` is the fixed-weight loss (no parameters, never negative):
    loss_reg    mean L1 between predicted and true control points, over existing lanes only
    loss_exist  binary cross-entropy of the existence logits, over all 4 lane slots
    loss_curv   smoothness: mean squared second difference of the predicted control points
                (P[k+1] - 2 P[k] + P[k-1]) over existing lanes; 0 for evenly spaced collinear points
total = w_reg * loss_reg + w_exist * loss_exist + w_curv * loss_curv (runner.losses.weighting).
"""
from __future__ import annotations

from math import comb

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from runner.losses.weighting import WeightedSum

N_CTRL = 6  # control points per lane (degree 5)
LANE_TERMS = ("loss_reg", "loss_exist", "loss_curv")


# ---------------------------------------------------------------- Bezier math (numpy and torch)

def bernstein(t: np.ndarray, n_ctrl: int = N_CTRL) -> np.ndarray:
    """[len(t), n_ctrl] Bernstein basis of degree n_ctrl - 1 at parameters t."""
    t = np.asarray(t, dtype=np.float64)[:, None]
    n = n_ctrl - 1
    k = np.arange(n_ctrl)[None, :]
    coef = np.array([comb(n, i) for i in range(n_ctrl)], dtype=np.float64)[None, :]
    return coef * t ** k * (1.0 - t) ** (n - k)


def bernstein_torch(m: int, n_ctrl: int = N_CTRL, device=None, dtype=torch.float32) -> Tensor:
    """[m, n_ctrl] basis at m evenly spaced t in [0, 1]."""
    return torch.as_tensor(bernstein(np.linspace(0.0, 1.0, m), n_ctrl), device=device, dtype=dtype)


def evaluate(ctrl: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points [len(t), 2] of one curve with control points ctrl [n_ctrl, 2]."""
    return bernstein(t, len(ctrl)) @ np.asarray(ctrl, dtype=np.float64)


def sample(ctrl: Tensor, m: int = 32) -> Tensor:
    """[..., n_ctrl, 2] control points -> [..., m, 2] points at m evenly spaced t."""
    basis = bernstein_torch(m, ctrl.shape[-2], ctrl.device, ctrl.dtype)
    return torch.einsum("mk,...kd->...md", basis, ctrl)


def split_left(ctrl: np.ndarray, t0: float) -> np.ndarray:
    """Control points of the part t in [0, t0] of the curve (de Casteljau), the same degree."""
    pts = np.asarray(ctrl, dtype=np.float64).copy()
    left = [pts[0].copy()]
    while len(pts) > 1:
        pts = (1.0 - t0) * pts[:-1] + t0 * pts[1:]
        left.append(pts[0].copy())
    return np.stack(left)


def fit(points: np.ndarray, t: np.ndarray | None = None, n_ctrl: int = N_CTRL) -> np.ndarray:
    """Least-squares control points [n_ctrl, 2] through ordered points [N, 2] (N >= n_ctrl).

    t: the curve parameter of each point; by default its normalized chord length along the
    polyline (end points at t = 0 and t = 1). Exact when the points lie on a degree <= 5 curve
    sampled at the given t.
    """
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) < n_ctrl:
        raise ValueError(f"need at least {n_ctrl} points to fit {n_ctrl} control points, got {len(pts)}")
    if t is None:
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        if seg.sum() <= 0:
            raise ValueError("all points coincide")
        t = np.concatenate([[0.0], np.cumsum(seg)]) / seg.sum()
    ctrl, *_ = np.linalg.lstsq(bernstein(t, n_ctrl), pts, rcond=None)
    return ctrl


# ---------------------------------------------------------------- loss

def lane_terms(outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The three unweighted, non-negative terms shared by the fixed loss and the controls.

    outputs: points [B, L, 6, 2] (normalized), exist_logits [B, L]
    batch:   points [B, L, 6, 2], exist [B, L] in {0, 1}
    """
    pred, gt = outputs["points"].float(), batch["points"].float()
    exist = batch["exist"].float()
    mask = exist[..., None, None]  # [B, L, 1, 1]
    n_lanes = exist.sum().clamp_min(1.0)
    reg = ((pred - gt).abs() * mask).sum() / (n_lanes * pred.shape[-2] * pred.shape[-1])
    exist_loss = F.binary_cross_entropy_with_logits(outputs["exist_logits"].float(), exist)
    second = pred[..., 2:, :] - 2 * pred[..., 1:-1, :] + pred[..., :-2, :]  # [B, L, 4, 2]
    curv = ((second ** 2).sum(-1) * exist[..., None]).sum() / (n_lanes * second.shape[-2])
    return {"loss_reg": reg, "loss_exist": exist_loss, "loss_curv": curv}


class BezierLaneLoss(nn.Module):
    """Fixed-weight lane loss; returns {"loss", "loss_reg", "loss_exist", "loss_curv", "weighted/..."}."""

    def __init__(self, w_reg: float = 1.0, w_exist: float = 1.0, w_curv: float = 0.1):
        super().__init__()
        self.sum = WeightedSum({"loss_reg": w_reg, "loss_exist": w_exist, "loss_curv": w_curv}, LANE_TERMS)

    def forward(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.sum(lane_terms(outputs, batch))
