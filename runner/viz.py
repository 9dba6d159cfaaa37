"""Overlay drawing with OpenCV. All images are RGB uint8 HxWx3.

Colour code shared by every task: ground truth GREEN, prediction RED, error YELLOW
(a line from prediction to truth labelled `err=Npx`).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

GREEN = (0, 220, 0)
RED = (255, 40, 40)
YELLOW = (255, 230, 0)
WHITE = (255, 255, 255)
MAGENTA = (255, 0, 255)
CYAN = (0, 220, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def to_rgb_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """CHW or HWC float in [0, 1] (or uint8) -> contiguous HWC uint8 RGB."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[2] not in (1, 3):
        image = np.transpose(image, (1, 2, 0))
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return np.ascontiguousarray(image)


def upscale(image: np.ndarray, min_side: int = 256) -> tuple[np.ndarray, float]:
    """Nearest-neighbour upscale so text and markers stay legible; returns (image, scale)."""
    h, w = image.shape[:2]
    scale = max(1.0, min_side / min(h, w))
    if scale == 1.0:
        return image.copy(), 1.0
    return cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR), scale


def text(image: np.ndarray, s: str, org: tuple[int, int], color=WHITE, scale: float = 0.45) -> None:
    """Text on a dark box so it reads on any background; org is the baseline's left end."""
    x, y = int(org[0]), int(org[1])
    (w, h), base = cv2.getTextSize(s, FONT, scale, 1)
    cv2.rectangle(image, (x - 2, y - h - 2), (x + w + 2, y + base), (0, 0, 0), -1)
    cv2.putText(image, s, (x, y), FONT, scale, color, 1, cv2.LINE_AA)


def error_line(image: np.ndarray, pred_xy, gt_xy, err_px: float) -> None:
    """Yellow line from prediction to truth with `err=Npx` beside its midpoint."""
    p = (int(round(pred_xy[0])), int(round(pred_xy[1])))
    g = (int(round(gt_xy[0])), int(round(gt_xy[1])))
    cv2.line(image, p, g, YELLOW, 1, cv2.LINE_AA)
    mx, my = (p[0] + g[0]) // 2, (p[1] + g[1]) // 2
    h, w = image.shape[:2]
    text(image, f"err={err_px:.0f}px", (min(max(mx + 4, 2), w - 80), min(max(my - 4, 12), h - 4)), YELLOW)


def side_by_side(*panels: np.ndarray, gap: int = 4) -> np.ndarray:
    h = max(p.shape[0] for p in panels)
    padded = []
    for i, p in enumerate(panels):
        if p.shape[0] < h:
            p = np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)))
        padded.append(p)
        if i < len(panels) - 1:
            padded.append(np.full((h, gap, 3), 40, np.uint8))
    return np.concatenate(padded, axis=1)


def grid(tiles: list[np.ndarray], cols: int = 2, gap: int = 6) -> np.ndarray:
    """Tiles (any sizes) into one image, row-major, padded with a dark gap."""
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    rows = (len(tiles) + cols - 1) // cols
    out = np.full((rows * th + (rows + 1) * gap, cols * tw + (cols + 1) * gap, 3), 25, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        y, x = gap + r * (th + gap), gap + c * (tw + gap)
        out[y:y + t.shape[0], x:x + t.shape[1]] = t
    return out
