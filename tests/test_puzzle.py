"""puzzle task (seed 002): data statistics, loss math, model, overlay, folder + JSON format, CLI + W&B."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import default_collate
from torchvision.ops import box_convert, complete_box_iou_loss, generalized_box_iou_loss

from conftest import find_wandb_run, history, inspect_records, inspect_summary, run_cli
from runner.config import load_config
from runner.data.formats.folder_json import FolderJsonDataset, Layout, export, write_split
from runner.data.synthetic.puzzle import PuzzleDataset, PuzzleSpec
from runner.errors import UserError
from runner.losses.box import PuzzleLoss, heatmap_target, paired_iou
from runner.losses.seed_broken_puzzle import SeedGIoULoss
from runner.models.puzzle import PuzzleNet
from runner.tasks import build_task
from runner.tasks.puzzle import LAYOUT

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "puzzle.yaml"
# the seed's log: a piece is ~2.6% x 4% of the puzzle, ~0.1% of its area; GT corner std ~0.3
SEED_W, SEED_H = 0.026, 0.04


def tiny_task(**overrides):
    base = {"data.train_size": 64, "data.val_size": 16, "model.width": 8, "model.embed": 8}
    cfg = load_config(CONFIG, {**base, **overrides})
    return build_task(cfg)


# ---------------------------------------------------------------- data

def test_piece_statistics_match_the_seed():
    ds = PuzzleDataset(PuzzleSpec(), "train", 3000)
    s = ds.statistics(3000)
    print("synthetic piece statistics:", s)
    assert s["piece_w_frac"] == pytest.approx(SEED_W, rel=0.03)
    assert s["piece_h_frac"] == pytest.approx(SEED_H, rel=0.03)
    assert s["piece_area_frac"] == pytest.approx(SEED_W * SEED_H, rel=0.06)  # ~0.1% of the area
    assert 0.25 < s["box_xyxy_std"] < 0.32  # the seed's "GT std ~0.28-0.30"
    assert s["rotation_min_share"] > 0.22  # four rotations, about equally often


def test_samples_are_deterministic_and_seeded():
    a, b = PuzzleDataset(PuzzleSpec(seed=0), "val", 8), PuzzleDataset(PuzzleSpec(seed=0), "val", 8)
    c = PuzzleDataset(PuzzleSpec(seed=1), "val", 8)
    for k in ("image", "piece", "box", "rotation"):
        assert torch.equal(a[3][k], b[3][k])
    assert not torch.equal(a[3]["image"], c[3]["image"])
    assert not torch.equal(a[3]["image"], a[4]["image"])


def test_target_box_and_rotation_point_at_the_piece():
    """Turning the piece back by `rotation` and shrinking it to its box size, classic template
    matching finds it at the target box: the targets describe the images, not just each other."""
    spec = PuzzleSpec(piece_noise=0.0)
    ds = PuzzleDataset(spec, "val", 40)
    hits = wrong_turn_better = 0
    for i in range(len(ds)):
        s = ds[i]
        img = s["image"].permute(1, 2, 0).numpy()
        cx, cy, w, h = s["box"].tolist()
        size = (max(2, round(w * spec.puzzle_width)), max(2, round(h * spec.puzzle_height)))
        scores = []
        for turn in range(4):
            piece = np.ascontiguousarray(np.rot90(s["piece"].permute(1, 2, 0).numpy(), -turn))
            tmpl = cv2.resize(piece, size, interpolation=cv2.INTER_AREA)
            res = cv2.matchTemplate(img, tmpl, cv2.TM_SQDIFF)
            _, _, loc, _ = cv2.minMaxLoc(res)
            found = (loc[0] + size[0] / 2, loc[1] + size[1] / 2)
            scores.append((res.min(), found))
        best_turn = int(np.argmin([sc for sc, _ in scores]))
        fx, fy = scores[int(s["rotation"])][1]
        hits += math.hypot(fx - cx * spec.puzzle_width, fy - cy * spec.puzzle_height) <= 2.0
        wrong_turn_better += best_turn != int(s["rotation"])
    assert hits >= 36, f"template matching found only {hits}/40 pieces at their target box"
    assert wrong_turn_better <= 8, f"{wrong_turn_better}/40 pieces matched better under a wrong rotation"


# ---------------------------------------------------------------- losses

SEED_PRED = [0.49, 0.49, 0.51, 0.51]  # a small box at the centre, as the seed's initial predictions
SEED_GT = [0.026, 0.0, 0.052, 0.04]  # the seed's example target (x1, y1, x2, y2)


def grad_norm(loss_fn, pred, gt):
    p = torch.tensor([pred], requires_grad=True)
    loss = loss_fn(p, torch.tensor([gt]), reduction="mean")
    loss.backward()
    return float(loss.detach()), float(p.grad.norm())


def test_ciou_pulls_disjoint_boxes_where_giou_barely_does():
    """The seed's table: GIoU 1.99 with gradient ~0.08 per coordinate, CIoU 1.90 with ~0.93."""
    g_loss, g_grad = grad_norm(generalized_box_iou_loss, SEED_PRED, SEED_GT)
    c_loss, c_grad = grad_norm(complete_box_iou_loss, SEED_PRED, SEED_GT)
    print(f"GIoU loss {g_loss:.3f} grad {g_grad:.3f}; CIoU loss {c_loss:.3f} grad {c_grad:.3f}; "
          f"ratio {c_grad / g_grad:.1f}x")
    assert g_loss == pytest.approx(1.99, abs=0.01) and c_loss == pytest.approx(1.90, abs=0.01)
    assert c_grad > 10 * g_grad


