"""TuSimple lane labels (JSON lines) -> 4 lane slots x 6 Bezier control points + existence.

One JSON object per line:
    {"lanes": [[-2, -2, 632, 625, ...], ...],   x in pixels at each h_sample, -2 where absent
     "h_samples": [240, 250, ..., 710],         the image rows the x values belong to
     "raw_file": "clips/0313-1/6040/20.jpg"}    the image, relative to the dataset root
The standard layout puts label_data_0313.json, label_data_0531.json, label_data_0601.json
(train) and test_label.json (test) in the root, beside `clips/`.

Each lane's valid points are ordered top to bottom and fitted with 6 control points by least
squares, parametrized by y (t = 0 at the topmost point, t = 1 at the lowest), the way the
synthetic lanes are parametrized; P0 is the far end. Control points are normalized by the
image's own width and height, so images of any size can be resized for the model.

Slots follow the synthetic data: the lanes whose lowest point lies left of the image centre fill
slot 1 (the nearest) and slot 0, those right of it slot 2 and slot 3; further lanes are dropped
and counted.

A bad line (invalid JSON, missing or mistyped keys, a lane whose length differs from h_samples,
a lane with fewer than `min_points` points, an image that does not exist) is reported as
`FILE:LINE: reason`. on_bad="error" raises a UserError with it; on_bad="skip" prints it to
stderr and leaves the line out.
"""
from __future__ import annotations

import glob
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from runner.errors import UserError
from runner.losses.bezier import N_CTRL, evaluate, fit

N_SLOTS = 4
MISSING = -2
MAX_REPORTED = 20  # skipped lines printed one by one; the rest only counted


class BadLabel(ValueError):
    pass


@dataclass
class LaneLabel:
    image: Path
    points: np.ndarray  # [4, 6, 2] normalized
    exist: np.ndarray  # [4] bool
    where: str  # "file:line"
    dropped: int = 0  # lanes beyond two per side
    short: int = 0  # lanes with too few labelled points (or one image row) to fit: left out, the line kept


