"""Datasets: synthetic generators (runner.data.synthetic) and on-disk formats (runner.data.formats)."""
from __future__ import annotations

import numpy as np


def spread_indices(length: int, n: int) -> list[int]:
    """min(n, length) indices spread evenly over [0, length), first and last included."""
    n = min(n, length)
    return np.linspace(0, length - 1, n).round().astype(int).tolist() if n > 0 else []
