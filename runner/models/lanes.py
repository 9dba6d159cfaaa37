"""Lane regressor (seeds 000/001): conv backbone with coordinate channels, pooled to a small fixed
grid so position survives, then an MLP head giving 4 lanes x 6 Bezier control points + existence."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from runner.models.pointer import conv_bn, coords


class LaneNet(nn.Module):
    def __init__(self, n_lanes: int = 4, n_ctrl: int = 6, width: int = 16, hidden: int = 256,
                 pool: tuple[int, int] = (4, 8)):
        super().__init__()
        w = width
        self.n_lanes, self.n_ctrl = n_lanes, n_ctrl
        self.backbone = nn.Sequential(conv_bn(5, w, 2), conv_bn(w, 2 * w, 2), conv_bn(2 * w, 4 * w, 2),
                                      conv_bn(4 * w, 4 * w), conv_bn(4 * w, 4 * w, 2))
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.neck = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * pool[0] * pool[1], hidden), nn.ReLU(inplace=True))
        self.points_head = nn.Linear(hidden, n_lanes * n_ctrl * 2)
        self.exist_head = nn.Linear(hidden, n_lanes)
        nn.init.zeros_(self.points_head.weight)  # start at the image centre, learn offsets from there
        nn.init.constant_(self.points_head.bias, 0.5)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """image [B, 3, H, W] in [0, 1] -> points [B, L, 6, 2] normalized (x, y), exist_logits [B, L]."""
        b, _, h, w = image.shape
        x = self.backbone(torch.cat([image, coords(b, h, w, image.device, image.dtype)], 1))
        f = self.neck(self.pool(x))
        return {"points": self.points_head(f).view(b, self.n_lanes, self.n_ctrl, 2),
                "exist_logits": self.exist_head(f)}
