"""Next-object pointer (seed 003): conv backbone, a spatial attention head read out by
soft-argmax into (x, y), and a done head on globally pooled features."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def coords(b: int, h: int, w: int, device, dtype) -> Tensor:
    """[B, 2, H, W] normalized pixel-centre coordinates (x, y) in [0, 1]."""
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy]).unsqueeze(0).expand(b, -1, -1, -1)


def conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PointerNet(nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.backbone = nn.Sequential(conv_bn(5, w, 2), conv_bn(w, 2 * w, 2), conv_bn(2 * w, 2 * w, dilation=2),
                                      conv_bn(2 * w, 2 * w, dilation=4))
        # x/y come out of one attention map; coordinates enter the head so it can learn the order
        self.point_head = nn.Sequential(nn.Conv2d(2 * w + 2, w, 1), nn.ReLU(inplace=True), nn.Conv2d(w, 1, 1))
        self.done_head = nn.Sequential(nn.Linear(4 * w, w), nn.ReLU(inplace=True), nn.Linear(w, 1))

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """image [B, 3, H, W] in [0, 1] -> xy [B, 2] normalized, done_logit [B], attention [B, H/4, W/4]."""
        b, _, h, w = image.shape
        x = self.backbone(torch.cat([image, coords(b, h, w, image.device, image.dtype)], 1))
        fh, fw = x.shape[-2:]
        grid = coords(b, fh, fw, x.device, x.dtype)
        logits = self.point_head(torch.cat([x, grid], 1)).flatten(1)
        attn = logits.float().softmax(-1)
        xy = torch.einsum("bn,bcn->bc", attn, grid.float().flatten(2))
        pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)
        return {"xy": xy, "done_logit": self.done_head(pooled).squeeze(1), "attention": attn.view(b, fh, fw)}
