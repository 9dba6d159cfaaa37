"""A small CNN: conv features pooled to a pool x pool grid, then an MLP to (x, y, radius)."""
from __future__ import annotations

import torch
from torch import nn


class DiscNet(nn.Module):
    def __init__(self, width: int = 16, pool: int = 4, hidden: int = 64):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(1, width), block(width, 2 * width), block(2 * width, 2 * width))
        # pool=1 is global average pooling; larger grids keep where in the image a feature was
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * pool * pool, hidden), nn.ReLU(),
                                  nn.Linear(hidden, 3))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.head(self.pool(self.features(image)))
        return {"xy": torch.sigmoid(out[:, :2]), "radius": torch.sigmoid(out[:, 2:])}
