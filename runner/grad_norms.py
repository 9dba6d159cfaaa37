"""Gradient norms per head (grad/<head>) and in total (grad/total, pre-clip), then clipping: one
_foreach_norm over the gradients and a fixed 0/1 head matrix (the plan, one per pattern of which
parameters have a gradient); no host read."""
from __future__ import annotations

import torch
from torch import nn


def head_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters grouped by top-level child module (the 'heads' of grad/<head>)."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(name.split(".")[0], []).append(p)
    return groups


class GradNorms:
    def __init__(self, heads: dict[str, list[nn.Parameter]], params: list[nn.Parameter], device: torch.device):
        self.heads, self.params, self.device = heads, params, device
        self.plans: dict[tuple[bool, ...], tuple | None] = {}  # gradient-norm plan per grad pattern

    def __call__(self, grad_clip: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """grad/<head> and grad/total (the pre-clip norm), then clip to grad_clip.

        One _foreach_norm over every gradient gives the per-parameter norms; heads are sums of
        their squares (a matmul with a fixed 0/1 matrix), the total is the same vector_norm that
        clip_grad_norm_ computes, and clip_grads_with_norm_ scales by it: no second pass over the
        gradients, a handful of operations whatever the number of heads.
        """
        max_norm = grad_clip if grad_clip > 0 else float("inf")
        with_grad = tuple(p.grad is not None for p in self.params)
        if with_grad not in self.plans:
            self.plans[with_grad] = self.plan(with_grad)
        plan = self.plans[with_grad]
        if plan is None:  # gradients on several devices or of several dtypes: the general path
            norms = {}
            for head, ps in self.heads.items():
                hg = [p.grad for p in ps if p.grad is not None]
                if hg:
                    norms[f"grad/{head}"] = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(hg)).float())
            total = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
            norms["grad/total"] = total
            return norms, total
        names, heads_of = plan
        params = [p for p in self.params if p.grad is not None]
        if not params:
            total = torch.zeros((), device=self.device)
            return {"grad/total": total}, total
        per_param = torch.stack(torch._foreach_norm([p.grad for p in params]))
        total = torch.linalg.vector_norm(per_param)
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
        norms = dict(zip(names, (heads_of @ per_param.float().square()).sqrt().unbind())) if names else {}
        norms["grad/total"] = total
        return norms, total

    def plan(self, with_grad: tuple[bool, ...]) -> tuple[list[str], torch.Tensor] | None:
        """(grad/<head> names, [heads, parameters with a gradient] 0/1 matrix); None if the gradients
        are not all on one device with one dtype."""
        params = [p for p, g in zip(self.params, with_grad) if g]
        if len({(p.device, p.dtype) for p in params}) > 1:
            return None
        index = {id(p): i for i, p in enumerate(params)}
        names, rows = [], []
        for head, ps in self.heads.items():
            cols = [index[id(p)] for p in ps if id(p) in index]
            if cols:
                row = torch.zeros(len(params))
                row[cols] = 1.0
                names.append(f"grad/{head}")
                rows.append(row)
        device = params[0].device if params else self.device
        return names, (torch.stack(rows) if rows else torch.zeros(0, len(params))).to(device)