def test_giou_is_minimised_by_one_box_for_every_input():
    """A box over the whole picture scores 1 - IoU ~ 0.999 wherever the tiny piece is: the
    constant prediction the seed's GIoU-only loss sat at (position_loss = 1.000)."""
    gts = box_convert(torch.tensor([[x, y, SEED_W, SEED_H] for x in (0.2, 0.5, 0.8) for y in (0.3, 0.7)]),
                      "cxcywh", "xyxy")
    full = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand_as(gts)
    losses = generalized_box_iou_loss(full, gts)
    assert torch.allclose(losses, torch.full_like(losses, 1 - SEED_W * SEED_H), atol=1e-4)
    centre = box_convert(torch.tensor([[0.5, 0.5, SEED_W, SEED_H]]), "cxcywh", "xyxy").expand_as(gts)
    assert (generalized_box_iou_loss(centre, gts) > 1.5).all()  # a piece-sized guess does worse


def outputs_for(box_cxcywh: torch.Tensor, rot_logits: torch.Tensor | None = None, grid=(8, 12)):
    b = box_cxcywh.shape[0]
    return {"box": box_cxcywh, "box_xyxy": box_convert(box_cxcywh, "cxcywh", "xyxy"),
            "rotation_logits": rot_logits if rot_logits is not None else torch.zeros(b, 4),
            "heatmap_logits": torch.zeros(b, *grid)}


def test_fixed_loss_gradient_on_a_disjoint_box_beats_the_seed_loss():
    gt = torch.tensor([[0.039, 0.02, 0.026, 0.04]])
    batch = {"box": gt, "rotation": torch.tensor([0])}
    grads = {}
    for name, loss in (("fixed", PuzzleLoss()), ("seed", SeedGIoULoss())):
        pred = torch.tensor([[0.5, 0.5, 0.02, 0.02]], requires_grad=True)
        out = loss(outputs_for(pred), batch)
        out["loss"].backward()
        grads[name] = float(pred.grad[0, :2].norm())  # pull on the centre
    print("centre gradient:", grads)
    assert grads["fixed"] > 5 * grads["seed"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 0.99), st.floats(0.01, 0.99), st.floats(0.005, 0.3), st.floats(0.005, 0.3)),
                min_size=1, max_size=6),
       st.lists(st.integers(0, 3), min_size=6, max_size=6))
