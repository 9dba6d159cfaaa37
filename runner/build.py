"""Building blocks shared by train, lr_find and the benchmarks: device, seeding, loaders, optimizer."""
from __future__ import annotations

import random

import numpy as np
import torch

from runner.distributed import ValShard
from runner.data.loading import EpochSampler
from runner.errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but CUDA is not available on this machine "
                        "(use --device cpu or --device auto)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps was requested but MPS is not available on this machine")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loaders(cfg, train_ds, val_ds, device: torch.device, rank: int = 0, world: int = 1):
    """Train loader with a resumable, DDP-sharded EpochSampler; val loader sharded the same way."""
    for split, ds in (("train", train_ds), ("val", val_ds)):
        if len(ds) == 0:
            raise UserError(f"the {split} dataset of task {cfg.task!r} is empty (check data.* settings or files)")
    t = cfg.train
    common = dict(num_workers=t.num_workers, pin_memory=device.type == "cuda",
                  persistent_workers=t.num_workers > 0)
    per_rank = -(-len(train_ds) // world)
    train = torch.utils.data.DataLoader(
        train_ds, batch_size=t.batch_size, sampler=EpochSampler(len(train_ds), cfg.seed, True, rank, world),
        drop_last=per_rank >= t.batch_size, **common)
    if len(val_ds) < world:
        raise UserError(f"the val dataset of task {cfg.task!r} has {len(val_ds)} samples, fewer than the "
                        f"{world} processes (each process evaluates its own share)")
    val_sampler = ValShard(len(val_ds), rank, world) if world > 1 else None  # every sample exactly once
    val = torch.utils.data.DataLoader(val_ds, batch_size=t.batch_size, sampler=val_sampler, **common)
    return train, val


def make_optimizer(model: torch.nn.Module, optim_cfg, criterion: torch.nn.Module | None = None,
                   verbose: bool = True) -> torch.optim.Optimizer:
    """AdamW over the model's own parameters: weight decay on matrices/kernels, none on biases/norms.

    A loss with trainable parameters (learnable loss weights, which the user must opt into in the
    loss config) gets its own group named "loss", without weight decay, and is announced loudly.
    Fused AdamW lets the trainer skip a non-finite step on the device, without a host sync.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"name": "decay", "params": decay, "weight_decay": optim_cfg.weight_decay},
              {"name": "no_decay", "params": no_decay, "weight_decay": 0.0}]
    loss_named = [(n, p) for n, p in (criterion.named_parameters() if criterion is not None else []) if p.requires_grad]
    msg = (f"optimizer: AdamW, {sum(p.numel() for p in decay):,} decayed + "
           f"{sum(p.numel() for p in no_decay):,} non-decayed model parameters")
    if loss_named:
        groups.append({"name": "loss", "params": [p for _, p in loss_named], "weight_decay": 0.0})
        msg += f"; WARNING: {len(loss_named)} learnable loss parameters ({', '.join(n for n, _ in loss_named)})"
    else:
        msg += " (no loss parameters)"
    if verbose:
        print(msg)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=optim_cfg.lr, betas=optim_cfg.betas, fused=True)
