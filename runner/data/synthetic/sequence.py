"""Synthetic next-object data (seed 003).

Each scene holds N objects (N uniform in [min_objects, max_objects], mean 21 by default) in a
fixed, learnable order: left to right. The input marks the first k objects (blue) and leaves the
rest light grey; the target is the next object's normalized centre (x, y) and `done` = 1 when
k == N. Sampling k uniformly in [0, N] makes done rare (E[1/(N+1)] ~ 4.8%), as in the seed;
`done_rate` forces a chosen fraction instead. Deterministic per (seed, split, index).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
MARKED = (0.25, 0.45, 0.95)
UNMARKED = (0.85, 0.85, 0.85)


@dataclass(frozen=True)
class SequenceSpec:
    image_size: int = 384
    min_objects: int = 12
    max_objects: int = 30
    radius: int = 6
    done_rate: float | None = None  # None: k uniform in [0, N] (rare done); else P(k == N)
    seed: int = 0


def scene(spec: SequenceSpec, split: str, index: int) -> tuple[np.ndarray, int]:
    """Object centres in pixels, sorted by x (the order), and k for this sample."""
    rng = np.random.default_rng([spec.seed, SPLIT_CODES[split], index])
    n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    size, r = spec.image_size, spec.radius
    lo, hi = r + 1, size - r - 1
    min_d2 = (2.2 * r) ** 2
    centres = np.empty((0, 2))
    tries = 0
    while len(centres) < n and tries < 50 * n:  # rejection sampling keeps objects apart
        tries += 1
        c = rng.uniform(lo, hi, size=2)
        if len(centres) == 0 or ((centres - c) ** 2).sum(1).min() >= min_d2:
            centres = np.vstack([centres, c])
    centres = centres[np.argsort(centres[:, 0], kind="stable")]
    n = len(centres)
    if spec.done_rate is None:
        k = int(rng.integers(0, n + 1))
    else:
        k = n if rng.random() < spec.done_rate else int(rng.integers(0, n))
    return centres, k


def render(spec: SequenceSpec, centres: np.ndarray, k: int, split: str, index: int) -> np.ndarray:
    rng = np.random.default_rng([spec.seed, SPLIT_CODES[split], index, 1])
    s = spec.image_size
    img = (0.08 + 0.06 * rng.random((s, s, 3))).astype(np.float32)
    for j, (x, y) in enumerate(centres):
        color = MARKED if j < k else UNMARKED
        cv2.circle(img, (int(round(x)), int(round(y))), spec.radius, color, -1, cv2.LINE_AA)
    return img


class SequenceDataset(torch.utils.data.Dataset):
    def __init__(self, spec: SequenceSpec, split: str, size: int):
        self.spec, self.split, self.size = spec, split, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        centres, k = scene(self.spec, self.split, index)
        n = len(centres)
        img = render(self.spec, centres, k, self.split, index)
        done = k == n
        xy = centres[k] / self.spec.image_size if not done else np.zeros(2)
        return {
            "image": torch.from_numpy(img).permute(2, 0, 1).contiguous(),
            "target_xy": torch.tensor(xy, dtype=torch.float32),
            "done": torch.tensor(float(done)),
            "k": torch.tensor(k), "n": torch.tensor(n),
        }

    def done_rate(self, samples: int = 2000) -> float:
        """Exact fraction of done samples over the first `samples` indices (scenes only, no render)."""
        m = min(samples, self.size)
        return float(np.mean([len(c) == k for c, k in (scene(self.spec, self.split, i) for i in range(m))]))
