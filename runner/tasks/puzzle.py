"""puzzle (seed 002): puzzle image + piece image -> the piece's box and its rotation (4-way).

Batch keys: image [B, 3, H, W] (the puzzle), piece [B, 3, P, P], box [B, 4] (cx, cy, w, h)
normalized by the puzzle's width and height, rotation [B] long (counter-clockwise quarter turns
applied to the piece). Pixel metrics are in pixels of the puzzle image the model sees
(data.puzzle_width x data.puzzle_height).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import cv2
import numpy as np
import torch
from pydantic import Field, model_validator
from torchvision.ops import box_convert

from runner import viz
from runner.config import Section
from runner.data.formats.folder_json import FolderJsonDataset, Layout
from runner.data.synthetic.puzzle import PuzzleDataset, PuzzleSpec, box_of, geometry
from runner.errors import UserError
from runner.losses.box import PuzzleLoss, paired_iou
from runner.losses.seed_broken_puzzle import SeedGIoULoss
from runner.models.puzzle import PuzzleNet
from runner.tasks.base import MonitorView, Task

# what a puzzle sample looks like on disk (docs/puzzle.md, runner/data/formats/folder_json.py)
LAYOUT = Layout(images=("image", "piece"), targets={"box": ("float", (4,)), "rotation": ("int", ())},
                notes={"box": "cx, cy, w, h of the piece in the puzzle, normalized to [0, 1]",
                       "rotation": "counter-clockwise quarter turns applied to the piece (0-3)"})


class DataConfig(Section):
    source: Literal["synthetic", "folder"] = "synthetic"
    root: Optional[str] = None  # source=folder: directory holding train/ and val/ (docs/puzzle.md)
    puzzle_width: int = Field(192, ge=16)  # pixels of the puzzle the model sees (seed: 3000x2000 -> 256x256)
    puzzle_height: int = Field(128, ge=16)
    piece_size: int = Field(32, ge=8)  # piece image side in pixels (seed: ~79x80 -> 224)
    piece_frac: tuple[float, float] = (0.026, 0.04)  # piece (w, h) / puzzle (w, h) (seed: 2.6% x 4%)
    size_jitter: float = Field(0.1, ge=0, lt=1)  # piece sides scaled by a factor in [1-j, 1+j]
    source_scale: int = Field(2, ge=1)  # pieces are cut from a canvas this many times the puzzle size
    shapes: int = Field(80, ge=0)  # random shapes painted per puzzle
    piece_noise: float = Field(0.02, ge=0)  # std of noise on the piece (a photographed piece is no copy)
    train_size: int = Field(4096, gt=0)  # synthetic samples per epoch (generated on the fly)
    val_size: int = Field(256, gt=0)

    @model_validator(mode="after")
    def _check(self):
        if not all(0 < f < 1 for f in self.piece_frac):
            raise ValueError(f"piece_frac must be two fractions in (0, 1), got {self.piece_frac}")
        if self.source == "folder" and not self.root:
            raise ValueError("source 'folder' needs data.root (a directory with train/ and val/)")
        return self


class ModelConfig(Section):
    backbone: Literal["small", "resnet18"] = "small"  # resnet18: torchvision, weights=None
    width: int = Field(12, ge=4)  # small backbone: hidden channels
    embed: int = Field(12, ge=4)  # channels of the features the piece is correlated on
    scales: list[int] = [1, 2]  # strides at which the piece is matched (small: 1, 2, 4; resnet18: 2, 4, 8, 16)
    heat_stride: int = Field(2, ge=1)  # stride of the heatmap / evidence grid
    hidden: int = Field(8, ge=2)  # evidence and size head channels
    head: Literal["heatmap", "regress"] = "heatmap"  # regress: pooled evidence -> MLP -> box (seed's kind)
    box_format: Literal["cxcywh", "xyxy"] = "cxcywh"  # xyxy: four sigmoids (the seed's parametrization)

    @model_validator(mode="after")
    def _check(self):
        if self.head == "heatmap" and self.box_format != "cxcywh":
            raise ValueError("head 'heatmap' predicts a centre: it needs box_format 'cxcywh'")
        offered = {"small": (1, 2, 4), "resnet18": (2, 4, 8, 16)}[self.backbone]
        if not self.scales or any(s not in offered for s in self.scales):
            raise ValueError(f"scales {self.scales} must be strides the {self.backbone} backbone offers: {list(offered)}")
        return self


class LossConfig(Section):
    kind: Literal["ciou", "giou"] = "ciou"  # giou: the seed's GIoU-only loss (negative control)
    ciou_weight: float = Field(0.5, ge=0)  # the weights below apply to kind=ciou only
    smooth_l1_weight: float = Field(0.5, ge=0)
    smooth_l1_beta: float = Field(0.02, gt=0)  # normalized units; 0.02 = ~4 px at 192 px
    center_mse_weight: float = Field(0.0, ge=0)
    variance_weight: float = Field(0.0, ge=0)
    min_variance: float = Field(0.01, ge=0)  # variance penalty: relu(min_variance - Var(centre))
    heatmap_weight: float = Field(0.0, ge=0)  # CE of the heatmap at the true cell
    position_weight: float = Field(1.0, ge=0)
    rotation_weight: float = Field(1.0, ge=0)


class PuzzleTask(Task):
    name = "puzzle"
    DataConfig, ModelConfig, LossConfig = DataConfig, ModelConfig, LossConfig
    folder_layout = LAYOUT

    def spec(self) -> PuzzleSpec:
        d = self.cfg.data
        return PuzzleSpec(puzzle_width=d.puzzle_width, puzzle_height=d.puzzle_height, piece_size=d.piece_size,
                          piece_frac=tuple(d.piece_frac), size_jitter=d.size_jitter, source_scale=d.source_scale,
                          shapes=d.shapes, piece_noise=d.piece_noise, seed=self.cfg.seed)

    def dataset(self, split):
        d = self.cfg.data
        if d.source == "folder":
            root = Path(d.root)
            if not root.is_dir():
                raise UserError(f"data.root {d.root!r} is not a directory")
            return FolderJsonDataset(root / split, LAYOUT,
                                     sizes={"image": (d.puzzle_width, d.puzzle_height),
                                            "piece": (d.piece_size, d.piece_size)},
                                     check=check_sample)
        return PuzzleDataset(self.spec(), split, d.train_size if split == "train" else d.val_size)

    def model(self):
        m = self.cfg.model
        return PuzzleNet(backbone=m.backbone, width=m.width, embed=m.embed, scales=tuple(m.scales),
                         heat_stride=m.heat_stride, hidden=m.hidden, head=m.head, box_format=m.box_format,
                         size_prior=tuple(self.cfg.data.piece_frac))

    def criterion(self):
        c = self.cfg.loss
        if c.kind == "giou":
            return SeedGIoULoss(position_weight=c.position_weight, rotation_weight=c.rotation_weight)
        return PuzzleLoss(ciou_weight=c.ciou_weight, smooth_l1_weight=c.smooth_l1_weight,
                          smooth_l1_beta=c.smooth_l1_beta, center_mse_weight=c.center_mse_weight,
                          variance_weight=c.variance_weight, min_variance=c.min_variance,
                          heatmap_weight=c.heatmap_weight, position_weight=c.position_weight,
                          rotation_weight=c.rotation_weight, box_format=self.cfg.model.box_format)

    def forward(self, model, batch):
        return model(batch["image"], batch["piece"])

    # ------------------------------------------------------------------ monitoring
    def monitor_view(self, outputs, batch):
        # corners, as the seed logged them: its collapse read pred std ~0.005 vs GT std ~0.3
        return MonitorView(pred=outputs["box_xyxy"].float(), target=box_convert(batch["box"].float(), "cxcywh", "xyxy"))

    def center_errors(self, pred_box, gt_box):
        scale = torch.tensor([self.cfg.data.puzzle_width, self.cfg.data.puzzle_height],
                             dtype=torch.float32).to(gt_box.device, non_blocking=True)  # no stream sync
        return ((pred_box[:, :2].float() - gt_box[:, :2].float()) * scale).norm(dim=1)

    def metrics(self, outputs, batch):
        gt = batch["box"].float()
        n = torch.full((), float(gt.shape[0]), device=gt.device)
        gt_xyxy = box_convert(gt, "cxcywh", "xyxy")
        centre = outputs["box"][:, :2].float()
        inside = ((centre >= gt_xyxy[:, :2]) & (centre <= gt_xyxy[:, 2:])).all(1).float()
        correct = (outputs["rotation_logits"].argmax(1) == batch["rotation"]).float()
        return {
            "center_error": (self.center_errors(outputs["box"], gt).sum(), n),
            "iou": (paired_iou(outputs["box_xyxy"].float(), gt_xyxy).sum(), n),
            "found_rate": (inside.sum(), n),  # predicted centre inside the true box
            "rotation_accuracy": (correct.sum(), n),
        }

    def draw(self, batch, outputs, i):
        puzzle, scale = viz.upscale(viz.to_rgb_uint8(batch["image"][i]), 256)
        h, w = puzzle.shape[:2]
        size = np.array([w, h, w, h], np.float64)

        def rect(box_xyxy, color):
            x1, y1, x2, y2 = (box_xyxy * size).round().astype(int)
            cv2.rectangle(puzzle, (x1, y1), (x2, y2), color, 1, cv2.LINE_AA)
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2  # a ring, so a box of a few pixels is still seen
            cv2.circle(puzzle, (cx, cy), 12, color, 1, cv2.LINE_AA)

        gt = batch["box"][i].float()
        pred = outputs["box"][i].float()
        gt_xyxy = box_convert(gt[None], "cxcywh", "xyxy")[0].numpy()
        rect(gt_xyxy, viz.GREEN)
        rect(outputs["box_xyxy"][i].float().numpy(), viz.RED)
        err = float(self.center_errors(pred[None], gt[None])[0])
        viz.error_line(puzzle, pred[:2].numpy() * size[:2], gt[:2].numpy() * size[:2], err)
        prob = outputs["rotation_logits"][i].float().softmax(0)
        r_pred, r_gt = int(prob.argmax()), int(batch["rotation"][i])
        viz.text(puzzle, f"rot gt={90 * r_gt} pred={90 * r_pred} (p={float(prob[r_pred]):.2f})", (6, h - 8),
                 viz.GREEN if r_pred == r_gt else viz.RED)
        # the piece as given, and turned back by the predicted rotation
        side = max(64, h // 3)
        piece = viz.to_rgb_uint8(batch["piece"][i])
        given = cv2.resize(piece, (side, side), interpolation=cv2.INTER_NEAREST)
        back = cv2.resize(np.ascontiguousarray(np.rot90(piece, -r_pred)), (side, side), interpolation=cv2.INTER_NEAREST)
        viz.text(given, "piece", (4, 14))
        viz.text(back, "turned back", (4, 14))
        column = [given, back]
        if "heatmap_logits" in outputs:  # where the model looked
            logits = outputs["heatmap_logits"][i].float()
            logp = logits.flatten().log_softmax(0).view(logits.shape)
            heat = ((logp - logp.max()).clamp_min(-8) / 8 + 1).numpy()  # log scale: 8 nats below the peak -> 0
            heat = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
            heat = cv2.resize(np.ascontiguousarray(heat), (side, max(1, round(side * h / w))),
                              interpolation=cv2.INTER_NEAREST)
            viz.text(heat, "heatmap", (4, 14))
            column.append(heat)
        panel = np.full((max(h, sum(c.shape[0] for c in column) + 4 * len(column)), side, 3), 25, np.uint8)
        y = 0
        for c in column:
            panel[y:y + c.shape[0]] = c
            y += c.shape[0] + 4
        return viz.side_by_side(puzzle, panel)

    # ------------------------------------------------------------------ references
    def _boxes_rotations(self, split: str, limit: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        ds = self.dataset(split)
        m = min(len(ds), limit)
        if isinstance(ds, PuzzleDataset):  # geometry only: nothing is painted
            geo = [geometry(ds.spec, split, i) for i in range(m)]
            return np.stack([box_of(ds.spec, *g[:4]) for g in geo]), np.array([g[4] for g in geo])
        if hasattr(ds, "targets"):  # folder + JSON: the targets are read at start, no image decoded
            t = ds.targets[:m]
        else:  # any other dataset (a Subset, a user's own): its samples
            t = [ds[i] for i in range(m)]
        return (np.array([np.asarray(s["box"], np.float32) for s in t], np.float32).reshape(-1, 4),
                np.array([int(s["rotation"]) for s in t], np.int64))

    def baseline(self):
        """Always predict the mean train box and the most common train rotation."""
        tb, tr = self._boxes_rotations("train")
        vb, vr = self._boxes_rotations("val")
        mean = torch.from_numpy(tb.mean(0)).expand(len(vb), 4)
        gt = torch.from_numpy(vb)
        gt_xyxy = box_convert(gt, "cxcywh", "xyxy")
        inside = ((mean[:, :2] >= gt_xyxy[:, :2]) & (mean[:, :2] <= gt_xyxy[:, 2:])).all(1)
        return {"center_error": float(self.center_errors(mean, gt).mean()),
                "iou": float(paired_iou(box_convert(mean, "cxcywh", "xyxy"), gt_xyxy).mean()),
                "found_rate": float(inside.float().mean()),
                "rotation_accuracy": float(np.mean(vr == np.bincount(tr, minlength=4).argmax()))}

    def describe_data(self, split):
        boxes, rots = self._boxes_rotations(split)
        return {"samples": len(self.dataset(split)), "piece_w_frac": float(boxes[:, 2].mean()),
                "piece_h_frac": float(boxes[:, 3].mean()),
                "piece_area_frac": float((boxes[:, 2] * boxes[:, 3]).mean()),
                "gt_xyxy_std": float(box_convert(torch.from_numpy(boxes), "cxcywh", "xyxy").std(0).mean()),
                "rotation_shares": np.bincount(rots, minlength=4).tolist()}


def check_sample(targets: dict) -> str | None:
    """Puzzle-specific validation of one on-disk sample; returns a problem or None."""
    cx, cy, w, h = targets["box"]
    if not (0 < w <= 1 and 0 < h <= 1):
        return f"box w, h must be in (0, 1], got {w}, {h}"
    if not (0 <= cx <= 1 and 0 <= cy <= 1):
        return f"box centre must be in [0, 1], got {cx}, {cy}"
    if targets["rotation"] not in (0, 1, 2, 3):
        return f"rotation must be 0, 1, 2 or 3, got {targets['rotation']}"
    return None
