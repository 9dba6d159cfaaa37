"""Small helpers the timing benchmarks share: quartiles of a sample and the machine's load."""
from __future__ import annotations

import os
import statistics


def quantiles(xs: list[float]) -> tuple[float, float, float]:
    """(q25, median, q75); with fewer than 4 values the extremes stand in for the quartiles."""
    xs = sorted(xs)
    if len(xs) < 4:
        return xs[0], statistics.median(xs), xs[-1]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[1], q[2]


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} CPUs"
