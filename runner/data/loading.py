"""From dataset to device: the resumable, DDP-sharded epoch sampler and batch moving."""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch


class EpochSampler(torch.utils.data.Sampler[int]):
    """Deterministic per-epoch order (seed, epoch) that can start mid-epoch; shards for DDP.

    Each rank takes every world-th index of the same permutation (padded to equal length), so
    resuming needs only (epoch, batches done), and all ranks agree without communication.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1):
        self.n, self.seed, self.shuffle, self.rank, self.world = n, seed, shuffle, rank, world
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        per_rank = math.ceil(self.n / self.world)
        order += order[: per_rank * self.world - self.n]  # pad so every rank has as many
        return order[self.rank::self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.skip:])

    def __len__(self) -> int:
        return max(0, math.ceil(self.n / self.world) - self.skip)


def move(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    """Host-to-device copy (non-blocking from pinned memory on CUDA); 4D images as NHWC if asked."""
    nb = device.type == "cuda"
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=nb)
            if channels_last and v.dim() == 4 and v.is_floating_point():
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def batch_size_of(batch: dict[str, Any]) -> int:
    return next(iter(v for v in batch.values() if isinstance(v, torch.Tensor))).shape[0]