def fit_lane(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Least-squares control points [6, 2] in pixels, parametrized by y (top = t 0)."""
    order = np.argsort(ys, kind="stable")
    xs, ys = xs[order], ys[order]
    return fit(np.stack([xs, ys], 1), t=(ys - ys[0]) / (ys[-1] - ys[0]))


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header only (Pillow ships with torchvision); pixels are read with OpenCV."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError) as e:
        raise BadLabel(f"image {str(path)!r} could not be read ({type(e).__name__})") from None
    return h, w


def parse_line(text: str, root: Path, min_points: int, image_sizes: dict) -> LaneLabel:
    """One label line -> LaneLabel; raises BadLabel with the reason (without file:line)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadLabel(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise BadLabel(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("lanes", "h_samples", "raw_file") if k not in obj]
    if missing:
        raise BadLabel(f"missing key(s) {missing}")
    lanes, h, raw = obj["lanes"], obj["h_samples"], obj["raw_file"]
    if not isinstance(raw, str) or not raw:
        raise BadLabel(f"raw_file must be a non-empty string, got {raw!r}")
    if not isinstance(h, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in h):
        raise BadLabel("h_samples must be a list of numbers")
    if not isinstance(lanes, list):
        raise BadLabel("lanes must be a list of lists")
    image = root / raw
    if not image.is_file():
        raise BadLabel(f"image {raw!r} not found under {str(root)!r}")
    ys_all = np.asarray(h, dtype=np.float64)
    fitted, short = [], 0
    for k, lane in enumerate(lanes):
        if not isinstance(lane, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in lane):
            raise BadLabel(f"lane {k} is malformed: expected a list of numbers")
        if len(lane) != len(h):
            raise BadLabel(f"lane {k} has {len(lane)} values but h_samples has {len(h)}")
        xs = np.asarray(lane, dtype=np.float64)
        valid = xs >= 0  # TuSimple marks absent points with -2
        ys = ys_all[valid]
        if valid.sum() < min_points or np.ptp(ys) <= 0:  # a lane too short to fit is data, not a broken line
            short += 1
            continue
        fitted.append(fit_lane(xs[valid], ys))
    if image not in image_sizes:
        image_sizes[image] = _image_size(image)
    H, W = image_sizes[image]
    scale = np.array([W, H], dtype=np.float64)
    points = np.zeros((N_SLOTS, N_CTRL, 2))
    exist = np.zeros(N_SLOTS, bool)
    bottom = [evaluate(c, np.array([1.0]))[0, 0] / W for c in fitted]
    left = sorted((i for i, x in enumerate(bottom) if x < 0.5), key=lambda i: -bottom[i])
    right = sorted((i for i, x in enumerate(bottom) if x >= 0.5), key=lambda i: bottom[i])
    for slots, idx in (((1, 0), left), ((2, 3), right)):
        for slot, i in zip(slots, idx):
            points[slot] = fitted[i] / scale
            exist[slot] = True
    return LaneLabel(image, points, exist, "", dropped=max(0, len(left) - 2) + max(0, len(right) - 2),
                     short=short)


def read_labels(root: str | Path, patterns: list[str], min_points: int = 6, on_bad: str = "error") -> list[LaneLabel]:
    """Every label line of the files matching `patterns` (globs relative to root), in order."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data.root {str(root)!r} is not a directory")
    files: list[Path] = []
    for pat in patterns:
        matched = sorted(Path(p) for p in glob.glob(str(root / pat)))
        if not matched:
            raise UserError(f"no TuSimple label file matches {pat!r} under {str(root)!r}")
        files.extend(matched)
    labels, skipped, sizes = [], 0, {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            for lineno, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    label = parse_line(text, root, min_points, sizes)
                except BadLabel as e:
                    where = f"{path}:{lineno}"
                    if on_bad == "error":
                        raise UserError(f"{where}: {e} (set data.on_bad_label=skip to leave such lines out)") from None
                    skipped += 1
                    if skipped <= MAX_REPORTED:
                        print(f"tusimple: skipping {where}: {e}", file=sys.stderr)
                    continue
                label.where = f"{path}:{lineno}"
                labels.append(label)
    short, beyond = sum(lab.short for lab in labels), sum(lab.dropped for lab in labels)
    if short:
        print(f"tusimple: left out {short} lane(s) with fewer than {min_points} labelled points (or on one image "
              f"row) in {sum(lab.short > 0 for lab in labels)} line(s); their other lanes are kept "
              "(data.min_lane_points)", file=sys.stderr)
    if beyond:
        print(f"tusimple: left out {beyond} lane(s) beyond two per side of the ego lane "
              f"in {sum(lab.dropped > 0 for lab in labels)} line(s)", file=sys.stderr)
    if skipped:
        print(f"tusimple: skipped {skipped} bad label line(s) of {skipped + len(labels)} in {len(files)} file(s)",
              file=sys.stderr)
    if not labels:
        raise UserError(f"no usable TuSimple labels in {', '.join(str(p) for p in files)}")
    return labels


class TuSimpleDataset(torch.utils.data.Dataset):
    """Same items as the synthetic LaneDataset: image [3, H, W], points [4, 6, 2], exist [4]."""

    def __init__(self, labels: list[LaneLabel], image_size: tuple[int, int]):
        self.labels, self.image_size = labels, image_size

    def __len__(self) -> int:
        return len(self.labels)

    def lanes(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        lab = self.labels[index]
        return lab.points, lab.exist

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        lab = self.labels[index]
        bgr = cv2.imread(str(lab.image), cv2.IMREAD_COLOR)
        if bgr is None:
            raise UserError(f"{lab.where}: image {str(lab.image)!r} could not be read")
        H, W = self.image_size
        rgb = cv2.cvtColor(cv2.resize(bgr, (W, H), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        return {
            "image": torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous(),
            "points": torch.from_numpy(lab.points.astype(np.float32)),
            "exist": torch.from_numpy(lab.exist.astype(np.float32)),
        }


# ---------------------------------------------------------------- writer (synthetic -> TuSimple files)

def lane_rows(ctrl: np.ndarray, size: tuple[int, int], h_samples: list[int]) -> list[int]:
    """x in pixels of one normalized curve at each row of h_samples, -2 outside its y range.

    Lanes are monotone in y (the synthetic ones exactly), so x(y) is read off a dense sampling."""
    H, W = size
    pts = evaluate(ctrl, np.linspace(0.0, 1.0, 2001)) * np.array([W, H])
    order = np.argsort(pts[:, 1])
    ys, xs = pts[order, 1], pts[order, 0]
    out = []
    for y in h_samples:
        out.append(int(round(float(np.interp(y, ys, xs)))) if ys[0] <= y <= ys[-1] else MISSING)
    return out


def export_synthetic(dataset, root: str | Path, label_name: str, n: int | None = None, h_step: int = 2) -> Path:
    """Write the first n items of a synthetic LaneDataset as TuSimple files under root:
    clips/<split>/<i>.png and one label file `label_name` (JSON lines). Returns its path."""
    root = Path(root)
    spec = dataset.spec
    H, W = spec.image_height, spec.image_width
    h_samples = list(range(h_step // 2, H, h_step))
    n = len(dataset) if n is None else min(n, len(dataset))
    (root / "clips" / dataset.split).mkdir(parents=True, exist_ok=True)
    label_path = root / label_name
    with open(label_path, "w", encoding="utf-8") as f:
        for i in range(n):
            item = dataset[i]
            raw = f"clips/{dataset.split}/{i:05d}.png"
            rgb = (item["image"].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
            cv2.imwrite(str(root / raw), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            lanes = [lane_rows(item["points"][j].numpy(), (H, W), h_samples)
                     for j in range(N_SLOTS) if item["exist"][j] > 0.5]
            f.write(json.dumps({"lanes": lanes, "h_samples": h_samples, "raw_file": raw}) + "\n")
    return label_path
