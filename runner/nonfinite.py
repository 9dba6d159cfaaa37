"""Non-finite (skipped) training steps, tracked on the device: no host read between log intervals.

A step whose gradient norm is not finite is skipped by the optimizer (fused AdamW `found_inf`, or
the fp16 grad scaler). The guard counts it, keeps the longest run of consecutive skips of the log
interval (health/nonfinite_streak) and the total (health/nonfinite_steps), remembers which loss term
went non-finite first, and puts back the BatchNorm running statistics that the skipped step's
forward pass already updated. Isolated skips never stop the run: NonFiniteError is raised only
after `patience` (train.nonfinite_patience) CONSECUTIVE skipped steps.
"""
from __future__ import annotations

import torch
from torch import nn

from runner import keys


class NonFiniteError(Exception):
    """Too many consecutive non-finite steps."""


def bn_buffers(model: nn.Module) -> list[torch.Tensor]:
    """The running statistics of every BatchNorm layer (running_mean/var, num_batches_tracked)."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            out += [b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    return out


class NonFiniteGuard:
    def __init__(self, model: nn.Module, device: torch.device, patience: int):
        self.device, self.patience = device, patience
        self.buffers = bn_buffers(model)
        self.consec = torch.zeros((), device=device)  # current run of consecutive skipped steps
        self.streak = torch.zeros((), device=device)  # longest run in this log interval
        self.total = torch.zeros((), device=device)  # skipped steps in this run
        self.seen_bad = torch.zeros((), dtype=torch.bool, device=device)  # any skipped step yet
        self.first_finite: torch.Tensor | None = None  # which terms were finite at the first skipped step
        self.term_names: list[str] = []
        self.scalar_terms = True

    def start(self, total: int) -> None:
        """Before the first step: the total skipped so far (a resumed run's)."""
        self.total.fill_(total)

    def snapshot(self) -> list[torch.Tensor]:
        """Copies of the BatchNorm statistics, taken before a step's forward pass (on the device)."""
        return [b.clone() for b in self.buffers]

    def update(self, bad: torch.Tensor, terms: dict[str, torch.Tensor], snapshot: list[torch.Tensor]) -> None:
        """After the backward pass: count a skipped step and restore the BatchNorm statistics it
        changed (torch.where, on the device)."""
        with torch.no_grad():
            for buf, old in zip(self.buffers, snapshot):
                buf.copy_(torch.where(bad, old, buf))
            if not self.term_names:
                self.term_names = [k for k in terms if keys.is_term(k)]
                self.scalar_terms = all(terms[k].dim() == 0 for k in self.term_names)
                self.first_finite = torch.ones(len(self.term_names), dtype=torch.bool, device=bad.device)
            if self.scalar_terms:
                finite = torch.isfinite(torch.stack([terms[k].detach() for k in self.term_names]))
            else:
                finite = torch.stack([torch.isfinite(terms[k].detach()).all() for k in self.term_names])
            take = bad & ~self.seen_bad  # the first skipped step
            self.first_finite = torch.where(take, finite, self.first_finite)
            self.seen_bad |= bad
            self.consec = (self.consec + 1) * bad
            self.streak = torch.maximum(self.streak, self.consec)
            self.total += bad

    def first_bad(self) -> torch.Tensor:
        """Index into term_names + ["gradient"] of the first non-finite value (the first non-finite
        term other than the total at the first skipped step; only the gradient if none); -1 if none."""
        finite = self.first_finite
        if finite is None:
            return torch.full((), -1.0, device=self.device)
        n = len(self.term_names)
        if n > 1:
            idx = torch.where(finite[1:].all(), torch.full((), float(n), device=finite.device),
                              (~finite[1:]).float().argmax().float() + 1)
        else:
            idx = torch.full((), float(n), device=self.seen_bad.device)
        return torch.where(self.seen_bad, idx, torch.full((), -1.0, device=idx.device))

    def tensors(self) -> dict[str, torch.Tensor]:
        """What the log interval reads (all-reduced with MAX under DDP)."""
        return {"_streak": self.streak, "_first_bad": self.first_bad(), "_n_bad": self.total}

    def check(self, values: dict[str, float], step: int) -> int:
        """Turn the read tensors into health/nonfinite_steps and health/nonfinite_streak; raise
        NonFiniteError after `patience` consecutive skipped steps. Returns the total."""
        streak, first_bad, total = values.pop("_streak"), values.pop("_first_bad"), int(values.pop("_n_bad"))
        values["health/nonfinite_steps"] = float(total)
        values["health/nonfinite_streak"] = float(streak)
        self.streak.copy_(self.consec)  # the next interval's longest run starts with the current one
        if streak >= self.patience:
            names = self.term_names + ["gradient"]
            culprit = names[int(first_bad)] if first_bad >= 0 else "unknown"
            raise NonFiniteError(f"{int(streak)} consecutive non-finite steps (limit {self.patience}); "
                                 f"the first non-finite value was {culprit!r}, at or before step {step}; "
                                 f"lower optim.lr or check the data")
        return total