def test_fixed_loss_terms_are_never_negative(boxes, rots):
    pred = torch.tensor(boxes)
    gt = torch.tensor([[0.5, 0.5, SEED_W, SEED_H]]).expand_as(pred)
    batch = {"box": gt, "rotation": torch.tensor(rots[:len(boxes)])}
    loss = PuzzleLoss(center_mse_weight=1.0, variance_weight=1.0, heatmap_weight=0.5)
    out = loss(outputs_for(pred, torch.randn(len(boxes), 4)), batch)
    for k in ("loss", "position_loss", "rotation_loss", "heatmap_loss", "position/ciou", "position/smooth_l1",
              "position/center_mse", "position/variance"):
        assert torch.isfinite(out[k]) and out[k] >= 0, (k, out[k])
    assert torch.equal(out["total_loss"], out["loss"].detach())


def test_loss_keys_weights_and_variance_penalty():
    gt = torch.tensor([[0.3, 0.4, SEED_W, SEED_H], [0.7, 0.6, SEED_W, SEED_H]])
    batch = {"box": gt, "rotation": torch.tensor([1, 2])}
    same = torch.tensor([[0.5, 0.5, SEED_W, SEED_H]] * 2)
    out = PuzzleLoss(variance_weight=1.0, min_variance=0.01)(outputs_for(same), batch)
    assert {"loss", "position_loss", "rotation_loss", "heatmap_loss", "total_loss", "iou"} <= set(out)
    assert float(out["position/variance"]) == pytest.approx(0.01)  # collapsed centres are penalised
    assert float(out["rotation_loss"]) == pytest.approx(math.log(4), abs=1e-6)
    spread = PuzzleLoss(variance_weight=1.0)(outputs_for(gt.clone()), batch)
    assert float(spread["position/variance"]) == 0.0
    assert float(spread["position/ciou"]) == pytest.approx(0.0, abs=1e-3)  # eps=1e-7 vs areas ~1e-3
    assert float(spread["iou"]) == pytest.approx(1.0)
    # position_loss = 0.5 CIoU + 0.5 SmoothL1 by default, plus the optional terms by their weights
    expect = 0.5 * out["position/ciou"] + 0.5 * out["position/smooth_l1"] + out["position/variance"]
    assert float(out["position_loss"]) == pytest.approx(float(expect), rel=1e-6)
    # the heatmap term sits beside position_loss (so position_loss stays on the seed's scale)
    both = PuzzleLoss(heatmap_weight=0.5)(outputs_for(same), batch)
    assert float(both["loss"]) == pytest.approx(float(both["position_loss"] + both["rotation_loss"]
                                                      + 0.5 * both["heatmap_loss"]), rel=1e-6)
    assert float(both["heatmap_loss"]) == pytest.approx(math.log(8 * 12), rel=1e-6)  # flat heatmap
    with pytest.raises(ValueError, match=">= 0"):
        PuzzleLoss(ciou_weight=-1.0)


def test_heatmap_target_and_paired_iou():
    box = torch.tensor([[0.0, 0.0, 0.1, 0.1], [0.99, 0.99, 0.1, 0.1], [0.5, 0.26, 0.1, 0.1]])
    assert heatmap_target(box, 4, 6).tolist() == [0, 23, 1 * 6 + 3]
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.4, 0.4]])  # last inverted
    b = torch.tensor([[0.0, 0.0, 0.5, 1.0], [2.0, 2.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0]])
    assert paired_iou(a, b).tolist() == pytest.approx([0.5, 0.0, 0.0])


# ---------------------------------------------------------------- model

@pytest.mark.parametrize("head,fmt", [("heatmap", "cxcywh"), ("regress", "cxcywh"), ("regress", "xyxy")])
def test_model_outputs(head, fmt):
    torch.manual_seed(0)
    net = PuzzleNet(width=8, embed=8, head=head, box_format=fmt).eval()
    out = net(torch.rand(3, 3, 64, 96), torch.rand(3, 3, 16, 16))
    assert out["box"].shape == out["box_xyxy"].shape == (3, 4)
    assert out["rotation_logits"].shape == (3, 4)
    assert torch.isfinite(out["box"]).all()
    if fmt == "cxcywh":
        assert torch.allclose(out["box_xyxy"], box_convert(out["box"], "cxcywh", "xyxy"))
        assert (out["box"][:, 2:] > 0).all()
    else:
        assert ((out["box_xyxy"] > 0) & (out["box_xyxy"] < 1)).all()  # four sigmoids


