"""Synthetic puzzles (seed 002): a large textured picture and one small piece cut from it.

The seed's puzzles were 3000x2000 px photographs and its pieces ~79x80 px, i.e. 2.6% x 4% of
the picture (0.1% of its area), shown to the model as the puzzle resized down and the piece
resized up. We reproduce that geometry:

  1. a "native" canvas of (puzzle_width, puzzle_height) * source_scale pixels is painted with a
     multi-octave colour field, fine mottling and random shapes (discs, rectangles, strokes), so
     every small patch looks different from its neighbours, as in a photograph;
  2. a piece of piece_frac (w, h) of the canvas (times a common size jitter) is cut at native
     resolution, rotated counter-clockwise by rotation * 90 degrees (np.rot90), resized to
     piece_size x piece_size and given a little noise (a photographed piece is no exact copy);
  3. the puzzle the model sees is the canvas resized down to (puzzle_width, puzzle_height).

Targets: box = (cx, cy, w, h) of the cut, normalized to [0, 1] by the puzzle's width and height
(exact: computed from the integer native pixel bounds of the cut), and rotation in {0, 1, 2, 3}.
Images are quantized to 8-bit levels so they survive a PNG round trip unchanged.
Deterministic per (seed, split, index).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class PuzzleSpec:
    puzzle_width: int = 192  # pixels of the puzzle image the model sees
    puzzle_height: int = 128
    piece_size: int = 32  # the piece image is piece_size x piece_size pixels
    piece_frac: tuple[float, float] = (0.026, 0.04)  # piece (w, h) as fractions of the puzzle (seed: 2.6% x 4%)
    size_jitter: float = 0.1  # piece sides scaled by a common factor in [1 - j, 1 + j]
    source_scale: int = 2  # native canvas = puzzle size * source_scale; the piece is cut from it
    shapes: int = 80  # random discs/rectangles/strokes painted on the canvas
    piece_noise: float = 0.02  # std of Gaussian noise added to the piece (0 = exact copy)
    seed: int = 0

    @property
    def native_size(self) -> tuple[int, int]:
        return self.puzzle_width * self.source_scale, self.puzzle_height * self.source_scale


def paint_canvas(rng: np.random.Generator, width: int, height: int, shapes: int) -> np.ndarray:
    """An HxWx3 float32 picture in [0, 1]: multi-octave colour field + random shapes."""
    fw, fh = max(8, width // 4), max(8, height // 4)  # the smooth field is built small, then upscaled
    field = np.zeros((fh, fw, 3), np.float32)
    # octaves of smooth colour noise, coarse to fine; the finest varies within a piece
    for cells, amp in ((3, 1.0), (6, 0.7), (12, 0.5), (24, 0.4), (48, 0.3)):
        ch = max(2, round(cells * height / width))
        noise = rng.random((ch, cells, 3), dtype=np.float32)
        field += amp * cv2.resize(noise, (fw, fh), interpolation=cv2.INTER_CUBIC)
    lo, hi = field.min((0, 1)), field.max((0, 1))
    field = (field - lo) / np.maximum(hi - lo, 1e-6)
    img = cv2.resize(field, (width, height), interpolation=cv2.INTER_LINEAR)
    # fine mottling (cells ~4 native px): gives every piece inner structure, so its rotation shows
    fine = rng.random((max(2, height // 4), max(2, width // 4), 3), dtype=np.float32)
    img = 0.7 * img + 0.3 * cv2.resize(fine, (width, height), interpolation=cv2.INTER_CUBIC)
    side = min(width, height)
    for _ in range(shapes):
        color = tuple(float(c) for c in rng.random(3))
        kind = rng.integers(3)
        x, y = int(rng.integers(width)), int(rng.integers(height))
        s = int(side * rng.uniform(0.01, 0.06)) + 1
        if kind == 0:
            cv2.circle(img, (x, y), s, color, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(img, (x - s, y - s // 2), (x + s, y + s // 2), color, -1)
        else:
            dx, dy = rng.normal(0, 3 * s, 2)
            cv2.line(img, (x, y), (int(x + dx), int(y + dy)), color, max(1, s // 3), cv2.LINE_AA)
    return img


def quantize(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255).round().astype(np.float32) / 255


def geometry(spec: PuzzleSpec, split: str, index: int) -> tuple[int, int, int, int, int]:
    """The cut in native pixels (x1, y1, pw, ph) and the rotation; cheap (nothing is painted)."""
    rng = np.random.default_rng([spec.seed, SPLIT_CODES[split], index, 0])
    nw, nh = spec.native_size
    scale = 1.0 + spec.size_jitter * rng.uniform(-1, 1)
    pw = min(nw, max(2, round(spec.piece_frac[0] * scale * nw)))
    ph = min(nh, max(2, round(spec.piece_frac[1] * scale * nh)))
    x1 = int(rng.integers(0, nw - pw + 1))
    y1 = int(rng.integers(0, nh - ph + 1))
    return x1, y1, pw, ph, int(rng.integers(4))


def box_of(spec: PuzzleSpec, x1: int, y1: int, pw: int, ph: int) -> np.ndarray:
    """Normalized (cx, cy, w, h) of a native-pixel cut."""
    nw, nh = spec.native_size
    return np.array([(x1 + pw / 2) / nw, (y1 + ph / 2) / nh, pw / nw, ph / nh], np.float32)


def make_puzzle(spec: PuzzleSpec, split: str, index: int) -> dict[str, np.ndarray | int]:
    """One sample as numpy: image HxWx3, piece PxPx3 (float32, 8-bit levels), box (4,), rotation."""
    x1, y1, pw, ph, rotation = geometry(spec, split, index)
    rng = np.random.default_rng([spec.seed, SPLIT_CODES[split], index, 1])
    canvas = paint_canvas(rng, *spec.native_size, spec.shapes)
    crop = np.ascontiguousarray(np.rot90(canvas[y1:y1 + ph, x1:x1 + pw], rotation))
    interp = cv2.INTER_AREA if min(crop.shape[:2]) > spec.piece_size else cv2.INTER_LINEAR
    piece = cv2.resize(crop, (spec.piece_size, spec.piece_size), interpolation=interp)
    if spec.piece_noise > 0:
        piece = piece + rng.normal(0, spec.piece_noise, piece.shape).astype(np.float32)
    image = cv2.resize(canvas, (spec.puzzle_width, spec.puzzle_height), interpolation=cv2.INTER_AREA)
    return {"image": quantize(image), "piece": quantize(piece), "box": box_of(spec, x1, y1, pw, ph),
            "rotation": rotation}


class PuzzleDataset(torch.utils.data.Dataset):
    """Items: image [3, H, W] and piece [3, P, P] float in [0, 1]; box [4] (cx, cy, w, h)
    normalized; rotation () long, the piece's counter-clockwise quarter turns."""

    def __init__(self, spec: PuzzleSpec, split: str, size: int):
        if split not in SPLIT_CODES:
            raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, got {split!r}")
        self.spec, self.split, self.size = spec, split, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        s = make_puzzle(self.spec, self.split, index)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(s["image"].transpose(2, 0, 1))),
            "piece": torch.from_numpy(np.ascontiguousarray(s["piece"].transpose(2, 0, 1))),
            "box": torch.from_numpy(s["box"]),
            "rotation": torch.tensor(s["rotation"], dtype=torch.long),
        }

    def statistics(self, samples: int = 2000) -> dict[str, float]:
        """Piece size, position and rotation statistics over the first `samples` indices (no painting)."""
        m = min(samples, self.size)
        geo = [geometry(self.spec, self.split, i) for i in range(m)]
        boxes = np.stack([box_of(self.spec, *g[:4]) for g in geo])
        rots = np.bincount([g[4] for g in geo], minlength=4) / m
        return {
            "samples": float(self.size),
            "piece_w_frac": float(boxes[:, 2].mean()),
            "piece_h_frac": float(boxes[:, 3].mean()),
            "piece_area_frac": float((boxes[:, 2] * boxes[:, 3]).mean()),
            "center_std": float(boxes[:, :2].std(0).mean()),
            "box_xyxy_std": float(np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2,
                                                  boxes[:, :2] + boxes[:, 2:] / 2], 1).std(0).mean()),
            "rotation_min_share": float(rots.min()),
        }
