"""sequence (seed 003): image with the first k objects marked -> next object (x, y) + done."""
from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import torch
from pydantic import Field, model_validator

from runner import viz
from runner.config import Section
from runner.data import spread_indices
from runner.data.synthetic.sequence import SequenceDataset, SequenceSpec
from runner.losses.pointer import PointerLoss
from runner.models.pointer import PointerNet
from runner.tasks.base import MonitorView, Task


class DataConfig(Section):
    image_size: int = Field(384, ge=16)  # pixels (seed: 384x384)
    min_objects: int = Field(12, ge=1)  # objects per image: uniform in [min, max] (seed: mean ~21)
    max_objects: int = Field(30, ge=1)
    radius: int = Field(6, ge=1)  # object radius in pixels
    sampling: Literal["uniform", "balanced"] = "uniform"  # uniform k in [0, N]: done ~4.8% (seed: 3%)
    balanced_done_rate: float = Field(0.5, gt=0, lt=1)  # P(done) with sampling=balanced
    train_size: int = Field(6000, gt=0)  # samples per epoch (generated on the fly)
    val_size: int = Field(500, gt=0)

    @model_validator(mode="after")
    def _range(self):
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects ({self.min_objects}) > max_objects ({self.max_objects})")
        return self


class ModelConfig(Section):
    width: int = Field(32, ge=4)  # backbone channels (doubles after the stem)


class LossConfig(Section):
    kind: Literal["funnel", "mse"] = "funnel"  # mse: the seed's first loss (negative control)
    threshold: float = Field(0.1, gt=0)  # funnel: quadratic below, linear above (normalized L1)
    done_weight: float = Field(3.0, ge=0)  # weight on the done BCE (seed: 1 -> 3)
    done_pos_weight: float = Field(1.0, gt=0)  # BCE pos_weight of done samples; ~(1-p)/p balances a rare done
    spatial_weight: float = Field(1.0, ge=0)


class SequenceTask(Task):
    name = "sequence"
    DataConfig, ModelConfig, LossConfig = DataConfig, ModelConfig, LossConfig

    def spec(self) -> SequenceSpec:
        d = self.cfg.data
        return SequenceSpec(image_size=d.image_size, min_objects=d.min_objects, max_objects=d.max_objects,
                            radius=d.radius, seed=self.cfg.seed,
                            done_rate=d.balanced_done_rate if d.sampling == "balanced" else None)

    def dataset(self, split):
        size = self.cfg.data.train_size if split == "train" else self.cfg.data.val_size
        return SequenceDataset(self.spec(), split, size)

    def model(self):
        return PointerNet(width=self.cfg.model.width)

    def criterion(self):
        c = self.cfg.loss
        return PointerLoss(threshold=c.threshold, done_weight=c.done_weight, spatial_weight=c.spatial_weight,
                           kind=c.kind, done_pos_weight=c.done_pos_weight)

    def monitor_view(self, outputs, batch):
        return MonitorView(pred=outputs["xy"], target=batch["target_xy"], mask=batch["done"] < 0.5,
                           rates={"done": (torch.sigmoid(outputs["done_logit"].float()), batch["done"])})

    def metrics(self, outputs, batch):
        size = self.cfg.data.image_size
        done = batch["done"] > 0.5
        live = (~done).float()
        err = ((outputs["xy"].float() - batch["target_xy"]) * size).norm(dim=1)
        pred_done = outputs["done_logit"] > 0
        tp = (pred_done & done).float().sum()
        return {
            "pixel_error": ((err * live).sum(), live.sum()),
            "done_recall": (tp, done.float().sum()),
            "done_precision": (tp, pred_done.float().sum(), 0.0),  # never predicting done: 0
            "done_accuracy": ((pred_done == done).float().sum(), torch.ones_like(done, dtype=torch.float32).sum()),
        }

    def draw(self, batch, outputs, i):
        img = viz.to_rgb_uint8(batch["image"][i])
        left, scale = viz.upscale(img, 256)
        right = left.copy()
        size = self.cfg.data.image_size
        gt_done = float(batch["done"][i]) > 0.5
        p_done = float(torch.sigmoid(outputs["done_logit"][i]))
        pxy = outputs["xy"][i].numpy() * size * scale
        r = max(4, int(self.cfg.data.radius * scale * 1.6))
        if not gt_done:
            gxy = batch["target_xy"][i].numpy() * size * scale
            cv2.circle(right, tuple(int(v) for v in gxy.round()), r, viz.GREEN, 2, cv2.LINE_AA)
            err = float(np.linalg.norm((outputs["xy"][i].numpy() - batch["target_xy"][i].numpy()) * size))
            viz.error_line(right, pxy, gxy, err)
        cv2.circle(right, tuple(int(v) for v in pxy.round()), r, viz.RED, 2, cv2.LINE_AA)
        h = right.shape[0]
        viz.text(right, f"pred_done={p_done:.2f}", (6, h - 26), viz.RED)
        viz.text(right, f"gt_done={int(gt_done)}", (6, h - 8), viz.GREEN)
        viz.text(left, f"input: k={int(batch['k'][i])} of {int(batch['n'][i])} marked", (6, 16))
        return viz.side_by_side(left, right)

    def baseline(self):
        """Always predict the mean target of (a sample of) the train split; never predict done."""
        train, val = self.dataset("train"), self.dataset("val")
        m = min(len(train), 2000)
        targets = [train[i] for i in range(m)]
        live = [t["target_xy"] for t in targets if t["done"] < 0.5]
        mean = torch.stack(live).mean(0)
        size = self.cfg.data.image_size
        errs = [float(((mean - s["target_xy"]) * size).norm()) for s in (val[i] for i in range(len(val)))
                if s["done"] < 0.5]
        return {"pixel_error": float(np.mean(errs)), "done_recall": 0.0}

    def describe_data(self, split):
        ds = self.dataset(split)
        if hasattr(ds, "done_rate"):  # the synthetic generator knows it without building images
            return {"samples": len(ds), "done_rate": ds.done_rate()}
        # any other dataset (on disk, in memory): measure from its samples
        done = [float(ds[i]["done"]) for i in spread_indices(len(ds), 2000)]
        return {"samples": len(ds), "done_rate": float(np.mean(done)) if done else 0.0}
