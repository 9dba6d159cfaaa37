"""Collapse statistics, accumulated on the device under no_grad.

This module is the one place that names the collapse metrics:
    pred/mean, pred/std, pred/min, pred/max    over every element of the prediction vectors
    gt/std                                     std across samples of the target vectors
    pred/std_ratio                             pred/std / gt/std (collapse: far below 1)
    pred/mean_gap                              |pred mean - target mean| / target std, per dimension, averaged
                                               over the dimensions whose target varies: ~0 when a collapsed
                                               model predicts the average target
    pred/target_corr                           Pearson correlation of prediction and target across samples, per
                                               dimension, averaged over the dimensions where both vary: whether
                                               the outputs follow the targets, whatever their spread (a
                                               diagnostic: no rule reads it; docs/health.md "Measured" says why)
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
        self.moments: Tensor | None = None  # [rows, sum pred, sum target, sum pred^2, sum target^2, sum pred*target] (D each)
        self.dim = 0  # D
        self.extremes: Tensor | None = None  # [min pred, -max pred]
        self.rates: dict[str, list] = {}  # name -> [sums (prob, prob > threshold, target) [3], max prob, count]

    @torch.no_grad()
    def update(self, view: MonitorView) -> None:
        # a handful of tensor operations per call: the statistics run every training step
        pred = view.pred.detach().float().flatten(1)
        target = view.target.detach().float().flatten(1)
        b, d = pred.shape
        if view.mask is None:
            x = torch.cat([pred.new_ones(b, 1), pred, target], 1)
            keep = None
        else:
            w = view.mask.detach().float().reshape(-1, 1)
            x = torch.cat([w, pred, target], 1) * w  # masked rows add nothing to the sums (w is 0/1)
            keep = w > 0
        # float64 sums: var = E[x^2] - E[x]^2 cancels catastrophically in float32 once a prediction
        # has collapsed (std 1e-4 around a mean of 0.5 is below float32's resolution there)
        x = x.to(torch.float32 if x.device.type == "mps" else torch.float64)
        sq = x[:, 1:]
        moments = torch.cat([x.sum(0), (sq * sq).sum(0), (x[:, 1:1 + d] * x[:, 1 + d:]).sum(0)])
        if pred.numel():
            both = torch.cat([pred, -pred], 1)
            if keep is not None:
                both = torch.where(keep, both, float("inf"))
            extremes = both.view(b, 2, d).amin((0, 2))
        else:
            extremes = torch.full((2,), float("inf"), device=pred.device)
        if self.moments is None:
            self.moments, self.extremes, self.dim = moments, extremes, d
        else:
            self.moments += moments
            self.extremes = torch.minimum(self.extremes, extremes)
        for name, (prob, pos) in view.rates.items():
            prob = prob.detach().float()
            sums = torch.stack([prob.sum(), (prob > PROB_THRESHOLD).sum(), pos.detach().sum()]).float()
            pmax = prob.max() if prob.numel() else torch.zeros((), device=prob.device)
            if name in self.rates:
                acc = self.rates[name]
                acc[0] += sums
                acc[1] = torch.maximum(acc[1], pmax)
                acc[2] += prob.numel()
            else:
                self.rates[name] = [sums, pmax, float(prob.numel())]

    def all_reduce(self) -> None:
        """Combine DDP ranks in place: sums add, min/max reduce, so std is over the global batch."""
        import torch.distributed as dist

        if self.moments is not None:
            dist.all_reduce(self.moments)
            dist.all_reduce(self.extremes, op=dist.ReduceOp.MIN)
        for name in sorted(self.rates):
            acc = self.rates[name]
            flat = torch.cat([acc[0], torch.as_tensor(acc[2], dtype=acc[0].dtype, device=acc[0].device).reshape(1)])
            dist.all_reduce(flat)
            acc[0], acc[2] = flat[:3], flat[3]
            dist.all_reduce(acc[1], op=dist.ReduceOp.MAX)

    def tensors(self) -> dict[str, Tensor]:
        """0-d device tensors keyed by metric name (no host read here)."""
        return {self.prefix + k: v for k, v in self._tensors().items()}

    def _tensors(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        if self.moments is not None:
            d, m = self.dim, self.moments
            n = m[0].clamp_min(1)
            s1, t1, s2, t2, st = (m[1 + i * d:1 + (i + 1) * d] for i in range(5))
            bessel = n / (n - 1).clamp_min(1)  # sample (co)variances
            mean, tmean = s1 / n, t1 / n
            psd = ((s2 / n - mean * mean).clamp_min(0) * bessel).sqrt()  # per dimension
            tsd = ((t2 / n - tmean * tmean).clamp_min(0) * bessel).sqrt()
            pstd, tstd = psd.mean().float(), tsd.mean().float()
            out["pred/mean"] = mean.mean().float()
            out["pred/std"] = pstd
            out["pred/min"] = self.extremes[0]
            out["pred/max"] = -self.extremes[1]
            out["gt/std"] = tstd
            out["pred/std_ratio"] = pstd / tstd.clamp_min(1e-12)
            # over the dimensions whose target varies (a voxel never occupied has no target spread to measure by)
            live = tsd > 0
            gap = torch.where(live, (mean - tmean).abs() / tsd.clamp_min(1e-12), 0).sum() / live.sum().clamp_min(1)
            out["pred/mean_gap"] = torch.where(live.any(), gap, float("nan")).float()
            cov = (st / n - mean * tmean) * bessel
            both = live & (psd > 0)
            corr = torch.where(both, cov / (psd * tsd).clamp_min(1e-30), 0).clamp(-1, 1).sum() / both.sum().clamp_min(1)
            out["pred/target_corr"] = torch.where(both.any(), corr, float("nan")).float()
        for name, (sums, pmax, count) in self.rates.items():
            # a host count divides without a host-to-device copy (which would sync the stream)
            total = count.clamp_min(1) if torch.is_tensor(count) else max(count, 1)
            out[f"pred/{name}_mean"] = sums[0] / total
            out[f"pred/{name}_rate"] = sums[1] / total
            out[f"target/{name}_rate"] = sums[2] / total
            out[f"pred/{name}_max"] = pmax
        return out
