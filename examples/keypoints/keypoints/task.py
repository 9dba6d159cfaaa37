"""The task: config sections, and the wiring runner needs (docs/own-task.md in the runner repository).

    task: keypoints.task:KeypointTask
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from pydantic import Field

from runner.config import Section
from runner.tasks.base import MonitorView, Task

from keypoints.data import DiscDataset
from keypoints.loss import DiscLoss
from keypoints.model import DiscNet


class DataConfig(Section):
    image_size: int = Field(32, ge=8)
    min_radius: float = Field(2.0, gt=0)  # pixels
    max_radius: float = Field(6.0, gt=0)
    noise: float = Field(0.3, ge=0)
    train_size: int = Field(2048, gt=0)
    val_size: int = Field(256, gt=0)


class ModelConfig(Section):
    width: int = Field(16, ge=2)
    pool: int = Field(4, ge=1)  # features pooled to pool x pool cells; 1: global average pooling
    hidden: int = Field(64, ge=2)


class LossConfig(Section):
    xy_weight: float = Field(1.0, ge=0)
    radius_weight: float = Field(1.0, ge=0)
    beta: float = Field(0.05, gt=0)  # smooth L1: quadratic below beta (normalized units)


class KeypointTask(Task):
    name = "keypoints"
    DataConfig, ModelConfig, LossConfig = DataConfig, ModelConfig, LossConfig

    # -- required
    def dataset(self, split):
        d = self.cfg.data
        return DiscDataset(d.train_size if split == "train" else d.val_size, d.image_size, d.min_radius,
                           d.max_radius, d.noise, self.cfg.seed, split)

    def model(self):
        m = self.cfg.model
        return DiscNet(m.width, m.pool, m.hidden)

    def criterion(self):
        c = self.cfg.loss
        return DiscLoss(c.xy_weight, c.radius_weight, c.beta)

    def monitor_view(self, outputs, batch):
        # what the collapse statistics compare: [B, 3] predictions against [B, 3] targets
        pred = torch.cat([outputs["xy"], outputs["radius"]], 1).float()
        return MonitorView(pred=pred, target=torch.cat([batch["xy"], batch["radius"]], 1))

    # -- optional
    def metrics(self, outputs, batch):
        # (numerator, denominator) on the inputs' device; the engine sums both over the val set
        size = self.cfg.data.image_size
        err = ((outputs["xy"].float() - batch["xy"]) * size).norm(dim=1)
        return {"center_error_px": (err.sum(), torch.ones_like(err).sum())}

    def draw(self, batch, outputs, i):
        img = (batch["image"][i, 0].clamp(0, 1).numpy() * 255).astype(np.uint8)
        scale = 8
        img = cv2.resize(cv2.cvtColor(img, cv2.COLOR_GRAY2RGB), None, fx=scale, fy=scale,
                         interpolation=cv2.INTER_NEAREST)
        s = self.cfg.data.image_size * scale
        for xy, r, colour in ((batch["xy"][i], batch["radius"][i], (0, 255, 0)),
                              (outputs["xy"][i], outputs["radius"][i], (255, 0, 0))):
            centre = tuple(int(v) for v in (xy.numpy() * s).round())
            cv2.circle(img, centre, max(1, int(float(r[0]) * s)), colour, 1, cv2.LINE_AA)
        return img
