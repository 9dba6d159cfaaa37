"""On-device accumulators. Nothing here reads the host; `tensors()` hands 0-d device tensors
to the trainer, which reads everything it logs in one `torch.stack(...).tolist()` per interval."""
from __future__ import annotations

import torch
from torch import Tensor


class Meter:
    """Ratio accumulators: value(name) = sum(num) / sum(den). A loss term is (term * B, B)."""

    def __init__(self):
        self.num: dict[str, Tensor] = {}
        self.den: dict[str, Tensor] = {}
        self.empty: dict[str, float] = {}

    def update(self, name: str, num: Tensor, den: Tensor | float, empty: float = float("nan")) -> None:
        """Add num/den; `empty` is the value reported while den is still 0 (nan: not reported)."""
        num = num.detach().float()
        den = den.detach().float() if isinstance(den, Tensor) else torch.tensor(float(den), device=num.device)
        if name in self.num:
            self.num[name] += num
            self.den[name] += den
        else:
            self.num[name] = num.clone()
            self.den[name] = den.clone()
            self.empty[name] = empty

    def update_means(self, values: dict[str, Tensor], n: int, prefix: str = "") -> None:
        """Batch means weighted by the batch size n."""
        for k, v in values.items():
            self.update(prefix + k, v.detach().float() * n, n)

    def all_reduce(self) -> None:
        """Sum numerators and denominators across DDP ranks (in place)."""
        import torch.distributed as dist

        keys = list(self.num)
        if keys:
            flat = torch.stack([self.num[k] for k in keys] + [self.den[k] for k in keys])
            dist.all_reduce(flat)
            for i, k in enumerate(keys):
                self.num[k], self.den[k] = flat[i], flat[len(keys) + i]

    def tensors(self) -> dict[str, Tensor]:
        # den == 0 yields `empty` (nan by default, which read_host drops)
        return {k: torch.where(self.den[k] > 0, self.num[k] / self.den[k].clamp_min(1e-30),
                               torch.full_like(self.num[k], self.empty[k])) for k in self.num}

    def reset(self) -> None:
        self.num.clear()
        self.den.clear()
        self.empty.clear()


def read_host(tensors: dict[str, Tensor]) -> dict[str, float]:
    """The one host read of an interval: stack every 0-d tensor and convert once."""
    if not tensors:
        return {}
    keys = list(tensors)
    values = torch.stack([tensors[k].detach().float().reshape(()) for k in keys]).tolist()
    return {k: v for k, v in zip(keys, values) if v == v}  # drop nan (empty denominators)
