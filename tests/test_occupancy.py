"""occupancy task (seed 004): data statistics, loss math, overlay, Occ3D files, a CLI run read back from W&B.

Learning against the baselines and the seed_broken control are measured by bench/occupancy_proof.py.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from conftest import find_wandb_run, history, inspect_records, inspect_summary, run_cli
from runner import viz
from runner.config import build_config
from runner.data.formats.occ3d import Occ3DDataset, export_synthetic, read_labels, write_labels
from runner.data.synthetic.occupancy import OccupancyDataset, OccupancySpec, scene, top_height
from runner.errors import UserError
from runner.losses.seed_broken_occupancy import WeightedBCELoss
from runner.losses.occupancy import OccupancyLoss
from runner.tasks.occupancy import OccupancyTask

SMALL = OccupancySpec(grid=(64, 64, 16))


def make_task(**sections) -> OccupancyTask:
    return OccupancyTask(build_config({"task": "occupancy", **sections}))


def batch(spec=SMALL, n=8, split="val"):
    ds = OccupancyDataset(spec, split, n)
    return default_collate([ds[i] for i in range(n)])


# ---------------------------------------------------------------- data

def test_occupancy_rate_and_empty_scenes_match_the_seed():
    stats = OccupancyDataset(SMALL, "train", 400).statistics(400)
    assert abs(stats["occupancy_rate"] - 0.0083) < 0.0008, stats  # seed: ~0.83% of voxels occupied
    assert 0.01 < stats["empty_fraction"] < 0.12, stats  # some scenes hold nothing (default 5%)
    big = OccupancyDataset(OccupancySpec(grid=(200, 200, 121)), "train", 16).statistics(16)
    assert abs(big["occupancy_rate"] - 0.0083) < 0.003, big  # the seed's grid, 4.84M voxels
    custom = OccupancyDataset(OccupancySpec(grid=(64, 64, 16), occupancy_rate=0.03, empty_fraction=0.0),
                              "train", 200).statistics(200)
    assert abs(custom["occupancy_rate"] - 0.03) < 0.003 and custom["empty_fraction"] == 0.0, custom


def test_samples_are_deterministic_and_the_input_shows_the_scene():
    a, b = OccupancyDataset(SMALL, "train", 10), OccupancyDataset(SMALL, "train", 10)
    s, t = a[3], b[3]
    assert torch.equal(s["occupancy"], t["occupancy"]) and torch.equal(s["bev"], t["bev"])
    assert not torch.equal(a[3]["occupancy"], OccupancyDataset(SMALL, "val", 10)[3]["occupancy"])
    assert s["bev"].shape == (2, 64, 64) and s["occupancy"].shape == (64, 64, 16)
    assert s["occupancy"].dtype == torch.uint8
    # observed columns report the top of the scene within the sensor noise (clutter aside)
    occ = scene(SMALL, "train", 3)
    top, seen = top_height(occ), s["bev"][1].numpy() > 0
    err = np.abs(s["bev"][0].numpy() * 16 - top)[seen]
    assert np.median(err) < 0.6 and np.mean(err < 2.5) > 0.98
    assert abs(seen.mean() - (1 - SMALL.obs_dropout)) < 0.05


def test_label_fault_empties_labels_but_not_the_input():
    spec = OccupancySpec(grid=(64, 64, 16), empty_label_fraction=1.0)
    ds = OccupancyDataset(spec, "train", 20)
    stats = ds.statistics(20)
    assert stats["occupancy_rate"] == 0.0 and stats["scene_occupancy_rate"] > 0.004
    s = ds[1]
    assert int(s["occupancy"].sum()) == 0 and float(s["bev"][0].max()) > 0.2


# ---------------------------------------------------------------- losses

def test_focal_dice_mean_terms_on_an_all_zero_prediction():
    b = batch()
    t = b["occupancy"].float()
    r = float(t.mean())
    logits = torch.full_like(t, -10.0)  # p = 4.5e-5 everywhere: the seed's collapsed output
    out = OccupancyLoss()({"logits": logits}, b)
    p = torch.sigmoid(logits)
    # focal: every occupied voxel costs alpha * (1-p)^2 * -log p; mean reduction scales it by the rate
    manual = (-0.99 * t * (1 - p) ** 2 * torch.log(p) - 0.01 * (1 - t) * p ** 2 * torch.log1p(-p)).mean()
    assert float(out["loss_focal"]) == pytest.approx(float(manual), rel=1e-4)
    assert float(out["loss_focal"]) > 0.9 * r * 10 * 0.99  # ~ rate x 0.99 x 10 nats
    assert float(out["loss_dice"]) > 0.99  # no overlap at all
    assert float(out["loss_mean"]) == pytest.approx((float(p.mean()) - r) ** 2, rel=1e-4)
    assert float(out["loss_mean"]) > 0
    # the seed's "10 * (0 - 0.008)^2 = high penalty" is ~7e-4: the mean term cannot stop a collapse, dice does
    assert float(out["weighted/loss_mean"]) < 1e-3 < float(out["weighted/loss_dice"])
    assert float(out["loss"]) > 1.0
    # at the seed's start (p = 0.5) the mean term is the largest one
    start = OccupancyLoss()({"logits": torch.zeros_like(t)}, b)
    assert float(start["weighted/loss_mean"]) > 2.0 > float(start["loss_dice"])


def test_fixed_loss_is_small_for_a_perfect_prediction_and_never_negative():
    b = batch()
    t = b["occupancy"].float()
    perfect = OccupancyLoss()({"logits": (2 * t - 1) * 12}, b)
    assert float(perfect["loss"]) < 0.01
    gen = torch.Generator().manual_seed(0)
    for focal_norm in ("mean", "positives"):
        loss = OccupancyLoss(focal_norm=focal_norm)
        for _ in range(5):
            logits = torch.randn(t.shape, generator=gen) * 6 - 3
            assert float(loss({"logits": logits}, b)["loss"]) >= 0
    # an all-empty batch: focal and mean terms vanish for a near-zero prediction, while dice (over the
    # batch, smooth 1) reaches 0 only as sum(p) -> 0: p = 6e-6 on 524k voxels still leaves dice 0.76
    empty = {"occupancy": torch.zeros_like(b["occupancy"])}
    near = OccupancyLoss()({"logits": torch.full_like(t, -12.0)}, empty)
    assert float(near["loss_focal"]) < 1e-9 and float(near["loss_mean"]) < 1e-9
    assert 0.5 < float(near["loss_dice"]) < 1
    assert float(OccupancyLoss()({"logits": torch.full_like(t, -30.0)}, empty)["loss"]) < 1e-3


def test_weighted_bce_control_does_not_favour_all_zeros():
    """The seed blamed BCE with pos_weight 10 for an all-zero collapse. Its math says otherwise:
    the best constant prediction is 10r / (1 + 9r), ~9x the occupancy rate, and all-zero costs more."""
    b = batch()
    t = b["occupancy"].float()
    r = float(t.mean())
    bce = WeightedBCELoss(10.0)
    x = torch.zeros((), requires_grad=True)  # the best constant logit, found through the module
    opt = torch.optim.LBFGS([x], max_iter=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = bce({"logits": x.expand_as(t)}, b)["loss"]
        loss.backward()
        return loss

    opt.step(closure)
    best_p = float(torch.sigmoid(x.detach()))
    assert best_p == pytest.approx(10 * r / (1 + 9 * r), rel=1e-3)
    assert best_p > 5 * r
    best = float(bce({"logits": x.detach().expand_as(t)}, b)["loss"])
    all_zero = float(bce({"logits": torch.full_like(t, -10.0)}, b)["loss"])
    assert all_zero > best + 0.3
    # and it is not small: 10 x rate x 10 nats
    assert all_zero > 0.5
    # its gradient at an all-zero output pushes occupied voxels up
    logits = torch.full_like(t, -10.0, requires_grad=True)
    bce({"logits": logits}, b)["loss"].backward()
    assert float(logits.grad[t > 0].max()) < 0 < float(logits.grad[t == 0].min())


def test_default_config_has_no_loss_parameters_and_picks_the_loss_by_kind():
    task = make_task()
    assert isinstance(task.criterion(), OccupancyLoss) and not list(task.criterion().parameters())
    broken = make_task(loss={"kind": "weighted_bce", "pos_weight": 10.0}).criterion()
    assert isinstance(broken, WeightedBCELoss) and not list(broken.parameters())
    with pytest.raises(UserError, match="train_root"):
        build_config({"task": "occupancy", "data": {"source": "occ3d"}})


def test_a_few_steps_of_the_fixed_loss_learn_the_occupied_voxels():
    task = make_task(data={"grid": [32, 32, 8]}, model={"width": 8})
    torch.manual_seed(0)
    model, crit = task.model(), task.criterion()
    b = batch(OccupancySpec(grid=(32, 32, 8), empty_fraction=0.0), n=4, split="train")
    opt = torch.optim.AdamW(model.parameters(), 1e-2)
    for _ in range(150):  # ~80 steps of the mean term pulling p from 0.5 down, then dice finds the objects
        out = task.forward(model, b)
        loss = crit(out, b)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = task.forward(model, b)
    num, den = task.metrics(out, b)["iou"]
    assert float(num / den) > 0.5
    view = task.monitor_view(out, b)
    assert view.pred.shape == (4, 32 * 32 * 8)
    mean_p, rate = float(view.pred.mean()), float(view.target.mean())
    assert 0.3 * rate < mean_p < 3 * rate  # from 0.5 at the start to about the occupancy rate


def test_monitor_view_and_metrics():
    task = make_task()
    b = batch(n=2)
    t = b["occupancy"].float()
    logits = (2 * t - 1) * 5
    logits[0, :8, :8, 0] = 5  # a few false positives
    out = {"logits": logits}
    view = task.monitor_view(out, b)
    assert view.pred.shape == (2, 64 * 64 * 16) and torch.equal(view.target, t.flatten(1))
    probs, target = view.rates["occupancy"]
    assert probs.shape == t.shape
    m = {k: float(n / d) for k, (n, d) in task.metrics(out, b).items()}
    fp = float(((logits > 0) & (t == 0)).sum())
    assert fp > 0 and m["recall"] == 1.0 and m["precision"] == pytest.approx(t.sum().item() / (t.sum().item() + fp))
    assert m["iou"] == pytest.approx(m["precision"])
    # the seed's grid: pred/target keep a fixed voxel subset, the rates keep every voxel
    seed = make_task(data={"grid": [200, 200, 121]})
    occ = torch.zeros(1, 200, 200, 121, dtype=torch.uint8)
    v = seed.monitor_view({"logits": torch.zeros(1, 200, 200, 121)}, {"occupancy": occ})
    assert v.pred.shape[1] <= 1 << 18 and v.rates["occupancy"][0].numel() == 200 * 200 * 121


# ---------------------------------------------------------------- overlay

def test_overlay_colours_true_positives_false_positives_and_misses(tmp_path):
    task = make_task()
    b = batch(n=2)
    t = b["occupancy"].float()
    i = 0 if t[0].sum() > 0 else 1
    logits = (2 * t - 1) * 5
    xs, ys, _ = torch.nonzero(t[i], as_tuple=True)
    miss = (xs == xs[0]) & (ys == ys[0])
    logits[i, xs[0], ys[0], :] = -5  # one occupied column missed entirely
    logits[i, 60:63, 60:63, 2] = 5  # a false-positive blob (empty in GT, checked below)
    assert t[i, 60:63, 60:63, 2].sum() == 0
    img = task.draw(b, {"logits": logits}, i)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    cv2.imwrite(str(tmp_path / "overlay.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert (tmp_path / "overlay.png").stat().st_size > 1000
    # the error panel is the 4th of 4 equal panels; pick pixel centres of known columns
    w = (img.shape[1] - 3 * 4) // 4
    scale = w // 64
    x0 = 3 * (w + 4)

    def err_pixel(x, y):
        return tuple(int(c) for c in img[y * scale + scale // 2, x0 + x * scale + scale // 2])

    assert err_pixel(61, 61) == viz.RED  # predicted, empty in GT
    assert err_pixel(int(xs[0]), int(ys[0])) == viz.GREEN  # missed
    hit = (~miss).nonzero()[0, 0]
    assert err_pixel(int(xs[hit]), int(ys[hit])) == viz.YELLOW  # correctly occupied
    # GT panel green, prediction panel red at a hit column
    gx, gy = int(xs[hit]) * scale + scale // 2, int(ys[hit]) * scale + scale // 2
    g = img[gy, (w + 4) + gx]
    r = img[gy, 2 * (w + 4) + gx]
    assert g[1] > 100 and g[0] == 0 and r[0] > 100 and r[1] < 60
    tiles = viz.grid([task.draw(b, {"logits": logits}, k) for k in range(2)])
    assert tiles.shape[0] > img.shape[0]


# ---------------------------------------------------------------- Occ3D files

def test_occ3d_round_trip_from_synthetic_export(tmp_path):
    src = OccupancyDataset(SMALL, "val", 5)
    paths = export_synthetic(src, tmp_path / "occ3d", scenes=2)
    assert len(paths) == 5 and all(p.name == "labels.npz" for p in paths)
    ds = Occ3DDataset(tmp_path / "occ3d", "val", SMALL)
    assert len(ds) == 5
    for i in range(5):
        assert torch.equal(ds[i]["occupancy"], src[i]["occupancy"])
        assert torch.equal(ds[i]["bev"], src[i]["bev"])  # same sensor model, same (seed, split, index)
    assert ds.statistics()["occupancy_rate"] == pytest.approx(src.statistics(5)["occupancy_rate"])


def test_occ3d_free_class_and_camera_mask(tmp_path):
    sem = np.full((8, 8, 4), 17, np.uint8)
    sem[2:4, 2:4, :2] = 4  # 8 voxels of class 4
    sem[6, 6, 0] = 0  # one voxel of class 0 (an object class in Occ3D-nuScenes)
    mask = np.ones_like(sem)
    mask[2:4, 2:4, 1] = 0  # 4 of the class-4 voxels unseen by the cameras
    path = write_labels(tmp_path / "s" / "labels.npz", sem, mask)
    assert read_labels(path).sum() == 5
    assert read_labels(path, use_camera_mask=False).sum() == 9
    assert read_labels(path, free_class=0, use_camera_mask=False).sum() == 8 * 8 * 4 - 1


def test_occ3d_bad_files_are_user_errors_naming_the_file(tmp_path):
    good = np.full((8, 8, 4), 17, np.uint8)
    good[1, 1, 0] = 3
    write_labels(tmp_path / "ok" / "a" / "labels.npz", good)
    bad = tmp_path / "ok" / "b" / "labels.npz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"this is not a zip archive")
    with pytest.raises(UserError, match=r"b/labels\.npz.*not a readable \.npz"):
        Occ3DDataset(tmp_path / "ok", "train", OccupancySpec(grid=(8, 8, 4)))
    np.savez(bad, semantics=good)  # no mask_camera
    with pytest.raises(UserError, match=r"b/labels\.npz.*lacks key\(s\) \['mask_camera'\]"):
        Occ3DDataset(tmp_path / "ok", "train", OccupancySpec(grid=(8, 8, 4)))
    assert len(Occ3DDataset(tmp_path / "ok", "train", OccupancySpec(grid=(8, 8, 4)), use_camera_mask=False)) == 2
    with open(bad, "wb") as f:
        np.save(f, good)  # a plain .npy under the .npz name
    with pytest.raises(UserError, match=r"b/labels\.npz.*single array"):
        Occ3DDataset(tmp_path / "ok", "train", OccupancySpec(grid=(8, 8, 4)))
    bad.unlink()
    with pytest.raises(UserError, match=r"missing Occ3D labels file .*b/labels\.npz"):
        Occ3DDataset(tmp_path / "ok", "train", OccupancySpec(grid=(8, 8, 4)))
    write_labels(bad, good)
    with pytest.raises(UserError, match=r"grid \[8, 8, 4\] differs from data.grid \[8, 8, 5\]"):
        Occ3DDataset(tmp_path / "ok", "train", OccupancySpec(grid=(8, 8, 5)))
    with pytest.raises(UserError, match="does not exist"):
        Occ3DDataset(tmp_path / "nowhere", "train", OccupancySpec(grid=(8, 8, 4)))


def test_occ3d_empty_samples_warn_and_all_empty_is_fatal(tmp_path):
    full = np.full((8, 8, 4), 17, np.uint8)
    some = full.copy()
    some[0, 0, 0] = 1
    write_labels(tmp_path / "d" / "a" / "labels.npz", some)
    write_labels(tmp_path / "d" / "b" / "labels.npz", full)
    write_labels(tmp_path / "d" / "c" / "labels.npz", full)
    with pytest.warns(UserWarning, match=r"2 of 3 Occ3D samples .* have no occupied voxel"):
        ds = Occ3DDataset(tmp_path / "d", "train", OccupancySpec(grid=(8, 8, 4)))
    assert len(ds.empty) == 2 and ds.statistics()["empty_fraction"] == pytest.approx(2 / 3)
    write_labels(tmp_path / "d" / "a" / "labels.npz", full)
    with pytest.raises(UserError, match="every one of the 3 Occ3D samples"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Occ3DDataset(tmp_path / "d", "train", OccupancySpec(grid=(8, 8, 4)))


# ---------------------------------------------------------------- CLI + W&B

def test_cli_run_logs_occupancy_keys_to_wandb(out_dir):
    proc = run_cli("runner.train", "--config", "configs/occupancy.yaml", "--wandb", "--no-progress",
                   f"--out_dir={out_dir}", "--data.grid=[32, 32, 8]", "--data.train_size=24", "--data.val_size=8",
                   "--train.epochs=1", "--train.log_every=1", "--model.width=8", "--viz.n_samples=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = find_wandb_run(out_dir)
    rows = history(inspect_records(run))
    steps = [r for r in rows if "pred/occupancy_rate" in r]
    assert len(steps) == 3  # 24 samples / batch 8, one log per step
    for r in steps:
        assert 0.001 < float(r["target/occupancy_rate"]) < 0.03
        assert 0 <= float(r["pred/min"]) <= float(r["pred/mean"]) <= float(r["pred/max"]) <= 1
        for key in ("pred/occupancy_rate", "pred/occupancy_mean", "pred/occupancy_max", "pred/std_ratio",
                    "train/loss_focal", "train/loss_dice", "train/loss_mean", "train/weighted/loss_mean"):
            assert key in r, key
    epoch = [r for r in rows if "val/iou" in r]
    assert epoch and all(k in epoch[-1] for k in ("val/precision", "val/recall", "val/target/occupancy_rate"))
    summary = inspect_summary(run)["summary"]
    for key in ("baseline/iou", "baseline/loss", "baseline/extrude_iou"):
        assert key in summary, key
    overlay = sorted((Path(out_dir)).glob("*/media/val_overlays_epoch001.png"))
    assert overlay and cv2.imread(str(overlay[0])).shape[1] > 4 * 96


def test_train_entry_point_on_occ3d_files_and_a_corrupt_file(tmp_path, out_dir, capsys):
    """runner.train.main in-process (the subprocess path is covered above): trains from Occ3D files;
    a corrupt file is one error line naming it, exit status 2."""
    from runner.train import main

    spec = OccupancySpec(grid=(32, 32, 8))
    export_synthetic(OccupancyDataset(spec, "train", 8), tmp_path / "train")
    export_synthetic(OccupancyDataset(spec, "val", 4), tmp_path / "val")
    args = ["--config", "configs/occupancy.yaml", "--no-progress", f"--out_dir={out_dir}", "--data.source=occ3d",
            f"--data.train_root={tmp_path / 'train'}", f"--data.val_root={tmp_path / 'val'}",
            "--data.grid=[32, 32, 8]", "--train.epochs=1", "--train.batch_size=4", "--model.width=8",
            "--viz.n_samples=1", "--checkpoint.upload=false"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "8 train / 4 val samples" in out and "val/iou" in out
    corrupt = sorted((tmp_path / "val").rglob("labels.npz"))[1]
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("runner.train: error:") and str(corrupt) in err[0]
