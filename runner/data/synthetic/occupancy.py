"""Synthetic sparse voxel scenes (seed 004): ~0.83% of voxels occupied, some scenes empty.

A scene is a grid [X, Y, Z] (z up) holding grounded boxes (buildings, cars) and trees (a thin
trunk under a round canopy that floats above the ground). Objects are added until the scene
holds about `occupancy_rate * X * Y * Z / (1 - empty_fraction)` voxels (x U[0.5, 1.5]), so the
rate over all scenes, empty ones included, is `occupancy_rate`; an object is only added while it
overshoots that count by less than half its own volume, so the count is unbiased.

The network never sees the grid. It sees what a sensor looking straight down would report
(an aerial lidar sweep, as in UAVScenes): a bird's-eye height image [2, X, Y]
    channel 0: height of the first surface hit from above, / Z (0 on bare ground)
               plus N(0, height_noise) voxels of noise, and spurious returns (clutter)
    channel 1: 1 where the column was observed, 0 where it was dropped (obs_dropout)
From it the occupancy below the surface must be inferred: solid to the ground under a box,
a canopy of some thickness and a trunk under a tree (round footprint), nothing in dropped
columns unless the neighbours say so. Everything is deterministic per (seed, split, index).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class OccupancySpec:
    grid: tuple[int, int, int] = (64, 64, 16)  # X, Y, Z voxels (seed: 200 x 200 x 121)
    occupancy_rate: float = 0.0083  # mean fraction of occupied voxels over all scenes (seed: 0.83%)
    empty_fraction: float = 0.05  # scenes with no object at all
    tree_fraction: float = 0.3  # objects that are trees rather than boxes
    obs_dropout: float = 0.2  # fraction of columns the sensor misses
    height_noise: float = 0.5  # std of the observed height, in voxels
    clutter_rate: float = 0.002  # fraction of columns with a spurious return at a random height
    empty_label_fraction: float = 0.0  # fault injection: labels that came out empty (see label_is_empty)
    seed: int = 0


def _box(rng, occ: np.ndarray) -> None:
    X, Y, Z = occ.shape
    wx = max(1, round(rng.uniform(0.03, 0.12) * X))
    wy = max(1, round(rng.uniform(0.03, 0.12) * Y))
    h = max(1, round(rng.uniform(0.1, 0.6) * Z))
    x0, y0 = int(rng.integers(0, X - wx + 1)), int(rng.integers(0, Y - wy + 1))
    occ[x0:x0 + wx, y0:y0 + wy, :h] = True


def _tree(rng, occ: np.ndarray) -> None:
    X, Y, Z = occ.shape
    r = max(1.0, rng.uniform(0.025, 0.06) * X)  # canopy radius
    top = max(3, round(rng.uniform(0.35, 0.8) * Z))
    thick = max(1, round(rng.uniform(0.3, 0.5) * top))  # canopy depth
    cx, cy = rng.uniform(0, X), rng.uniform(0, Y)
    xs, ys = np.arange(X) + 0.5, np.arange(Y) + 0.5
    disk = (xs[:, None] - cx) ** 2 + (ys[None, :] - cy) ** 2 <= r * r
    occ[disk, top - thick:top] = True
    t = max(1, round(X / 64))  # trunk width in voxels
    tx, ty = min(int(cx), X - t), min(int(cy), Y - t)
    occ[tx:tx + t, ty:ty + t, :top - thick] = True


def scene(spec: OccupancySpec, split: str, index: int) -> np.ndarray:
    """The occupancy grid bool [X, Y, Z] of one sample."""
    rng = np.random.default_rng([spec.seed, SPLIT_CODES[split], index])
    occ = np.zeros(spec.grid, dtype=bool)
    if rng.random() < spec.empty_fraction:
        return occ
    goal = spec.occupancy_rate * occ.size / (1.0 - spec.empty_fraction) * rng.uniform(0.5, 1.5)
    count = 0
    for _ in range(200):
        trial = occ.copy()
        (_tree if rng.random() < spec.tree_fraction else _box)(rng, trial)
        new = int(trial.sum())
        if new - goal > (new - count) / 2:  # adding it would overshoot by more than half of it
            if count == 0:
                continue
            break
        occ, count = trial, new
    return occ


def label_is_empty(spec: OccupancySpec, split: str, index: int) -> bool:
    """Whether this sample's label grid is emptied while its sensor view still shows the scene.

    A deliberate fault, off by default. It reproduces seed 004's UAVScenes note ("most samples had
    zero occupied voxels" after pose-only voxelization): the labels a loss sees are empty, the
    input is not. No loss can fix that; only a data check can (the Occ3D loader counts empty
    samples and refuses a dataset that is all empty).
    """
    if spec.empty_label_fraction <= 0:
        return False
    return bool(np.random.default_rng([spec.seed, SPLIT_CODES[split], index, 2]).random() < spec.empty_label_fraction)


def top_height(occ: np.ndarray) -> np.ndarray:
    """Height (in voxels) of the highest occupied voxel + 1 per column; 0 for empty columns. [X, Y]."""
    Z = occ.shape[2]
    any_ = occ.any(2)
    top = Z - np.argmax(occ[:, :, ::-1], axis=2)
    return np.where(any_, top, 0)


def observe(occ: np.ndarray, spec: OccupancySpec, split: str, index: int) -> np.ndarray:
    """The sensor's bird's-eye view float32 [2, X, Y] of an occupancy grid (see the module doc)."""
    rng = np.random.default_rng([spec.seed, SPLIT_CODES[split], index, 1])
    X, Y, Z = occ.shape
    height = top_height(occ).astype(np.float32)
    height += rng.normal(0.0, spec.height_noise, size=(X, Y)).astype(np.float32)
    clutter = rng.random((X, Y)) < spec.clutter_rate
    height[clutter] = rng.uniform(0, Z, size=int(clutter.sum()))
    seen = rng.random((X, Y)) >= spec.obs_dropout
    height = np.clip(height, 0.0, Z) / Z * seen
    return np.stack([height, seen.astype(np.float32)]).astype(np.float32)


class OccupancyDataset(torch.utils.data.Dataset):
    """Samples {"bev": float32 [2, X, Y], "occupancy": uint8 [X, Y, Z]} generated on the fly.

    Occupancy stays uint8 until it reaches the device (a seed-size grid is 4.8M voxels).
    """

    def __init__(self, spec: OccupancySpec, split: str, size: int):
        self.spec, self.split, self.size = spec, split, size

    def __len__(self) -> int:
        return self.size

    def grid(self, index: int) -> np.ndarray:
        """The label grid bool [X, Y, Z] of a sample (empty if the label fault hit it)."""
        occ = scene(self.spec, self.split, index)
        return np.zeros_like(occ) if label_is_empty(self.spec, self.split, index) else occ

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        occ = scene(self.spec, self.split, index)
        bev = observe(occ, self.spec, self.split, index)
        if label_is_empty(self.spec, self.split, index):
            occ = np.zeros_like(occ)
        return {"bev": torch.from_numpy(bev), "occupancy": torch.from_numpy(occ.view(np.uint8))}

    def statistics(self, samples: int = 500) -> dict[str, float]:
        """Label occupancy rate and empty-label fraction over the first `samples` samples (no rendering);
        scene_occupancy_rate counts the scenes as generated, before any label fault."""
        m = min(samples, self.size)
        scenes = np.array([scene(self.spec, self.split, i).sum() for i in range(m)], dtype=np.float64)
        emptied = np.array([label_is_empty(self.spec, self.split, i) for i in range(m)])
        labels = np.where(emptied, 0.0, scenes)
        voxels = m * np.prod(self.spec.grid)
        return {"samples": m, "occupancy_rate": float(labels.sum() / voxels),
                "empty_fraction": float((labels == 0).mean()),
                "scene_occupancy_rate": float(scenes.sum() / voxels)}
