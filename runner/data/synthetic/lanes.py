"""Synthetic road images with up to 4 lane lines, each an exact 6-point Bezier curve (seeds 000/001).

Geometry (normalized: x / width, y / height), per image:
    horizon y = h, vanishing point x = vx, road bend c (lateral shift at the horizon),
    lane width w at the bottom row, ego offset: the road centre at the bottom is cx.
Lane slot j (0..3, left to right: 1 and 2 bound the ego lane) meets the bottom row at
xb_j = cx + (j - 1.5) * w. With u in [0, 1] running from the horizon down to the bottom row,
    y(u) = h + (1 - h) u,     x(u) = vx + (xb_j - vx) u + c (1 - u)^2
is a quadratic curve, so its 6 Bezier control points are exact. The visible part starts `gap`
below the horizon; a lane that leaves the image through a side is cut there (de Casteljau), and
P5 lies on that side, as in the seed's `P0=(0.482, 0.375) -> P5=(0.054, 0.631)`. A slot exists
with probability `lane_prob` (at least `min_lanes` per image); a lane whose visible part is
shorter than `min_visible` of its length is dropped (not drawn, exist = 0).

Deterministic per (seed, split, index): geometry and rendering use their own seeded generators,
so `lanes(i)` (geometry only, no drawing) is cheap and used for statistics and baselines.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from runner.losses.bezier import N_CTRL, bernstein, evaluate, split_left

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
N_SLOTS = 4  # lane slots: ego-left-left, ego-left, ego-right, ego-right-right


@dataclass(frozen=True)
class LaneSpec:
    image_height: int = 72
    image_width: int = 128
    lane_prob: float = 0.8  # P(slot has a visible lane line)
    min_lanes: int = 1
    lane_width: tuple[float, float] = (0.22, 0.34)  # at the bottom row, fraction of the width
    horizon: tuple[float, float] = (0.30, 0.45)  # fraction of the height
    vanish_jitter: float = 0.10  # vanishing point x = 0.5 +- this
    ego_offset: float = 0.30  # road centre = 0.5 +- this * lane width
    curvature: float = 0.25  # road bend c ~ U(-curvature, curvature)
    gap: float = 0.04  # lanes become visible this far (fraction of height) below the horizon
    min_visible: float = 0.35  # drop lanes whose visible part is shorter (fraction of t)
    dashed_prob: float = 0.5
    shadow_prob: float = 0.3
    noise: float = 0.03  # std of additive pixel noise
    seed: int = 0


@dataclass
class LaneScene:
    points: np.ndarray  # [4, 6, 2] control points, normalized; zeros where exist == 0
    exist: np.ndarray  # [4] bool
    horizon: float
    vanish_x: float
    bend: float
    centre: float
    width: float


_T_DENSE = np.linspace(0.0, 1.0, 1001)
_B_DENSE = bernstein(_T_DENSE)
_T_FIT = np.linspace(0.0, 1.0, 12)
_FIT = np.linalg.pinv(bernstein(_T_FIT))  # [6, 12]: samples of a quadratic -> its exact control points


def _lane_ctrl(h: float, vx: float, xb: float, c: float, gap: float) -> np.ndarray:
    """Exact control points of the visible part (from `gap` below the horizon to the bottom row)."""
    u0 = min(gap / (1.0 - h), 0.5)
    u = u0 + (1.0 - u0) * _T_FIT
    pts = np.stack([vx + (xb - vx) * u + c * (1.0 - u) ** 2, h + (1.0 - h) * u], 1)
    return _FIT @ pts  # exact: the curve is quadratic in t


def _cut_at_sides(ctrl: np.ndarray, margin: float = 0.002) -> tuple[np.ndarray, float]:
    """The part before the curve first leaves x in [margin, 1 - margin]; (ctrl, visible fraction)."""
    x = _B_DENSE @ ctrl[:, 0]
    out = np.nonzero((x < margin) | (x > 1.0 - margin))[0]
    if len(out) == 0:
        return ctrl, 1.0
    k = int(out[0])
    if k == 0:
        return ctrl, 0.0
    edge = margin if x[k] < margin else 1.0 - margin  # linear interpolation of the crossing
    t0 = _T_DENSE[k - 1] + (_T_DENSE[k] - _T_DENSE[k - 1]) * (edge - x[k - 1]) / (x[k] - x[k - 1])
    return split_left(ctrl, float(t0)), float(t0)


def scene(spec: LaneSpec, split: str, index: int) -> LaneScene:
    rng = np.random.default_rng([spec.seed, SPLIT_CODES[split], index])
    h = rng.uniform(*spec.horizon)
    vx = 0.5 + rng.uniform(-spec.vanish_jitter, spec.vanish_jitter)
    w = rng.uniform(*spec.lane_width)
    cx = 0.5 + rng.uniform(-spec.ego_offset, spec.ego_offset) * w
    c = rng.uniform(-spec.curvature, spec.curvature)
    exist = rng.random(N_SLOTS) < spec.lane_prob
    while exist.sum() < spec.min_lanes:  # top up with random slots
        exist[rng.integers(N_SLOTS)] = True
    points = np.zeros((N_SLOTS, N_CTRL, 2))
    for j in range(N_SLOTS):
        if not exist[j]:
            continue
        ctrl, visible = _cut_at_sides(_lane_ctrl(h, vx, cx + (j - 1.5) * w, c, spec.gap))
        if visible < spec.min_visible:
            exist[j] = False
            continue
        points[j] = ctrl
    return LaneScene(points, exist, h, vx, c, cx, w)


# ---------------------------------------------------------------- rendering

def _curve_px(ctrl: np.ndarray, size: tuple[int, int], m: int = 64) -> np.ndarray:
    """[m, 2] pixel coordinates (x, y) of a curve, for an image of size (H, W)."""
    hgt, wid = size
    pts = evaluate(ctrl, np.linspace(0.0, 1.0, m))
    return pts * np.array([wid, hgt])


def render(spec: LaneSpec, sc: LaneScene, split: str, index: int) -> np.ndarray:
    """HxWx3 float32 RGB in [0, 1]."""
    rng = np.random.default_rng([spec.seed, SPLIT_CODES[split], index, 1])
    H, W = spec.image_height, spec.image_width
    img = np.empty((H, W, 3), np.float32)
    hy = int(round(sc.horizon * H))
    # sky: vertical gradient; ground: grass/soil tint
    sky = np.array([0.55, 0.7, 0.9]) * rng.uniform(0.7, 1.1)
    ramp = np.linspace(0.8, 1.05, max(hy, 1))[:, None, None]
    img[:hy] = np.clip(sky[None, None] * ramp, 0, 1)
    img[hy:] = np.array([0.25, 0.4, 0.2]) * rng.uniform(0.6, 1.2) + rng.uniform(-0.05, 0.05, 3)
    # road surface between two virtual edges just outside slots 0 and 3
    edges = []
    for side in (-2.3, 2.3):
        xb = sc.centre + side * sc.width
        u = np.linspace(0.0, 1.0, 48)
        x = sc.vanish_x + (xb - sc.vanish_x) * u + sc.bend * (1.0 - u) ** 2
        y = sc.horizon + (1.0 - sc.horizon) * u
        edges.append(np.stack([x * W, y * H], 1))
    poly = np.concatenate([edges[0], edges[1][::-1]])
    asphalt = float(rng.uniform(0.25, 0.45))
    cv2.fillPoly(img, [np.round(poly * 16).astype(np.int32)], (asphalt,) * 3, cv2.LINE_AA, shift=4)
    # shadows across the road
    if rng.random() < spec.shadow_prob:
        for _ in range(int(rng.integers(1, 3))):
            y0 = rng.uniform(sc.horizon + 0.1, 0.95) * H
            band = np.array([[0, y0], [W, y0 + rng.uniform(-0.1, 0.1) * H],
                             [W, y0 + rng.uniform(0.05, 0.2) * H], [0, y0 + rng.uniform(0.05, 0.2) * H]])
            shade = img.copy()
            cv2.fillPoly(shade, [np.round(band * 16).astype(np.int32)], (0.05, 0.05, 0.05), cv2.LINE_AA, shift=4)
            img = cv2.addWeighted(img, 0.5, shade, 0.5, 0.0)
    # lane markings: thicker near the camera, some dashed, the ego-left one sometimes yellow
    thick_max = max(1, round(W / 60))
    for j in np.nonzero(sc.exist)[0]:
        px = np.round(_curve_px(sc.points[j], (H, W)) * 16).astype(np.int32)
        tone = rng.uniform(0.8, 1.0)
        color = (tone, tone * 0.8, 0.1) if j == 1 and rng.random() < 0.3 else (tone, tone, tone)
        dashed = rng.random() < spec.dashed_prob
        phase = rng.uniform(0, 1)
        n = len(px) - 1
        t = (np.arange(n) + 0.5) / n
        thick = np.maximum(1, np.round(thick_max * (0.4 + 0.6 * t))).astype(int)
        drawn = ((t * 6 + phase) % 1.0) <= 0.55 if dashed else np.ones(n, bool)
        # one polyline per run of segments with the same thickness and visibility
        start = 0
        for s in range(1, n + 1):
            if s == n or thick[s] != thick[start] or drawn[s] != drawn[start]:
                if drawn[start]:
                    cv2.polylines(img, [px[start:s + 1]], False, color, int(thick[start]), cv2.LINE_AA, shift=4)
                start = s
    img *= np.float32(rng.uniform(0.7, 1.15))
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(spec.noise)
    return np.clip(img, 0.0, 1.0, out=img)


class LaneDataset(torch.utils.data.Dataset):
    """Items: image [3, H, W] float32 in [0, 1], points [4, 6, 2] normalized (zeros where absent),
    exist [4] float32 in {0, 1}."""

    def __init__(self, spec: LaneSpec, split: str, size: int):
        self.spec, self.split, self.size = spec, split, size

    def __len__(self) -> int:
        return self.size

    def lanes(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(points [4, 6, 2], exist [4] bool) without drawing the image."""
        sc = scene(self.spec, self.split, index)
        return sc.points, sc.exist

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        sc = scene(self.spec, self.split, index)
        img = render(self.spec, sc, self.split, index)
        return {
            "image": torch.from_numpy(img).permute(2, 0, 1).contiguous(),
            "points": torch.from_numpy(sc.points.astype(np.float32)),
            "exist": torch.from_numpy(sc.exist.astype(np.float32)),
        }
