"""occupancy (seed 004): bird's-eye sensor view -> 3D voxel occupancy, ~0.83% of voxels occupied."""
from __future__ import annotations

from typing import Literal, Optional

import cv2
import numpy as np
import torch
from pydantic import Field, model_validator

from runner import viz
from runner.config import Section
from runner.data.formats.occ3d import OCC3D_FREE_CLASS, Occ3DDataset
from runner.data.synthetic.occupancy import OccupancyDataset, OccupancySpec
from runner.losses.seed_broken_occupancy import WeightedBCELoss
from runner.losses.occupancy import OccupancyLoss
from runner.models.occupancy import BEVOccupancyNet
from runner.tasks.base import MonitorView, Task

BEV_CHANNELS = 2
MONITOR_MAX_VOXELS = 1 << 18  # per sample; larger grids are subsampled for pred/mean|std|min|max


class DataConfig(Section):
    source: Literal["synthetic", "occ3d"] = "synthetic"
    grid: tuple[int, int, int] = (64, 64, 16)  # X, Y, Z voxels (seed: 200 x 200 x 121; Occ3D-nuScenes 200 x 200 x 16)
    occupancy_rate: float = Field(0.0083, gt=0, lt=0.5)  # synthetic: mean occupied fraction (seed: 0.83%)
    empty_fraction: float = Field(0.05, ge=0, lt=1)  # synthetic: scenes with nothing in them
    tree_fraction: float = Field(0.3, ge=0, le=1)  # synthetic: trees (floating canopy + trunk) vs boxes
    obs_dropout: float = Field(0.2, ge=0, lt=1)  # sensor: fraction of BEV columns not observed
    height_noise: float = Field(0.5, ge=0)  # sensor: std of observed heights, voxels
    clutter_rate: float = Field(0.002, ge=0, le=1)  # sensor: fraction of columns with a spurious return
    empty_label_fraction: float = Field(0.0, ge=0, le=1)  # synthetic fault: labels emptied, input kept
    train_size: int = Field(2048, gt=0)  # synthetic samples per epoch (generated on the fly)
    val_size: int = Field(128, gt=0)
    train_root: Optional[str] = None  # occ3d: directory tree of <sample>/labels.npz for training
    val_root: Optional[str] = None  # occ3d: same for validation
    free_class: int = Field(OCC3D_FREE_CLASS, ge=0, le=255)  # occ3d: class id of empty voxels
    use_camera_mask: bool = True  # occ3d: occupancy only inside mask_camera (the Occ3D benchmark's rule)

    @model_validator(mode="after")
    def _check(self):
        if min(self.grid) < 1:
            raise ValueError(f"grid sizes must be >= 1, got {list(self.grid)}")
        if self.source == "occ3d" and (self.train_root is None or self.val_root is None):
            raise ValueError("data.source=occ3d needs data.train_root and data.val_root")
        return self


class ModelConfig(Section):
    width: int = Field(32, ge=4)  # channels at full BEV resolution (x2, x4 deeper)
    prior_prob: Optional[float] = Field(None, gt=0, lt=1)  # initial voxel probability; None: ~0.5 (seed)


class LossConfig(Section):
    kind: Literal["occupancy", "weighted_bce"] = "occupancy"  # weighted_bce: the seed's first loss (control)
    focal_alpha: float = Field(0.99, ge=0, le=1)  # weight of occupied voxels in the focal term
    focal_gamma: float = Field(2.0, ge=0)
    focal_weight: float = Field(1.0, ge=0)
    focal_norm: Literal["mean", "positives"] = "mean"  # divide the summed focal by all voxels or by occupied ones
    dice_weight: float = Field(1.0, ge=0)
    dice_smooth: float = Field(1.0, gt=0)
    mean_weight: float = Field(10.0, ge=0)  # (mean(p) - mean(t))^2 over the batch
    pos_weight: float = Field(10.0, gt=0)  # weighted_bce only (seed: 10)


