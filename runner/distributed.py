"""torchrun support: process group set-up, rank-0 gating, agreement on run id and directory.

`torchrun --nproc_per_node=N -m runner.train --config ...` sets RANK/WORLD_SIZE/LOCAL_RANK; each
process trains its shard of every batch under DistributedDataParallel, statistics are
all-reduced before each host read (so pred/std is over the global batch), and only rank 0 logs
to W&B, draws overlays, writes checkpoints and sends alerts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local), device


def broadcast(value, d: Dist):
    """rank 0's value on every rank (run id, run directory)."""
    if not d.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: torch.nn.Module, d: Dist, device: torch.device) -> torch.nn.Module:
    if not d.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


class ValShard(torch.utils.data.Sampler[int]):
    """Rank `rank`'s validation samples: rank, rank + world, ... of range(n), without padding.

    The ranks' shards are disjoint and together hold every sample once, so the all-reduced sums and
    counts of the validation meters are those of a one-process evaluation (a padding sampler such
    as DistributedSampler repeats samples, which would then count twice). Shards differ in length
    by at most one sample, so the number of batches can differ by one: a DDP forward under no_grad
    syncs buffers only on the first evaluation forward after training, which every rank makes (each
    shard holds at least one sample), and the meters are all-reduced once at the end.
    """

    def __init__(self, n: int, rank: int, world: int):
        if n < world:
            raise ValueError(f"{n} validation samples cannot be shared by {world} processes")
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
