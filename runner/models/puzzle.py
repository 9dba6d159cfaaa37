"""Puzzle piece locator (seed 002): where in the puzzle is the piece, and how is it turned?

    puzzle [B, 3, H, W] --backbone--> features F_s at each stride s in `scales` (shared weights)
    piece  [B, 3, P, P] --4 undoing turns, each resized to the size the piece has in the puzzle
                          at stride s (size_prior * (W, H) / s cells)--> same backbone --> templates T_{r,s}
    normalized cross-correlation of T_{r,s} with F_s (cosine over the template window)
        -> all scales brought to the heatmap grid (stride `heat_stride`), shared conv head
        -> evidence e [B, 4, h, w] for "the piece sits here, turned back by r"
    rotation_logits[r] = logsumexp over space of e[r]
    head="heatmap": centre = soft-argmax of softmax(logsumexp_r e); size = size_prior * exp(delta),
                    |delta| <= 0.5, delta from the pooled piece features
    head="regress": the evidence pooled to 4x6 cells -> MLP -> four numbers (the seed's kind of head:
                    (cx, cy, w, h) or four sigmoids read as (x1, y1, x2, y2))

Why this shape: the seed correlated features of a piece shown ~3x larger than the puzzle around
it (its scale-mismatch hypothesis) and regressed the box from pooled features, which collapsed
to one box for every input. Here the piece is matched at the scale it has in the puzzle, the four
turns are matched explicitly (rotation = which candidate matches best), and the default head
reads the position off the correlation peak, so its output moves with the input by construction.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops import box_convert


MAX_LOG_SIZE = 0.5  # predicted sizes stay within exp(+-0.5) of the prior (pieces vary by +-10%)


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class SmallBackbone(nn.Module):
    """CPU backbone. Stride 1: a per-pixel colour embedding (1x1 convs: no border effects, so a
    5x5-pixel piece makes an exact 5x5 template); strides 2 and 4: 3x3 conv stages on top."""

    def __init__(self, width: int = 12, embed: int = 12):
        super().__init__()
        w, e = width, embed
        self.stages = nn.ModuleDict({
            "1": nn.Sequential(conv_bn(3, w, 1), nn.Conv2d(w, e, 1)),
            "2": nn.Sequential(nn.BatchNorm2d(e), nn.ReLU(inplace=True), conv_bn(e, w, 3, 2), nn.Conv2d(w, e, 1)),
            "4": nn.Sequential(nn.BatchNorm2d(e), nn.ReLU(inplace=True), conv_bn(e, w, 3, 2), nn.Conv2d(w, e, 1)),
        })
        self.channels = {1: e, 2: e, 4: e}

    def forward(self, x: Tensor, upto: int) -> dict[int, Tensor]:
        out = {}
        for s, stage in self.stages.items():
            x = stage(x)
            out[int(s)] = x
            if int(s) >= upto:
                break
        return out


class ResNet18Backbone(nn.Module):
    """torchvision ResNet-18, random init (weights=None): strides 2 (stem), 4, 8, 16, each
    projected to `embed` channels by a 1x1 conv."""

    def __init__(self, embed: int = 64):
        super().__init__()
        r = torchvision.models.resnet18(weights=None)
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu)
        self.pool, self.layer1, self.layer2, self.layer3 = r.maxpool, r.layer1, r.layer2, r.layer3
        self.proj = nn.ModuleDict({str(s): nn.Conv2d(c, embed, 1) for s, c in ((2, 64), (4, 64), (8, 128), (16, 256))})
        self.channels = {2: embed, 4: embed, 8: embed, 16: embed}

    def forward(self, x: Tensor, upto: int) -> dict[int, Tensor]:
        feats = {2: self.stem(x)}
        if upto > 2:
            feats[4] = self.layer1(self.pool(feats[2]))
        if upto > 4:
            feats[8] = self.layer2(feats[4])
        if upto > 8:
            feats[16] = self.layer3(feats[8])
        return {s: self.proj[str(s)](f) for s, f in feats.items()}


def coords(b: int, h: int, w: int, device, dtype) -> Tensor:
    """[B, 2, h, w] normalized cell-centre coordinates (x, y) in [0, 1]."""
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy]).unsqueeze(0).expand(b, -1, -1, -1)


def ncc(feats: Tensor, templates: Tensor) -> Tensor:
    """Cosine between each template and every same-sized window of feats (zero padded, 'same' size).

    feats [B, C, H, W], templates [B, R, C, th, tw] -> [B, R, H, W] in [-1, 1].
    """
    b, c, h, w = feats.shape
    r, th, tw = templates.shape[1], templates.shape[-2], templates.shape[-1]
    pad = (th // 2, tw // 2)
    dot = F.conv2d(feats.reshape(1, b * c, h, w), templates.reshape(b * r, c, th, tw), padding=pad, groups=b)
    energy = F.avg_pool2d((feats * feats).sum(1, keepdim=True), (th, tw), 1, pad, count_include_pad=True) * (th * tw)
    norm = energy[..., :h, :w].sqrt() * templates.flatten(2).norm(dim=2).view(b, r, 1, 1)
    return dot.view(b, r, *dot.shape[-2:])[..., :h, :w] / (norm + 1e-6)


class PuzzleNet(nn.Module):
    def __init__(self, backbone: str = "small", width: int = 12, embed: int = 12, scales: tuple[int, ...] = (1, 2),
                 heat_stride: int = 2, hidden: int = 8, head: str = "heatmap", box_format: str = "cxcywh",
                 size_prior: tuple[float, float] = (0.026, 0.04)):
        super().__init__()
        if head not in ("heatmap", "regress"):
            raise ValueError(f"head must be 'heatmap' or 'regress', got {head!r}")
        if box_format not in ("cxcywh", "xyxy"):
            raise ValueError(f"box_format must be 'cxcywh' or 'xyxy', got {box_format!r}")
        if head == "heatmap" and box_format != "cxcywh":
            raise ValueError("the heatmap head predicts a centre: use box_format 'cxcywh'")
        if backbone == "small":
            self.backbone = SmallBackbone(width, embed)
        elif backbone == "resnet18":
            self.backbone = ResNet18Backbone(embed)
        else:
            raise ValueError(f"unknown backbone {backbone!r}; use 'small' or 'resnet18'")
        bad = [s for s in scales if s not in self.backbone.channels]
        if bad or not scales:
            raise ValueError(f"scales {list(scales)} must be strides offered by backbone {backbone!r}: "
                             f"{sorted(self.backbone.channels)}")
        self.scales, self.heat_stride = tuple(sorted(scales)), heat_stride
        self.head_kind, self.box_format = head, box_format
        self.corr_scale = nn.Parameter(torch.tensor(5.0))  # cosine in [-1, 1] -> evidence logits
        self.evidence = nn.Sequential(nn.Conv2d(len(self.scales), hidden, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(hidden, 1, 1))
        c = self.backbone.channels[self.scales[-1]]
        self.size_head = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2))
        nn.init.zeros_(self.size_head[-1].weight)
        nn.init.zeros_(self.size_head[-1].bias)  # start at the prior size (the seed's advice 3)
        self.register_buffer("log_size_prior", torch.tensor(size_prior, dtype=torch.float32).log())
        self.size_prior = tuple(float(v) for v in size_prior)  # host copy: template sizes never read the device
        if head == "regress":
            self.pool_hw = (4, 6)
            self.regress = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 6, 128), nn.ReLU(inplace=True),
                                         nn.Linear(128, 4))

    def sized(self, raw: Tensor) -> Tensor:
        """(w, h) = prior * exp(MAX_LOG_SIZE * tanh(raw)): within 0.6x-1.65x of the prior. Unbounded, the
        size grew into a hedge: CIoU's centre-distance term shrinks as a box that misses grows."""
        return (self.log_size_prior + MAX_LOG_SIZE * torch.tanh(raw)).exp()

    def template_cells(self, image_hw: tuple[int, int], stride: int) -> tuple[int, int]:
        """The piece's expected size in cells at a stride (rounded half up, at least 1)."""
        h, w = image_hw
        prior = self.size_prior
        return (max(1, math.floor(prior[1] * h / stride + 0.5)), max(1, math.floor(prior[0] * w / stride + 0.5)))

    def forward(self, image: Tensor, piece: Tensor) -> dict[str, Tensor]:
        """image [B, 3, H, W], piece [B, 3, P, P] in [0, 1] ->
            box [B, 4] (cx, cy, w, h) normalized, box_xyxy [B, 4], rotation_logits [B, 4],
            heatmap_logits [B, h, w] at stride heat_stride, evidence [B, 4, h, w] per candidate."""
        b, _, H, W = image.shape
        top = self.scales[-1]
        feats = self.backbone(image, upto=top)
        cands = torch.cat([torch.rot90(piece, -r, dims=(2, 3)) for r in range(4)])  # candidate r undoes r turns
        gh, gw = math.ceil(H / self.heat_stride), math.ceil(W / self.heat_stride)
        maps, pooled = [], None
        for s in self.scales:
            th, tw = self.template_cells((H, W), s)
            small = F.interpolate(cands, size=(th * s, tw * s), mode="area")
            t = self.backbone(small, upto=s)[s]  # [4B, C, th', tw']
            if s == top:
                pooled = t.mean((2, 3)).view(4, b, -1).mean(0)
            t = t.view(4, b, *t.shape[1:]).transpose(0, 1)
            c = ncc(feats[s], t)
            if c.shape[-2:] != (gh, gw):
                if c.shape[-1] > gw:
                    c = F.adaptive_max_pool2d(c, (gh, gw))
                else:
                    c = F.interpolate(c, size=(gh, gw), mode="bilinear", align_corners=False)
            maps.append(c)
        x = torch.stack(maps, 2) * self.corr_scale  # [B, 4, n_scales, gh, gw]
        ev = self.evidence(x.flatten(0, 1)).view(b, 4, gh, gw).float()
        rotation_logits = ev.flatten(2).logsumexp(-1)
        heat_logits = ev.logsumexp(1)
        size = self.sized(self.size_head(pooled).float())
        if self.head_kind == "heatmap":
            prob = heat_logits.flatten(1).softmax(-1)
            grid = coords(b, gh, gw, image.device, torch.float32).flatten(2)
            box = torch.cat([torch.einsum("bn,bcn->bc", prob, grid), size], 1)
            box_xyxy = box_convert(box, "cxcywh", "xyxy")
        else:
            x = heat_logits.unsqueeze(1)
            x = torch.cat([F.adaptive_avg_pool2d(x, self.pool_hw), F.adaptive_max_pool2d(x, self.pool_hw)], 1)
            out = self.regress(x).float()
            if self.box_format == "xyxy":  # the seed's head: four sigmoids read as x1, y1, x2, y2
                box_xyxy = out.sigmoid()
                box = box_convert(box_xyxy, "xyxy", "cxcywh")
            else:
                box = torch.cat([out[:, :2].sigmoid(), self.sized(out[:, 2:])], 1)
                box_xyxy = box_convert(box, "cxcywh", "xyxy")
        return {"box": box, "box_xyxy": box_xyxy, "rotation_logits": rotation_logits,
                "heatmap_logits": heat_logits, "evidence": ev}
