"""Generated images: one bright disc on a noisy background; targets are its centre and radius.

Each sample is a pure function of (seed, split, index), so every epoch and every worker sees the
same data and nothing is stored on disk.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class DiscDataset(Dataset):
    def __init__(self, size: int, image_size: int, min_radius: float, max_radius: float, noise: float,
                 seed: int, split: str):
        self.size, self.image_size, self.noise = size, image_size, noise
        self.min_radius, self.max_radius = min_radius, max_radius
        self.seed = seed * 2 + (0 if split == "train" else 1)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, i])
        s = self.image_size
        r = rng.uniform(self.min_radius, self.max_radius)  # pixels
        cx, cy = rng.uniform(r, s - r, size=2)
        yy, xx = np.mgrid[0:s, 0:s] + 0.5
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.float32)
        image = disc + rng.normal(0.0, self.noise, (s, s)).astype(np.float32)
        return {"image": torch.from_numpy(image[None]),
                "xy": torch.tensor([cx / s, cy / s], dtype=torch.float32),  # normalized to [0, 1]
                "radius": torch.tensor([r / s], dtype=torch.float32)}
