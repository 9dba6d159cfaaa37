"""Occupancy net (seed 004): a small bird's-eye-view U-Net whose output channels are heights.

The input is a BEV image [B, C, X, Y]; the last 1x1 convolution emits Z channels per BEV cell,
one logit per voxel of the column (the channel-to-height trick of FlashOcc), so the whole
network is 2D and a 200 x 200 x 121 grid costs little more than a 200 x 200 image.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BEVOccupancyNet(nn.Module):
    """Encoder (full, 1/2, 1/4 resolution, dilated context) and a decoder with skips.

    prior_prob: initial sigmoid output of every voxel (the output bias is set to its logit, as
    RetinaNet does for rare positives); None leaves the default init, which starts near 0.5 as
    in the seed's log ("Pred mean: 0.5000" at step 0).
    """

    def __init__(self, in_channels: int = 2, height: int = 16, width: int = 32, prior_prob: float | None = None):
        super().__init__()
        w = width
        self.height = height
        self.enc1 = nn.Sequential(conv_bn(in_channels, w), conv_bn(w, w))
        self.enc2 = nn.Sequential(conv_bn(w, 2 * w, 2), conv_bn(2 * w, 2 * w))
        self.enc3 = nn.Sequential(conv_bn(2 * w, 4 * w, 2), conv_bn(4 * w, 4 * w, dilation=2),
                                  conv_bn(4 * w, 4 * w, dilation=4))
        self.dec2 = conv_bn(4 * w + 2 * w, 2 * w)
        self.dec1 = conv_bn(2 * w + w, w)
        self.head = nn.Conv2d(w, height, 1)
        if prior_prob is not None:
            nn.init.constant_(self.head.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, bev: Tensor) -> dict[str, Tensor]:
        """bev [B, C, X, Y] -> {"logits": [B, X, Y, Z]} (one logit per voxel)."""
        e1 = self.enc1(bev)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[-2:], mode="bilinear", align_corners=False), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False), e1], 1))
        return {"logits": self.head(d1).permute(0, 2, 3, 1)}