def test_rotation_logits_turn_with_the_piece():
    """Candidate r undoes r quarter turns, so turning the piece once more shifts the logits by one."""
    torch.manual_seed(0)
    net = PuzzleNet(width=8, embed=8).eval()
    image, piece = torch.rand(2, 3, 64, 96), torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        a = net(image, piece)["rotation_logits"]
        b = net(image, torch.rot90(piece, 1, dims=(2, 3)))["rotation_logits"]
    assert torch.allclose(torch.roll(a, 1, dims=1), b, atol=1e-4)


def test_resnet18_backbone_runs():
    net = PuzzleNet(backbone="resnet18", scales=(4, 8), size_prior=(0.1, 0.1)).eval()
    out = net(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 32, 32))
    assert out["box"].shape == (2, 4) and torch.isfinite(out["rotation_logits"]).all()


def test_heatmap_head_needs_cxcywh():
    with pytest.raises(UserError, match="box_format"):
        load_config(CONFIG, {"model.box_format": "xyxy"})


# ---------------------------------------------------------------- task: metrics, overlay, baseline

def test_metrics_overlay_and_baseline(tmp_path):
    task = tiny_task()
    ds = task.dataset("val")
    batch = default_collate([ds[i] for i in range(4)])
    model = task.model().eval()
    with torch.no_grad():
        out = task.forward(model, batch)
    m = {k: float(n) / float(d) for k, (n, d) in task.metrics(out, batch).items()}
    assert set(m) == {"center_error", "iou", "found_rate", "rotation_accuracy"}
    # a perfect prediction scores perfectly
    perfect = dict(out, box=batch["box"], box_xyxy=box_convert(batch["box"], "cxcywh", "xyxy"),
                   rotation_logits=torch.nn.functional.one_hot(batch["rotation"], 4).float())
    p = {k: float(n) / float(d) for k, (n, d) in task.metrics(perfect, batch).items()}
    assert p == pytest.approx({"center_error": 0.0, "iou": 1.0, "found_rate": 1.0, "rotation_accuracy": 1.0})
    view = task.monitor_view(out, batch)
    assert view.pred.shape == view.target.shape == (4, 4)

    img = task.draw(batch, out, 0)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    path = tmp_path / "puzzle_overlay.png"
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert path.stat().st_size > 1000

    def has(color):
        return bool((np.abs(img.astype(int) - np.array(color)).sum(2) < 30).any())

    from runner import viz
    assert has(viz.GREEN) and has(viz.RED) and has(viz.YELLOW)

    base = task.baseline()
    assert base["center_error"] > 30  # the mean box is far from a random piece (px of a 192x128 puzzle)
    assert base["iou"] < 0.05 and 0.1 < base["rotation_accuracy"] < 0.5


# ---------------------------------------------------------------- folder + JSON format

def test_folder_json_round_trip(tmp_path):
    task = tiny_task()
    written = export(task.cfg, tmp_path / "data", {"train": 6, "val": 3})
    assert written == {"train": 6, "val": 3}
    files = sorted(p.name for p in (tmp_path / "data" / "val").iterdir())
    assert files[:4] == ["000000.image.png", "000000.json", "000000.piece.png", "000001.image.png"]
    assert "layout.json" in files
    synthetic = task.dataset("train")
    folder = tiny_task(**{"data.source": "folder", "data.root": str(tmp_path / "data")})
    read = folder.dataset("train")
    assert len(read) == 6
    for i in range(6):
        a, b = synthetic[i], read[i]
        assert torch.equal(a["box"], b["box"]) and torch.equal(a["rotation"], b["rotation"])
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["piece"], b["piece"])  # 8-bit levels survive PNG
    assert folder.baseline()["center_error"] > 0


