"""On-device accumulators. Nothing here reads the host; `tensors()` hands 0-d device tensors
to the trainer, which reads everything it logs in one `torch.stack(...).tolist()` per interval.

The training step calls `update_means` with all its loss terms at once: they are stacked into one
vector and added to one running sum (three tensor operations whatever the number of terms), with
the count kept as a Python number, so the meters cost a few microseconds a step.
"""
from __future__ import annotations

import torch
from torch import Tensor


class Meter:
    """Ratio accumulators: value(name) = sum(num) / sum(den). A loss term is (term * B, B)."""

    def __init__(self):
        self.num: dict[str, Tensor] = {}
        self.den: dict[str, Tensor] = {}
        self.empty: dict[str, float] = {}
        # update_means: key tuple -> [sum of value * n (vector), sum of n (number, or tensor after all_reduce)]
        self.groups: dict[tuple[str, ...], list] = {}

    def update(self, name: str, num: Tensor, den: Tensor | float, empty: float = float("nan")) -> None:
        """Add num/den; `empty` is the value reported while den is still 0 (nan: not reported)."""
        num = num.detach().float()
        den = den.detach().float() if isinstance(den, Tensor) else torch.full((), float(den), device=num.device)
        if name in self.num:
            self.num[name] += num
            self.den[name] += den
        else:
            self.num[name] = num.clone()
            self.den[name] = den.clone()
            self.empty[name] = empty

    def update_means(self, values: dict[str, Tensor], n: int | float, prefix: str = "") -> None:
        """Batch means (0-d tensors) weighted by the batch size n."""
        if not values:
            return
        keys = tuple(values) if not prefix else tuple(prefix + k for k in values)
        vec = torch.stack([v.detach() for v in values.values()]).float() * n
        acc = self.groups.get(keys)
        if acc is None:
            self.groups[keys] = [vec, n]
        else:
            acc[0] += vec
            acc[1] += n

    def all_reduce(self) -> None:
        """Sum numerators and denominators across DDP ranks (in place)."""
        import torch.distributed as dist

        keys = list(self.num)
        if keys:
            flat = torch.stack([self.num[k] for k in keys] + [self.den[k] for k in keys])
            dist.all_reduce(flat)
            for i, k in enumerate(keys):
                self.num[k], self.den[k] = flat[i], flat[len(keys) + i]
        for names, acc in self.groups.items():
            flat = torch.cat([acc[0], torch.as_tensor(acc[1], dtype=acc[0].dtype, device=acc[0].device).reshape(1)])
            dist.all_reduce(flat)
            acc[0], acc[1] = flat[:-1], flat[-1]

    def tensors(self) -> dict[str, Tensor]:
        # den == 0 yields `empty` (nan by default, which read_host drops)
        out = {k: torch.where(self.den[k] > 0, self.num[k] / self.den[k].clamp_min(1e-30),
                              torch.full_like(self.num[k], self.empty[k])) for k in self.num}
        # a key met in several groups (or also in update) adds up its sums and counts
        sums: dict[str, list] = {}
        for names, (vec, count) in self.groups.items():
            for i, k in enumerate(names):
                if k in sums:
                    sums[k][0] = sums[k][0] + vec[i]
                    sums[k][1] = sums[k][1] + count
                else:
                    sums[k] = [vec[i], count]
        for k, (num, den) in sums.items():
            if k in self.num:
                num, den = num + self.num[k], den + self.den[k]
            if torch.is_tensor(den):  # all-reduced across ranks
                out[k] = torch.where(den > 0, num / den.clamp_min(1e-30), torch.full_like(num, float("nan")))
            else:  # a host count: dividing by it copies nothing to the device (a copy would sync the stream)
                out[k] = num / den if den > 0 else torch.full_like(num, float("nan"))
        return out

    def reset(self) -> None:
        self.num.clear()
        self.den.clear()
        self.empty.clear()
        self.groups.clear()


class StepMedian:
    """The median of one value over an interval's steps (the total loss): robust where the interval's mean
    is not, e.g. at batch size 2 one confidently wrong label lifts the mean of 8 steps tenfold and leaves
    the median where it was, while a diverging run lifts every step. Keeps 0-d device tensors (no host
    read); `tensors()` stacks them once. NaN steps (skipped as non-finite) are left out (nanmedian)."""

    def __init__(self, name: str):
        self.name = name
        self.values: list[Tensor] = []

    def update(self, value: Tensor) -> None:
        self.values.append(value.detach().float().reshape(()))

    def tensors(self) -> dict[str, Tensor]:
        return {self.name: torch.stack(self.values).nanmedian()} if self.values else {}

    def reset(self) -> None:
        self.values.clear()


def read_host(tensors: dict[str, Tensor]) -> dict[str, float]:
    """The one host read of an interval: stack every 0-d tensor and convert once."""
    if not tensors:
        return {}
    keys = list(tensors)
    values = torch.stack([tensors[k].detach().float().reshape(()) for k in keys]).tolist()
    return {k: v for k, v in zip(keys, values) if v == v}  # drop nan (empty denominators)
