"""lanes (seeds 000, 001): road image -> 4 lane slots x 6 Bezier control points + existence.

Seed 000 trained this with learnable uncertainty weights in the optimizer; the validation loss
reached -2.47 and every image got the same lanes. The default here is the fixed-weight
BezierLaneLoss; `loss.kind: uncertainty` is the seed's loss, kept as a negative control.
"""
from __future__ import annotations

from functools import cached_property
from typing import Literal, Optional

import cv2
import numpy as np
import torch
from pydantic import Field, model_validator

from runner import viz
from runner.config import Section
from runner.data.synthetic.lanes import N_SLOTS, LaneDataset, LaneSpec
from runner.losses.bezier import N_CTRL, BezierLaneLoss, evaluate, sample
from runner.losses.seed_broken_lanes import SafeUncertaintyBezierLoss, UncertaintyBezierLoss
from runner.models.lanes import LaneNet
from runner.tasks.base import MonitorView, Task

SAMPLES_PER_LANE = 32  # points sampled along each curve for point_error
REFERENCE_SAMPLES = 1000  # samples whose lanes give the per-slot means and statistics


def lane_arrays(ds, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(points [n, 4, 6, 2], exist [n, 4]) of the first n samples of any dataset yielding lanes batches.

    The built-in datasets answer without loading images (`lanes(i)`); any other (a wrapped
    Subset, a user's own) is read sample by sample."""
    if hasattr(ds, "lanes"):
        lanes = [ds.lanes(i) for i in range(n)]
    else:
        lanes = [(np.asarray(s["points"], np.float32), np.asarray(s["exist"]) > 0.5) for s in (ds[i] for i in range(n))]
    if not lanes:
        return np.zeros((0, N_SLOTS, N_CTRL, 2), np.float32), np.zeros((0, N_SLOTS), bool)
    return np.stack([p for p, _ in lanes]), np.stack([e for _, e in lanes])


class DataConfig(Section):
    source: Literal["synthetic", "tusimple"] = "synthetic"
    root: Optional[str] = None  # tusimple: folder holding the label files and clips/
    train_labels: list[str] = ["label_data_*.json"]  # tusimple: globs relative to root
    val_labels: list[str] = ["test_label.json"]
    on_bad_label: Literal["skip", "error"] = "error"  # tusimple: a bad label line stops the run or is left out
    min_lane_points: int = Field(6, ge=6)  # tusimple: fewer labelled points than this is a bad lane
    image_height: int = Field(72, ge=16)  # model input in pixels (TuSimple images are resized)
    image_width: int = Field(128, ge=16)
    # synthetic lane statistics (see runner/data/synthetic/lanes.py)
    lane_prob: float = Field(0.8, gt=0, le=1)  # P(a slot has a lane)
    min_lanes: int = Field(1, ge=0, le=N_SLOTS)
    lane_width: tuple[float, float] = (0.22, 0.34)  # at the bottom row, fraction of width
    horizon: tuple[float, float] = (0.30, 0.45)  # fraction of height
    curvature: float = Field(0.25, ge=0)  # lateral bend at the horizon, fraction of width
    dashed_prob: float = Field(0.5, ge=0, le=1)
    shadow_prob: float = Field(0.3, ge=0, le=1)
    noise: float = Field(0.03, ge=0)
    train_size: int = Field(4000, gt=0)  # synthetic samples per epoch
    val_size: int = Field(400, gt=0)

    @model_validator(mode="after")
    def _check(self):
        if self.source == "tusimple" and not self.root:
            raise ValueError("data.source tusimple needs data.root (the folder with the label files)")
        for name in ("lane_width", "horizon"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi < 1:
                raise ValueError(f"{name} must be [lo, hi] with 0 < lo <= hi < 1, got {[lo, hi]}")
        return self


class ModelConfig(Section):
    width: int = Field(16, ge=4)  # backbone channels of the first stage (x4 at the end)
    hidden: int = Field(256, ge=8)  # MLP head width
    pool: tuple[int, int] = (4, 8)  # features pooled to this grid (rows, cols); [1, 1]: global average pooling


class LossConfig(Section):
    # fixed: BezierLaneLoss; uncertainty: the seed's learnable log-variances (negative control);
    # uncertainty_safe: learnable but clamped, regulariser log(1 + sigma^2), never negative
    kind: Literal["fixed", "uncertainty", "uncertainty_safe"] = "fixed"
    w_reg: float = Field(1.0, ge=0)  # control-point L1 on existing lanes
    w_exist: float = Field(1.0, ge=0)  # existence BCE
    w_curv: float = Field(0.1, ge=0)  # smoothness of predicted control points
    log_var_min: float = Field(-2.0, lt=0)  # uncertainty_safe: s = log sigma^2 stays in [min, max]
    log_var_max: float = Field(2.0, gt=0)


class LanesTask(Task):
    name = "lanes"
    DataConfig, ModelConfig, LossConfig = DataConfig, ModelConfig, LossConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        self._labels: dict[str, list] = {}  # tusimple: parsed label lines per split

    # ------------------------------------------------------------------ building
    def spec(self) -> LaneSpec:
        d = self.cfg.data
        return LaneSpec(image_height=d.image_height, image_width=d.image_width, lane_prob=d.lane_prob,
                        min_lanes=d.min_lanes, lane_width=tuple(d.lane_width), horizon=tuple(d.horizon),
                        curvature=d.curvature, dashed_prob=d.dashed_prob, shadow_prob=d.shadow_prob,
                        noise=d.noise, seed=self.cfg.seed)

    @property
    def size(self) -> tuple[int, int]:
        return self.cfg.data.image_height, self.cfg.data.image_width

    def dataset(self, split):
        d = self.cfg.data
        if d.source == "synthetic":
            return LaneDataset(self.spec(), split, d.train_size if split == "train" else d.val_size)
        from runner.data.formats.tusimple import TuSimpleDataset, read_labels

        patterns = d.train_labels if split == "train" else d.val_labels
        if split not in self._labels:
            self._labels[split] = read_labels(d.root, patterns, d.min_lane_points, d.on_bad_label)
        return TuSimpleDataset(self._labels[split], self.size)

    def model(self):
        m = self.cfg.model
        return LaneNet(n_lanes=N_SLOTS, n_ctrl=N_CTRL, width=m.width, hidden=m.hidden, pool=tuple(m.pool))

    def criterion(self):
        c = self.cfg.loss
        if c.kind == "fixed":
            return BezierLaneLoss(c.w_reg, c.w_exist, c.w_curv)
        if c.kind == "uncertainty":
            return UncertaintyBezierLoss(c.w_reg, c.w_exist, c.w_curv)
        return SafeUncertaintyBezierLoss(c.w_reg, c.w_exist, c.w_curv, c.log_var_min, c.log_var_max)

    # ------------------------------------------------------------------ reference lanes
    @cached_property
    def reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean control points per slot [4, 6, 2], existence rate per slot [4]) over the train split:
        the mean predictor of `baseline()`."""
        ds = self.dataset("train")
        n = min(len(ds), REFERENCE_SAMPLES)
        pts, ex = lane_arrays(ds, n)
        ex = ex.astype(np.float64)
        counts = ex.sum(0)
        overall = (pts * ex[..., None, None]).sum((0, 1)) / max(ex.sum(), 1)
        mean = np.where(counts[:, None, None] > 0,
                        (pts * ex[..., None, None]).sum(0) / np.maximum(counts, 1)[:, None, None], overall)
        return torch.tensor(mean, dtype=torch.float32), torch.tensor(counts / n, dtype=torch.float32)

    # ------------------------------------------------------------------ monitoring
    def monitor_view(self, outputs, batch):
        """Rows are images, columns the 48 control-point coordinates of the 4 slots. Where a lane is
        absent the target takes the predicted value, so absent slots add the same spread to both
        sides: pred/std_ratio compares how much the predicted lanes vary across images with how
        much the true ones do, and is exactly 0 when every image gets the same lanes (seed 000)."""
        pred = outputs["points"].float()
        exist = batch["exist"][..., None, None] > 0.5
        target = torch.where(exist, batch["points"].float(), pred)
        return MonitorView(pred=pred.flatten(1), target=target.flatten(1),
                           rates={"exist": (torch.sigmoid(outputs["exist_logits"].float()), batch["exist"])})

    def metrics(self, outputs, batch):
        H, W = self.size
        scale = torch.tensor([W, H], dtype=torch.float32).to(outputs["points"].device, non_blocking=True)  # no sync
        pred, gt = outputs["points"].float() * scale, batch["points"].float() * scale
        exist = batch["exist"] > 0.5
        live = exist.float()
        cp = (pred - gt).norm(dim=-1).mean(-1)  # [B, L] mean over the 6 control points
        pts = (sample(pred, SAMPLES_PER_LANE) - sample(gt, SAMPLES_PER_LANE)).norm(dim=-1).mean(-1)
        pred_exist = outputs["exist_logits"] > 0
        tp = (pred_exist & exist).float().sum()
        return {
            "cp_error": ((cp * live).sum(), live.sum()),
            "point_error": ((pts * live).sum(), live.sum()),
            "exist_precision": (tp, pred_exist.float().sum()),
            "exist_recall": (tp, live.sum()),
            "exist_accuracy": ((pred_exist == exist).float().sum(), torch.ones_like(live).sum()),
        }

    # ------------------------------------------------------------------ overlay
    def draw(self, batch, outputs, i):
        img = viz.to_rgb_uint8(batch["image"][i])
        left, scale = viz.upscale(img, 256)
        right = left.copy()
        H, W = self.size
        px = np.array([W * scale, H * scale])
        gt, exist = batch["points"][i].numpy(), batch["exist"][i].numpy() > 0.5
        pred = outputs["points"][i].float().numpy()
        prob = torch.sigmoid(outputs["exist_logits"][i].float()).numpy()
        t = np.linspace(0.0, 1.0, 48)

        def curve(ctrl, color, marker):
            line = np.round(evaluate(ctrl, t) * px * 16).astype(np.int32)
            cv2.polylines(right, [line], False, color, 2, cv2.LINE_AA, shift=4)
            for p in ctrl * px:
                cv2.drawMarker(right, (int(round(p[0])), int(round(p[1]))), color, marker, 9, 2, cv2.LINE_AA)

        errs = []
        for j in range(N_SLOTS):
            if exist[j]:
                curve(gt[j], viz.GREEN, cv2.MARKER_DIAMOND)
                errs.append(float(np.linalg.norm((evaluate(pred[j], t) - evaluate(gt[j], t)) * [W, H], axis=1).mean()))
        for j in range(N_SLOTS):
            if prob[j] > 0.5:
                curve(pred[j], viz.RED, cv2.MARKER_TILTED_CROSS)
        h = right.shape[0]
        viz.text(right, "p(exist) " + " ".join(f"{p:.2f}" for p in prob), (6, h - 26), viz.RED)
        viz.text(right, "gt exist " + " ".join(str(int(e)) for e in exist), (6, h - 8), viz.GREEN)
        if errs:
            viz.text(right, f"err={np.mean(errs):.1f}px (mean over GT lanes)", (6, 16), viz.YELLOW)
        viz.text(left, f"input {W}x{H}", (6, 16))
        return viz.side_by_side(left, right)

    # ------------------------------------------------------------------ reports
    def format_prediction(self, batch, outputs, i) -> list[str]:
        """The seed's inference printout: each slot's predicted P0 -> P5 beside the truth."""
        lines = []
        pred, gt = outputs["points"][i].float(), batch["points"][i].float()
        prob = torch.sigmoid(outputs["exist_logits"][i].float())
        for j in range(N_SLOTS):
            p = f"P0=({pred[j, 0, 0]:.3f}, {pred[j, 0, 1]:.3f}) -> P5=({pred[j, -1, 0]:.3f}, {pred[j, -1, 1]:.3f})"
            if batch["exist"][i, j] > 0.5:
                g = f"P0=({gt[j, 0, 0]:.3f}, {gt[j, 0, 1]:.3f}) -> P5=({gt[j, -1, 0]:.3f}, {gt[j, -1, 1]:.3f})"
            else:
                g = "absent"
            lines.append(f"  Lane {j + 1}: pred {p} p={prob[j]:.2f} | true {g}")
        return lines

    def baseline(self):
        """The mean predictor: every image gets the train split's mean lanes, and a slot is
        predicted present when it is present in most train images."""
        mean, rate = self.reference
        ds = self.dataset("val")
        n = min(len(ds), REFERENCE_SAMPLES)
        pts, ex = (torch.tensor(a, dtype=torch.float32) for a in lane_arrays(ds, n))
        logits = torch.where(rate > 0.5, 10.0, -10.0).expand(n, -1)
        m = self.metrics({"points": mean.expand(n, -1, -1, -1), "exist_logits": logits},
                         {"points": pts, "exist": ex})
        return {k: float(num / den) if float(den) > 0 else 0.0 for k, (num, den) in m.items()}

    def describe_data(self, split):
        ds = self.dataset(split)
        n = min(len(ds), REFERENCE_SAMPLES)
        pts, ex = lane_arrays(ds, n)
        ex = ex.astype(np.float64)
        p5x = pts[..., -1, 0][ex > 0.5]
        return {"samples": len(ds), "lanes_per_image": float(ex.sum(1).mean()),
                "exist_rate": [round(float(v), 4) for v in ex.mean(0)],
                "side_exit_rate": float(((p5x < 0.02) | (p5x > 0.98)).mean()) if len(p5x) else 0.0}