class OccupancyTask(Task):
    name = "occupancy"
    DataConfig, ModelConfig, LossConfig = DataConfig, ModelConfig, LossConfig

    def spec(self) -> OccupancySpec:
        d = self.cfg.data
        return OccupancySpec(grid=tuple(d.grid), occupancy_rate=d.occupancy_rate, empty_fraction=d.empty_fraction,
                             tree_fraction=d.tree_fraction, obs_dropout=d.obs_dropout, height_noise=d.height_noise,
                             clutter_rate=d.clutter_rate, empty_label_fraction=d.empty_label_fraction,
                             seed=self.cfg.seed)

    def dataset(self, split):
        d = self.cfg.data
        if d.source == "occ3d":
            root = d.train_root if split == "train" else d.val_root
            return Occ3DDataset(root, split, self.spec(), d.free_class, d.use_camera_mask)
        return OccupancyDataset(self.spec(), split, d.train_size if split == "train" else d.val_size)

    def model(self):
        m = self.cfg.model
        return BEVOccupancyNet(BEV_CHANNELS, self.cfg.data.grid[2], m.width, m.prior_prob)

    def criterion(self):
        c = self.cfg.loss
        if c.kind == "weighted_bce":
            return WeightedBCELoss(pos_weight=c.pos_weight)
        return OccupancyLoss(focal_alpha=c.focal_alpha, focal_gamma=c.focal_gamma, dice_weight=c.dice_weight,
                             mean_weight=c.mean_weight, focal_weight=c.focal_weight, focal_norm=c.focal_norm,
                             dice_smooth=c.dice_smooth)

    def forward(self, model, batch):
        return model(batch["bev"])

    # ------------------------------------------------------------------ monitoring
    def monitor_view(self, outputs, batch):
        """Per-voxel probabilities and targets, [B, D]: pred/mean|min|max are the seed's
        "Pred mean/min/max"; the occupancy rates give pred/occupancy_rate (p > 0.5),
        target/occupancy_rate, pred/occupancy_mean and pred/occupancy_max over every voxel.

        Above MONITOR_MAX_VOXELS voxels per sample (the seed's 4.84M), pred/target keep a fixed
        1-in-k voxel subset (every k-th voxel of the flattened grid), which halves the per-step
        cost of the statistics; pred/mean|std|min|max are then estimates over that subset, while
        the occupancy rates, pred/occupancy_mean and pred/occupancy_max stay exact.
        """
        probs = torch.sigmoid(outputs["logits"].float())
        target = batch["occupancy"].float()
        pred, tgt = probs.flatten(1), target.flatten(1)
        stride = -(-pred.shape[1] // MONITOR_MAX_VOXELS)
        if stride > 1:
            pred, tgt = pred[:, ::stride], tgt[:, ::stride]
        return MonitorView(pred=pred, target=tgt, rates={"occupancy": (probs, target)})

    def metrics(self, outputs, batch):
        pred = outputs["logits"] > 0
        gt = batch["occupancy"].bool()
        tp = (pred & gt).sum().float()
        fp = (pred & ~gt).sum().float()
        fn = (~pred & gt).sum().float()
        return {"iou": (tp, tp + fp + fn), "precision": (tp, tp + fp), "recall": (tp, tp + fn)}

    # ------------------------------------------------------------------ overlay
    def draw(self, batch, outputs, i):
        """Four bird's-eye panels: sensor input | GT (green) | prediction (red) | per-column errors.

        GT and prediction are max-projections along z, brightness = height of the top voxel.
        Error panel, per column, colours mixed by voxel counts: yellow = correctly occupied
        (true positive), red = predicted but empty (false positive), green = missed (false negative).
        """
        occ = batch["occupancy"][i].numpy().astype(bool)
        pred = (outputs["logits"][i] > 0).numpy()
        Z = occ.shape[2]

        def height_img(grid, colour):
            top = np.where(grid.any(2), Z - np.argmax(grid[:, :, ::-1], axis=2), 0) / Z  # [X, Y]
            shade = np.where(top > 0, 0.35 + 0.65 * top, 0.0)
            return (shade[..., None] * np.array(colour, np.float32)).astype(np.uint8)

        tp, fp, fn = ((pred & occ).sum(2), (pred & ~occ).sum(2), (~pred & occ).sum(2))
        total = np.maximum(tp + fp + fn, 1)[..., None].astype(np.float32)
        err = (tp[..., None] * np.array(viz.YELLOW, np.float32) + fp[..., None] * np.array(viz.RED, np.float32)
               + fn[..., None] * np.array(viz.GREEN, np.float32)) / total
        bev = batch["bev"][i].numpy()
        inp = np.repeat((np.where(bev[1] > 0, 0.15 + 0.85 * bev[0], 0.0) * 255)[..., None], 3, 2)
        inp[bev[1] == 0] = (30, 30, 90)  # unobserved columns
        # arrays are [X, Y]; images are rows = y, columns = x
        panels = [np.ascontiguousarray(p.transpose(1, 0, 2)).astype(np.uint8)
                  for p in (inp, height_img(occ, viz.GREEN), height_img(pred, viz.RED), err)]
        scale = max(1, round(192 / min(panels[0].shape[:2])))  # whole voxels, sharp edges
        panels = [cv2.resize(p, (p.shape[1] * scale, p.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
                  for p in panels]
        n_tp, n_fp, n_fn = int(tp.sum()), int(fp.sum()), int(fn.sum())
        iou = n_tp / max(n_tp + n_fp + n_fn, 1) if n_tp + n_fp + n_fn else float("nan")
        h = panels[0].shape[0]
        viz.text(panels[0], "input height", (4, 14), scale=0.4)
        viz.text(panels[0], "blue: unseen", (4, h - 8), viz.CYAN, 0.4)
        viz.text(panels[1], f"GT occ {occ.mean():.2%}", (4, 14), viz.GREEN, 0.4)
        viz.text(panels[2], f"pred occ {pred.mean():.2%}", (4, 14), viz.RED, 0.4)
        viz.text(panels[3], "TP", (4, 14), viz.YELLOW, 0.4)
        viz.text(panels[3], "FP", (30, 14), viz.RED, 0.4)
        viz.text(panels[3], "miss", (56, 14), viz.GREEN, 0.4)
        viz.text(panels[3], f"IoU={iou:.2f}" if iou == iou else "IoU=n/a (empty)", (4, h - 8), scale=0.4)
        viz.text(panels[2], f"max p={float(torch.sigmoid(outputs['logits'][i].float()).max()):.2f}", (4, h - 8),
                 viz.RED, 0.4)
        return viz.side_by_side(*panels)

    # ------------------------------------------------------------------ references
    def baseline(self):
        """Val metrics of trivial predictors, on the first reference_samples() val samples.

        iou/precision/recall/loss: the mean predictor (every voxel p = train occupancy rate; below
        0.5, so thresholded it is the all-zeros predictor: IoU 0, recall 0, no positives).
        all_occupied_iou: IoU of predicting every voxel occupied (= the val occupancy rate).
        extrude_*: a hand-made rule, every observed column filled from the ground to its observed
        height; what a learned model should beat to show it used more than the top surface.
        """
        val = self.dataset("val")
        n = self.reference_samples(len(val))
        train_rate = float(self.statistics(self.dataset("train"), n)["occupancy_rate"])
        train_rate = min(max(train_rate, 1e-6), 0.5)
        logit = float(np.log(train_rate / (1 - train_rate)))
        crit = self.criterion()
        counts = np.zeros(3)  # tp, fp, fn of the extrude rule
        occupied = voxels = 0
        losses = []
        subset = torch.utils.data.Subset(val, range(n))
        loader = torch.utils.data.DataLoader(subset, batch_size=self.cfg.train.batch_size)
        for b in loader:
            occ = b["occupancy"].numpy().astype(bool)
            Z = occ.shape[-1]
            seen, height = b["bev"][:, 1].numpy() > 0, np.round(b["bev"][:, 0].numpy() * Z)
            ext = (np.arange(Z) < height[..., None]) & seen[..., None]
            counts += [(ext & occ).sum(), (ext & ~occ).sum(), (~ext & occ).sum()]
            occupied, voxels = occupied + occ.sum(), voxels + occ.size
            with torch.no_grad():
                out = crit({"logits": torch.full(occ.shape, logit)}, b)
            losses.append(float(out["loss"]) * len(occ))
        # the mean predictor thresholded at p > 0.5: every voxel positive if the rate exceeds 0.5, else none
        m_tp, m_fp = (occupied, voxels - occupied) if logit > 0 else (0, 0)
        m_fn = occupied - m_tp
        tp, fp, fn = counts
        return {"iou": float(m_tp / max(m_tp + m_fp + m_fn, 1)), "recall": float(m_tp / max(occupied, 1)),
                "loss": float(sum(losses) / n),
                "all_occupied_iou": float(occupied / voxels),
                "extrude_iou": float(tp / max(tp + fp + fn, 1)), "extrude_precision": float(tp / max(tp + fp, 1)),
                "extrude_recall": float(tp / max(tp + fn, 1))}

    def reference_samples(self, available: int) -> int:
        """How many samples baseline() and describe_data() read: all of a small grid, ~40 at the seed's."""
        return int(min(available, max(16, 2e8 // np.prod(self.cfg.data.grid))))

    def describe_data(self, split):
        ds = self.dataset(split)
        return self.statistics(ds, self.reference_samples(len(ds)))

    @staticmethod
    def statistics(ds, samples: int) -> dict[str, float]:
        """Label occupancy rate and empty-label fraction. The built-in datasets answer without
        rendering (`statistics`); any other (a Subset, a user's own) is measured from its samples."""
        if hasattr(ds, "statistics"):
            return ds.statistics(samples)
        m = min(samples, len(ds))
        occupied = [float(torch.as_tensor(ds[i]["occupancy"]).float().sum()) for i in range(m)]
        voxels = m * int(np.prod(torch.as_tensor(ds[0]["occupancy"]).shape)) if m else 1
        return {"samples": m, "occupancy_rate": float(sum(occupied) / max(voxels, 1)),
                "empty_fraction": float(np.mean([o == 0 for o in occupied])) if m else 0.0}