def test_folder_json_reader_is_generic(tmp_path):
    """The same reader serves another task's layout (one image, other targets)."""
    layout = Layout(images=("image",), targets={"target_xy": ("float", (2,)), "done": ("float", ()), "k": ("int", ())})
    samples = [{"image": torch.rand(3, 8, 10), "target_xy": torch.tensor([0.25, 0.5]), "done": torch.tensor(0.0),
                "k": torch.tensor(3)}]
    write_split(samples, tmp_path / "train", layout)
    item = FolderJsonDataset(tmp_path / "train", layout)[0]
    assert item["image"].shape == (3, 8, 10) and item["k"].dtype == torch.long and int(item["k"]) == 3
    assert item["target_xy"].tolist() == [0.25, 0.5]
    with pytest.raises(UserError, match="layout.json"):
        FolderJsonDataset(tmp_path / "train", LAYOUT)  # written for another task


@pytest.mark.parametrize("corrupt,match", [
    (lambda d: d.write_text('{"image": "000001.image.png", "piece": '), "not valid JSON"),
    (lambda d: d.write_text(json.dumps({"image": "000001.image.png", "piece": "000001.piece.png", "box": [0.5, 0.5, 0.1],
                                        "rotation": 1})), "shape"),
    (lambda d: d.write_text(json.dumps({"image": "nope.png", "piece": "000001.piece.png", "box": [0.5, 0.5, 0.1, 0.1],
                                        "rotation": 1})), "does not exist"),
    (lambda d: d.write_text(json.dumps({"image": "000001.image.png", "piece": "000001.piece.png",
                                        "box": [0.5, 0.5, 0.1, 0.1], "rotation": 7})), "rotation must be"),
])
def test_folder_json_bad_sample_names_the_file(tmp_path, corrupt, match):
    task = tiny_task()
    export(task.cfg, tmp_path, {"train": 3})
    bad = tmp_path / "train" / "000001.json"
    corrupt(bad)
    with pytest.raises(UserError, match=match) as err:
        tiny_task(**{"data.source": "folder", "data.root": str(tmp_path)}).dataset("train")
    assert str(bad) in str(err.value)


def test_export_cli_then_train_cli_names_a_malformed_sample_file_and_exits_2(tmp_path):
    proc = run_cli("runner.data.formats.folder_json", "--config", str(CONFIG), "--out", str(tmp_path / "data"),
                   "--train", "2", "--val", "2")
    assert proc.returncode == 0 and "wrote {'train': 2, 'val': 2}" in proc.stdout, proc.stderr
    bad = tmp_path / "data" / "train" / "000000.json"
    assert json.loads(bad.read_text())["image"] == "000000.image.png"
    bad.write_text("{oops")
    proc = run_cli("runner.train", "--config", str(CONFIG), "--no-progress", f"--out_dir={tmp_path / 'runs'}",
                   "--data.source=folder", f"--data.root={tmp_path / 'data'}")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and "not valid JSON" in lines[0], proc.stderr


# ---------------------------------------------------------------- CLI + offline W&B

def test_cli_offline_wandb_run_logs_puzzle_keys(out_dir):
    proc = run_cli("runner.train", "--config", str(CONFIG), "--wandb", "--no-progress", f"--out_dir={out_dir}",
                   "--data.train_size=48", "--data.val_size=16", "--train.batch_size=16", "--train.epochs=1",
                   "--train.log_every=1", "--model.width=8", "--model.embed=8", "--viz.n_samples=2",
                   "--checkpoint.upload=False", "--train.device=cpu", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = find_wandb_run(out_dir)
    records = inspect_records(run)
    rows = history(records)
    keys = set().union(*(r.keys() for r in rows))
    for k in ("train/position_loss", "train/rotation_loss", "train/total_loss", "train/loss", "train/heatmap_loss",
              "train/position/ciou", "train/position/smooth_l1", "pred/std_ratio",
              "pred/std", "gt/std", "val/center_error", "val/iou", "val/rotation_accuracy", "val/position_loss",
              "val/pred/std_ratio", "val/overlays._type"):  # an image is logged as val/overlays.<field>
        assert k in keys, f"{k} not logged; logged: {sorted(keys)}"
    summary = inspect_summary(run)
    assert "baseline/center_error" in json.dumps(summary)
    overlays = list(Path(out_dir).glob("**/media/val_overlays_epoch001.png"))
    assert overlays and cv2.imread(str(overlays[0])) is not None
