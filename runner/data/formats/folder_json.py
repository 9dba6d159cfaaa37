"""A folder + JSON layout for "image files + per-sample JSON targets" datasets (puzzle, sequence).

    <root>/<split>/                     split = train | val | test
        layout.json                     optional; written by the exporter, checked by the reader
        000000.json                     one sample: its image files and its targets
        000000.image.png                images are read with OpenCV (any format it reads)
        000000.piece.png
        000001.json ...

A sample file names each image by its key (a path relative to the split folder) and holds each
target as a JSON number or list, e.g. for the puzzle task:

    {"image": "000000.image.png", "piece": "000000.piece.png", "box": [0.41, 0.62, 0.026, 0.04], "rotation": 2}

Samples are the split folder's *.json files other than layout.json and hidden files (`._*` resource
forks a macOS copy leaves), in name order; keys a sample holds beyond its layout (ids, sources) are
ignored. Images may be PNG or JPEG, grayscale, RGBA or 16-bit: OpenCV reads each as 8-bit RGB. Which image
keys and targets (type and shape) a task expects is its `Layout`; layout.json records it so a
folder written for one task is not read as another. Every problem in a file (bad JSON, a missing
key or image, a wrong shape, a value the task rejects) is a UserError naming the file.

Export synthetic data into this layout (so the reader is tested on real files):

    python -m runner.data.formats.folder_json --config configs/puzzle.yaml --out data/puzzle --train 512 --val 64
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import cv2
import numpy as np
import torch

from runner.errors import UserError

FORMAT = "runner.folder_json"
VERSION = 1
LAYOUT_FILE = "layout.json"
DTYPES = {"float": (np.float32, torch.float32), "int": (np.int64, torch.long)}


@dataclass(frozen=True)
class Layout:
    """What one sample holds: image keys (files) and targets name -> (dtype "float"|"int", shape)."""

    images: tuple[str, ...]
    targets: dict[str, tuple[str, tuple[int, ...]]]
    notes: dict[str, str] = field(default_factory=dict)  # what each field means, copied to layout.json

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "images": list(self.images),
                "targets": {k: {"dtype": t, "shape": list(s), **({"note": self.notes[k]} if k in self.notes else {})}
                            for k, (t, s) in self.targets.items()}}


# ---------------------------------------------------------------- writing

def to_uint8_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """CHW float in [0, 1] -> HWC uint8 RGB."""
    a = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(a)


def write_split(samples: Iterable[dict], split_dir: str | Path, layout: Layout, limit: Optional[int] = None) -> int:
    """Write dataset items (dicts of tensors, as a Dataset returns them) into split_dir; returns the count."""
    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / LAYOUT_FILE).write_text(json.dumps(layout.to_json(), indent=1))
    n = 0
    for i, sample in enumerate(samples):
        if limit is not None and i >= limit:
            break
        stem = f"{i:06d}"
        record: dict = {}
        for key in layout.images:
            name = f"{stem}.{key}.png"
            rgb = to_uint8_hwc(sample[key])
            if not cv2.imwrite(str(split_dir / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {split_dir / name}")
            record[key] = name
        for key in layout.targets:
            v = sample[key]
            record[key] = v.tolist() if isinstance(v, (torch.Tensor, np.ndarray)) else v
        (split_dir / f"{stem}.json").write_text(json.dumps(record))
        n += 1
    return n


# ---------------------------------------------------------------- reading

def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot be read ({e})") from None


def _target(path: Path, key: str, value, dtype: str, shape: tuple[int, ...]):
    np_dtype = DTYPES[dtype][0]
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{path}: target {key!r} must be a number or a list of numbers, got {value!r}") from None
    if arr.shape != tuple(shape):
        raise UserError(f"{path}: target {key!r} must have shape {list(shape)}, got {list(arr.shape)} ({value!r})")
    if not np.isfinite(arr).all():
        raise UserError(f"{path}: target {key!r} is not finite: {value!r}")
    if dtype == "int" and not (arr == arr.round()).all():
        raise UserError(f"{path}: target {key!r} must be an integer, got {value!r}")
    out = arr.astype(np_dtype)
    return out.tolist() if out.ndim else out.item()


class FolderJsonDataset(torch.utils.data.Dataset):
    """Reads one split folder. All sample files are parsed and checked at construction (a bad file
    stops the run before training); images are read lazily.

    sizes: key -> (width, height); an image of another size is resized (INTER_AREA) to it.
    check: optional targets -> problem-or-None, for a task's own rules (ranges, classes).
    Items: each image key -> [3, H, W] float32 in [0, 1]; each target -> tensor of its dtype/shape.
    """

    def __init__(self, split_dir: str | Path, layout: Layout, sizes: Optional[dict[str, tuple[int, int]]] = None,
                 check: Optional[Callable[[dict], Optional[str]]] = None):
        self.dir, self.layout, self.sizes = Path(split_dir), layout, dict(sizes or {})
        if not self.dir.is_dir():
            raise UserError(f"data folder {str(self.dir)!r} does not exist (expected <root>/<split>/*.json)")
        meta_path = self.dir / LAYOUT_FILE
        if meta_path.exists():
            meta = _load_json(meta_path)
            want = layout.to_json()
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise UserError(f"{meta_path}: not a {FORMAT} layout file")
            if meta.get("images") != want["images"] or sorted(meta.get("targets", {})) != sorted(want["targets"]):
                raise UserError(f"{meta_path}: this folder holds images {meta.get('images')} and targets "
                                f"{sorted(meta.get('targets', {}))}, but the task expects images {want['images']} "
                                f"and targets {sorted(want['targets'])}")
        # hidden files are not samples: macOS copies leave `._<name>.json` resource forks beside each file
        self.files = sorted(p for p in self.dir.glob("*.json") if p.name != LAYOUT_FILE and not p.name.startswith("."))
        if not self.files:
            raise UserError(f"data folder {str(self.dir)!r} holds no sample *.json files")
        self.images: list[dict[str, Path]] = []
        self.targets: list[dict] = []
        for path in self.files:
            rec = _load_json(path)
            if not isinstance(rec, dict):
                raise UserError(f"{path}: a sample must be a JSON object, got {type(rec).__name__}")
            missing = [k for k in (*layout.images, *layout.targets) if k not in rec]
            if missing:
                raise UserError(f"{path}: missing key(s) {missing}; a sample needs {[*layout.images, *layout.targets]}")
            imgs = {}
            for key in layout.images:
                if not isinstance(rec[key], str):
                    raise UserError(f"{path}: image {key!r} must be a file name, got {rec[key]!r}")
                img_path = self.dir / rec[key]
                if not img_path.is_file():
                    raise UserError(f"{path}: image {key!r} file {rec[key]!r} does not exist")
                imgs[key] = img_path
            targets = {k: _target(path, k, rec[k], *layout.targets[k]) for k in layout.targets}
            problem = check(targets) if check else None
            if problem:
                raise UserError(f"{path}: {problem}")
            self.images.append(imgs)
            self.targets.append(targets)

    def __len__(self) -> int:
        return len(self.files)

    def read_image(self, path: Path, key: str) -> torch.Tensor:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise UserError(f"{path}: not an image OpenCV can read")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if key in self.sizes and (rgb.shape[1], rgb.shape[0]) != tuple(self.sizes[key]):
            rgb = cv2.resize(rgb, tuple(self.sizes[key]), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32) / 255)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        out = {k: self.read_image(p, k) for k, p in self.images[index].items()}
        for k, v in self.targets[index].items():
            out[k] = torch.tensor(v, dtype=DTYPES[self.layout.targets[k][0]][1])
        return out


# ---------------------------------------------------------------- export CLI

def export(cfg, out: str | Path, counts: dict[str, int]) -> dict[str, int]:
    """Write a task's synthetic splits into the layout; the task must define `folder_layout`."""
    from runner.tasks import build_task

    task = build_task(cfg)
    layout = getattr(task, "folder_layout", None)
    if layout is None:
        raise UserError(f"task {cfg.task!r} has no folder + JSON layout")
    written = {}
    for split, n in counts.items():
        ds = task.dataset(split)
        written[split] = write_split((ds[i] for i in range(min(n, len(ds)))), Path(out) / split, layout)
    return written


def main(argv: list[str] | None = None) -> int:
    from runner.config import load_config, parse_overrides
    from runner.errors import exit_on_user_error

    prog = "python -m runner.data.formats.folder_json"
    with exit_on_user_error(prog):
        p = argparse.ArgumentParser(prog=prog, allow_abbrev=False,
                                    description="Export a task's synthetic data as folder + JSON files.")
        p.add_argument("--config", required=True)
        p.add_argument("--out", required=True, help="root folder; train/ and val/ are created in it")
        p.add_argument("--train", type=int, default=512, help="train samples to write")
        p.add_argument("--val", type=int, default=64, help="val samples to write")
        args, rest = p.parse_known_args(argv)
        cfg = load_config(args.config, parse_overrides(rest))
        written = export(cfg, args.out, {"train": args.train, "val": args.val})
        print(f"wrote {written} samples to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
