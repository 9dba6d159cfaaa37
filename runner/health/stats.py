"""Collapse statistics, accumulated on the device under no_grad.

This module is the one place that names the collapse metrics:
    pred/mean, pred/std, pred/min, pred/max    over every element of the prediction vectors
    gt/std                                     std across samples of the target vectors
    pred/std_ratio                             pred/std / gt/std (collapse: far below 1)
    pred/<r>_mean, pred/<r>_max, pred/<r>_rate, target/<r>_rate    for each sparse/rare target r
std is taken across all samples seen in the interval (per dimension, then averaged over
dimensions), so it is meaningful even at batch size 2.
"""
from __future__ import annotations

import torch
from torch import Tensor

from runner.tasks.base import MonitorView

PROB_THRESHOLD = 0.5  # a probability above this counts as a positive prediction


class CollapseStats:
    def __init__(self, prefix: str = ""):
        self.prefix = prefix  # "val/" for evaluation statistics
        self.reset()

    def reset(self) -> None:
        self.n = None  # rows seen
        self.s1 = self.s2 = self.t1 = self.t2 = None
        self.vmin = self.vmax = None
        self.rates: dict[str, list[Tensor]] = {}

    @torch.no_grad()
    def update(self, view: MonitorView) -> None:
        pred = view.pred.detach().float().flatten(1)
        target = view.target.detach().float().flatten(1)
        if view.mask is None:
            w = torch.ones(pred.shape[0], 1, device=pred.device)
        else:
            w = view.mask.detach().float().reshape(-1, 1)
        rows = w.sum()
        pred, target = pred * w, target * w  # masked rows add nothing to the sums
        inf = torch.tensor(float("inf"), device=pred.device)
        keep = w > 0
        pmin = torch.where(keep, pred, inf).amin() if pred.numel() else inf
        pmax = torch.where(keep, pred, -inf).amax() if pred.numel() else -inf
        if self.n is None:
            self.n = rows
            self.s1, self.s2 = pred.sum(0), (pred * pred).sum(0)  # pred is already masked
            self.t1, self.t2 = target.sum(0), (target * target).sum(0)
            self.vmin, self.vmax = pmin, pmax
        else:
            self.n = self.n + rows
            self.s1 += pred.sum(0)
            self.s2 += (pred * pred).sum(0)
            self.t1 += target.sum(0)
            self.t2 += (target * target).sum(0)
            self.vmin = torch.minimum(self.vmin, pmin)
            self.vmax = torch.maximum(self.vmax, pmax)
        for name, (prob, pos) in view.rates.items():
            prob = prob.detach().float()
            pos = pos.detach().float()
            cur = torch.stack([
                prob.sum(), (prob > PROB_THRESHOLD).float().sum(), pos.sum(),
                torch.tensor(float(prob.numel()), device=prob.device),
                prob.max() if prob.numel() else torch.zeros((), device=prob.device),
            ])
            if name in self.rates:
                acc = self.rates[name]
                acc[0] = acc[0] + cur[:4]
                acc[1] = torch.maximum(acc[1], cur[4])
            else:
                self.rates[name] = [cur[:4].clone(), cur[4].clone()]

    def all_reduce(self) -> None:
        """Combine DDP ranks in place: sums add, min/max reduce, so std is over the global batch."""
        import torch.distributed as dist

        if self.n is not None:
            sums = torch.cat([self.n.reshape(1), self.s1, self.s2, self.t1, self.t2])
            dist.all_reduce(sums)
            d = self.s1.numel()
            self.n, self.s1, self.s2 = sums[0], sums[1:1 + d], sums[1 + d:1 + 2 * d]
            self.t1, self.t2 = sums[1 + 2 * d:1 + 3 * d], sums[1 + 3 * d:]
            dist.all_reduce(self.vmin, op=dist.ReduceOp.MIN)
            dist.all_reduce(self.vmax, op=dist.ReduceOp.MAX)
        for name in sorted(self.rates):
            acc = self.rates[name]
            dist.all_reduce(acc[0])
            dist.all_reduce(acc[1], op=dist.ReduceOp.MAX)

    def tensors(self) -> dict[str, Tensor]:
        """0-d device tensors keyed by metric name (no host read here)."""
        return {self.prefix + k: v for k, v in self._tensors().items()}

    def _tensors(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        if self.n is not None:
            n = self.n.clamp_min(1)
            mean = self.s1 / n
            var = (self.s2 / n - mean * mean).clamp_min(0) * (n / (n - 1).clamp_min(1))
            tmean = self.t1 / n
            tvar = (self.t2 / n - tmean * tmean).clamp_min(0) * (n / (n - 1).clamp_min(1))
            pstd, tstd = var.sqrt().mean(), tvar.sqrt().mean()
            out["pred/mean"] = mean.mean()
            out["pred/std"] = pstd
            out["pred/min"] = self.vmin
            out["pred/max"] = self.vmax
            out["gt/std"] = tstd
            out["pred/std_ratio"] = pstd / tstd.clamp_min(1e-12)
        for name, (sums, pmax) in self.rates.items():
            total = sums[3].clamp_min(1)
            out[f"pred/{name}_mean"] = sums[0] / total
            out[f"pred/{name}_rate"] = sums[1] / total
            out[f"target/{name}_rate"] = sums[2] / total
            out[f"pred/{name}_max"] = pmax
        return out
