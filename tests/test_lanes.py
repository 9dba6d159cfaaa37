"""lanes task (seeds 000, 001): data statistics, loss math, metrics, overlay, TuSimple files, CLI + W&B."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import find_wandb_run, history, inspect_records, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import default_collate

from runner import viz
from runner.config import build_config
from runner.data.formats.tusimple import TuSimpleDataset, export_synthetic, read_labels
from runner.data.synthetic.lanes import LaneDataset, LaneSpec
from runner.errors import UserError
from runner.health.stats import CollapseStats
from runner.losses.bezier import BezierLaneLoss, evaluate, fit, sample, split_left
from runner.losses.seed_broken_lanes import SafeUncertaintyBezierLoss, UncertaintyBezierLoss
from runner.tasks import build_task
from runner.train import make_optimizer

SMALL = {"image_height": 36, "image_width": 64, "train_size": 64, "val_size": 16}


def make_task(data=None, loss=None, **extra):
    return build_task(build_config({"task": "lanes", "data": {**SMALL, **(data or {})}, "loss": loss or {}, **extra}))


def batch_of(ds, n):
    return default_collate([ds[i] for i in range(n)])


# ---------------------------------------------------------------- synthetic data

def test_synthetic_statistics_follow_the_spec():
    spec = LaneSpec()
    ds = LaneDataset(spec, "train", 600)
    lanes = [ds.lanes(i) for i in range(len(ds))]
    pts = np.stack([p for p, _ in lanes])
    ex = np.stack([e for _, e in lanes])
    # existence: lane_prob per slot, minus the few lanes dropped for being too short
    assert np.all(np.abs(ex.mean(0) - spec.lane_prob) < 0.07), ex.mean(0)
    assert ex.sum(1).min() >= spec.min_lanes
    live = pts[ex]  # [N, 6, 2]
    assert live.min() >= -1e-6 and live.max() <= 1 + 1e-6
    # P0 is the far end: just below the horizon, above P5
    assert np.all(live[:, 0, 1] >= spec.horizon[0]) and np.all(live[:, 0, 1] <= spec.horizon[1] + spec.gap + 1e-6)
    assert np.all(live[:, 0, 1] < live[:, -1, 1])
    # slots are ordered left to right at the near end; some lanes leave through a side, as in the seed
    for p, e in lanes:
        xs = p[e][:, -1, 0]
        assert np.all(np.diff(xs) > 0), xs
    p5 = live[:, -1]
    side = (p5[:, 0] < 0.0021) | (p5[:, 0] > 0.9979)  # cut where x leaves [0.002, 0.998]
    assert 0.03 < side.mean() < 0.3 and np.all(p5[~side, 1] > 0.999)
    # configurable: every slot present, another image size
    full = LaneDataset(LaneSpec(lane_prob=1.0, image_height=40, image_width=70, lane_width=(0.2, 0.24)), "val", 50)
    assert all(full.lanes(i)[1].all() for i in range(50))
    assert full[0]["image"].shape == (3, 40, 70)


def test_synthetic_is_deterministic_and_labels_match_pixels():
    spec = LaneSpec(dashed_prob=0.0, shadow_prob=0.0)
    a, b = LaneDataset(spec, "train", 10), LaneDataset(spec, "train", 10)
    x, y = a[3], b[3]
    assert torch.equal(x["image"], y["image"]) and torch.equal(x["points"], y["points"])
    assert not torch.equal(a[4]["points"], x["points"])
    assert not torch.equal(LaneDataset(spec, "val", 10)[3]["points"], x["points"])
    item = a[3]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 72, 128)
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    # the curve of each label runs over bright marking pixels; 4 px to the side is road
    gray = item["image"].mean(0).numpy()
    on, off = [], []
    for j in np.nonzero(item["exist"].numpy())[0]:
        p = evaluate(item["points"][j].numpy(), np.linspace(0.3, 0.95, 20)) * [128, 72]
        on += [gray[int(y), int(x)] for x, y in p]
        off += [gray[int(y), min(127, int(x) + 4)] for x, y in p if x + 4 < 127]
    assert np.mean(on) > np.mean(off) + 0.2, (np.mean(on), np.mean(off))


def test_bezier_fit_and_split_are_exact():
    ctrl = np.array([[0.5, 0.4], [0.45, 0.5], [0.42, 0.6], [0.35, 0.7], [0.3, 0.85], [0.2, 1.0]])
    t = np.linspace(0, 1, 40)
    assert np.allclose(fit(evaluate(ctrl, t), t=t), ctrl)  # exact with the curve's own parameter
    back = fit(evaluate(ctrl, t))  # chord length: another parametrization of (nearly) the same curve
    dense = evaluate(ctrl, np.linspace(0, 1, 4001))
    gap = np.linalg.norm(evaluate(back, t)[:, None] - dense[None], axis=-1).min(1)
    assert gap.max() < 2e-3
    with pytest.raises(ValueError):
        fit(evaluate(ctrl, t[:5]))
    left = split_left(ctrl, 0.6)
    assert np.allclose(evaluate(left, t), evaluate(ctrl, 0.6 * t))
    torch_pts = sample(torch.tensor(ctrl), 40)
    assert np.allclose(torch_pts.numpy(), evaluate(ctrl, t))


# ---------------------------------------------------------------- losses

def random_io(seed: int, scale: float):
    g = torch.Generator().manual_seed(seed)
    b = 1 + seed % 5
    outputs = {"points": torch.randn(b, 4, 6, 2, generator=g) * scale,
               "exist_logits": torch.randn(b, 4, generator=g) * scale * 10}
    batch = {"points": torch.rand(b, 4, 6, 2, generator=g), "exist": (torch.rand(b, 4, generator=g) < 0.6).float()}
    return outputs, batch


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.floats(1e-4, 1e3))
def test_fixed_loss_is_never_negative(seed, scale):
    crit = BezierLaneLoss()
    out = crit(*random_io(seed, scale))
    assert float(out["loss"]) >= 0
    for k in ("loss_reg", "loss_exist", "loss_curv"):
        assert float(out[k]) >= 0


def test_fixed_loss_has_no_parameters_and_checks_weights():
    crit = BezierLaneLoss(w_reg=1.0, w_exist=1.0, w_curv=0.1)
    assert list(crit.parameters()) == []
    with pytest.raises(ValueError):
        BezierLaneLoss(w_curv=-1.0)
    # a perfect prediction of straight, evenly parametrized lanes with confident existence: ~0
    line = torch.stack([torch.linspace(0.4, 0.1, 6), torch.linspace(0.4, 1.0, 6)], -1)
    pts = line.expand(2, 4, 6, 2).clone()
    exist = torch.tensor([[1.0, 1, 0, 1], [0, 1, 1, 1]])
    out = crit({"points": pts, "exist_logits": (exist * 2 - 1) * 30}, {"points": pts, "exist": exist})
    assert float(out["loss"]) < 1e-6
    # absent lanes carry no regression loss whatever is predicted there
    moved = pts.clone()
    moved[0, 2] += 5.0
    assert float(crit({"points": moved, "exist_logits": (exist * 2 - 1) * 30},
                      {"points": pts, "exist": exist})["loss_reg"]) == 0.0


def test_default_optimizer_has_no_loss_parameters_but_the_seed_loss_does(capsys):
    fixed = make_task()
    opt = make_optimizer(fixed.model(), fixed.cfg.optim, fixed.criterion())
    assert [g["name"] for g in opt.param_groups] == ["decay", "no_decay"]
    broken = make_task(loss={"kind": "uncertainty"})
    crit = broken.criterion()
    opt = make_optimizer(broken.model(), broken.cfg.optim, crit)
    loss_group = [g for g in opt.param_groups if g["name"] == "loss"][0]
    assert {id(p) for p in loss_group["params"]} == {id(p) for p in crit.parameters()}
    assert "WARNING: 3 learnable loss parameters" in capsys.readouterr().out


def test_uncertainty_loss_goes_negative_at_its_optimum():
    crit = UncertaintyBezierLoss(1.0, 1.0, 1.0)
    outputs, batch = random_io(3, 0.05)
    outputs["points"] = batch["points"] + 0.02  # a good prediction: small terms
    terms = {k: float(v) for k, v in crit(outputs, batch).items() if k in crit.TERMS}
    with torch.no_grad():  # set each s to its optimum log L
        for k, v in terms.items():
            crit.raw(k.removeprefix("loss_")).fill_(math.log(v))
    out = crit(outputs, batch)
    expected = sum(0.5 * (1 + math.log(v)) for v in terms.values())
    assert float(out["loss"].detach()) == pytest.approx(expected, rel=1e-4)
    assert float(out["loss"].detach()) < 0  # the seed's symptom: every term below 1/e
    out["loss"].backward()
    for p in crit.parameters():  # and nothing pulls s back: it is a stationary point
        assert abs(float(p.grad)) < 1e-5
    assert float(out["loss/sigma_reg"]) == pytest.approx(math.sqrt(terms["loss_reg"]), rel=1e-4)


def test_safe_uncertainty_loss_is_bounded_and_never_negative():
    crit = SafeUncertaintyBezierLoss(1.0, 1.0, 0.1, log_var_min=-2.0, log_var_max=2.0)
    outputs, batch = random_io(5, 0.05)
    out = crit(outputs, batch)
    for name in ("reg", "exist", "curv"):  # s starts at 0: sigma 1
        assert float(out[f"loss/sigma_{name}"]) == pytest.approx(1.0, abs=1e-5)
    for raw in (-1e3, -5.0, 0.0, 5.0, 1e3):
        with torch.no_grad():
            for p in crit.parameters():
                p.fill_(raw)
        for seed in range(5):
            o = crit(*random_io(seed, 1e-4))
            assert float(o["loss"].detach()) >= 0
            for name in ("reg", "exist", "curv"):
                s = 2 * math.log(float(o[f"loss/sigma_{name}"]))
                assert -2.0 - 1e-4 <= s <= 2.0 + 1e-4
    # optimizing the weights against tiny losses (where the seed's loss dives) stays >= 0
    crit = SafeUncertaintyBezierLoss(1.0, 1.0, 0.1)
    opt = torch.optim.Adam(crit.parameters(), lr=0.1)
    outputs["points"] = batch["points"] + 1e-4
    outputs["exist_logits"] = (batch["exist"] * 2 - 1) * 20
    for _ in range(300):
        o = crit(outputs, batch)
        opt.zero_grad()
        o["loss"].backward()
        opt.step()
        assert float(o["loss"].detach()) >= 0
    assert 2 * math.log(float(o["loss/sigma_reg"])) == pytest.approx(-2.0, abs=0.05)


# ---------------------------------------------------------------- metrics, monitor view, overlay

def test_metrics_are_in_pixels():
    task = make_task()
    batch = batch_of(task.dataset("val"), 6)
    shifted = batch["points"].clone()
    shifted[..., 0] += 3.0 / 64  # 3 px right at width 64
    logits = (batch["exist"] * 2 - 1) * 10
    logits[0, batch["exist"][0].argmax()] = -10  # one missed lane
    m = {k: float(n / d) for k, (n, d) in task.metrics({"points": shifted, "exist_logits": logits}, batch).items()}
    assert m["cp_error"] == pytest.approx(3.0, abs=1e-4)
    assert m["point_error"] == pytest.approx(3.0, abs=1e-4)
    assert m["exist_precision"] == 1.0
    assert m["exist_recall"] == pytest.approx(1 - 1 / float(batch["exist"].sum()))


def test_monitor_view_tells_constant_predictions_from_real_ones():
    task = make_task()
    batch = batch_of(task.dataset("val"), 16)
    mean, _ = task.reference
    logits = (batch["exist"] * 2 - 1) * 10

    def ratio(points):
        stats = CollapseStats()
        stats.update(task.monitor_view({"points": points, "exist_logits": logits}, batch))
        return float(stats.tensors()["pred/std_ratio"])

    assert ratio(batch["points"]) == pytest.approx(1.0, abs=1e-5)
    assert ratio(mean.expand(16, -1, -1, -1) + 0.05) < 0.01  # one set of lanes for every image (float32 floor)
    noisy = batch["points"] + 0.3 * torch.randn(16, 4, 6, 2, generator=torch.Generator().manual_seed(0))
    assert ratio(noisy) > 1.0
    view = task.monitor_view({"points": batch["points"], "exist_logits": logits}, batch)
    assert view.pred.shape == (16, 48) and set(view.rates) == {"exist"}


def test_predict_spread_line_calls_identical_predictions_a_collapse():
    from runner.predict import spread_line

    target = torch.rand(8, 48, generator=torch.Generator().manual_seed(1))
    same = spread_line(target[:1].expand(8, -1) + 1e-4 * torch.randn(8, 48), target)
    assert "nearly IDENTICAL" in same and "collapse" in same
    assert "about as much as the truth" in spread_line(target + 0.01, target)


def test_overlay_renders_truth_green_and_prediction_red(tmp_path):
    task = make_task()
    batch = batch_of(task.dataset("val"), 2)
    outputs = {"points": batch["points"] + 0.03, "exist_logits": (batch["exist"] * 2 - 1) * 5}
    img = task.draw(batch, outputs, 1)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert (img == viz.GREEN).all(-1).sum() > 50
    assert (img == viz.RED).all(-1).sum() > 50
    # nothing predicted present: no red curves
    none = task.draw(batch, {"points": outputs["points"], "exist_logits": torch.full((2, 4), -5.0)}, 1)
    assert (none == viz.RED).all(-1).sum() < (img == viz.RED).all(-1).sum() / 4


def test_baseline_is_the_mean_predictor():
    task = make_task(data={"train_size": 400, "val_size": 100})
    base = task.baseline()
    mean, rate = task.reference
    assert base["point_error"] > 2.0 and base["exist_recall"] == 1.0
    val = task.dataset("val")
    p = torch.tensor(np.stack([val.lanes(i)[0] for i in range(100)]), dtype=torch.float32)
    e = torch.tensor(np.stack([val.lanes(i)[1] for i in range(100)]), dtype=torch.float32)
    err = (sample(mean.expand(100, -1, -1, -1), 32) - sample(p, 32)) * torch.tensor([64.0, 36.0])
    manual = float((err.norm(dim=-1).mean(-1) * e).sum() / e.sum())
    assert base["point_error"] == pytest.approx(manual, rel=1e-5)


# ---------------------------------------------------------------- TuSimple files

@pytest.fixture(scope="module")
def tusimple_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tusimple")
    spec = LaneSpec(image_height=72, image_width=128, lane_prob=0.9, seed=7)
    export_synthetic(LaneDataset(spec, "train", 12), root, "label_data_0313.json")
    export_synthetic(LaneDataset(spec, "val", 6), root, "test_label.json")
    return root, spec


def test_tusimple_loader_fits_the_written_lanes(tusimple_root):
    root, spec = tusimple_root
    first = json.loads((root / "label_data_0313.json").read_text().splitlines()[0])
    assert set(first) == {"lanes", "h_samples", "raw_file"} and -2 in first["lanes"][0]
    labels = read_labels(root, ["label_data_*.json"])
    synth = LaneDataset(spec, "train", 12)
    ds = TuSimpleDataset(labels, (36, 64))
    assert len(ds) == 12
    errs = []
    for i, lab in enumerate(labels):
        gt, ex = synth.lanes(i)
        assert np.array_equal(lab.exist, ex) or not (ex[1] and ex[2])  # slots are ego-relative
        for j in np.nonzero(ex & lab.exist)[0]:
            # the fit starts at the first labelled row, up to h_step px below P0: compare shapes
            fitted = evaluate(lab.points[j], np.linspace(0, 1, 30)) * [128, 72]
            dense = evaluate(gt[j], np.linspace(0, 1, 3000)) * [128, 72]
            errs.append(np.linalg.norm(fitted[:, None] - dense[None], axis=-1).min(1).max())
    assert max(errs) < 1.0 and np.mean(errs) < 0.5, (max(errs), np.mean(errs))
    item = ds[0]
    assert item["image"].shape == (3, 36, 64) and item["points"].shape == (4, 6, 2)
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0


def _write_bad(root, lines):
    bad = root / "bad_label.json"
    good = (root / "test_label.json").read_text().splitlines()
    bad.write_text("\n".join(good[:2] + lines + good[2:]) + "\n")
    return bad


def test_tusimple_bad_lines_name_file_and_line(tusimple_root, capsys):
    root, _ = tusimple_root
    good = json.loads((root / "test_label.json").read_text().splitlines()[0])
    short = {**good, "lanes": [[-2] * (len(good["h_samples"]) - 3) + [10, 12, 14]]}
    ragged = {**good, "lanes": [good["lanes"][0][:-1]]}
    missing = {**good, "raw_file": "clips/val/nope.png"}
    bad = _write_bad(root, ["{not json", json.dumps(short), json.dumps(ragged), json.dumps(missing)])
    with pytest.raises(UserError, match=r"bad_label\.json:3: not valid JSON"):
        read_labels(root, ["bad_label.json"], on_bad="error")
    labels = read_labels(root, ["bad_label.json"], on_bad="skip")
    assert len(labels) == 7  # the short lane's line stays (a lane too short to fit is data)
    err = capsys.readouterr().err
    assert f"{bad}:4" not in err
    assert "left out 1 lane(s) with fewer than 6 labelled points (or on one image row) in 1 line(s)" in err
    assert [lab.where for lab in labels if lab.short] == [f"{bad}:4"]
    assert f"{bad}:5: lane 0 has {len(good['h_samples']) - 1} values but h_samples has" in err
    assert f"{bad}:6: image 'clips/val/nope.png' not found" in err
    assert "skipped 3 bad label line(s) of 10" in err


def test_tusimple_short_lane_is_dropped_and_the_line_kept(tusimple_root, capsys):
    """TuSimple's real test_label.json has lines with one lane of <= 5 labelled points: the default
    on_bad_label=error keeps training, drops that lane, keeps the line's good lanes, and says so."""
    root, _ = tusimple_root
    good = json.loads((root / "test_label.json").read_text().splitlines()[0])
    n = len(good["h_samples"])
    short = {**good, "lanes": good["lanes"] + [[-2] * (n - 5) + [10, 12, 14, 16, 18]]}
    _write_bad(root, [json.dumps(short)])
    full = read_labels(root, ["test_label.json"])
    labels = read_labels(root, ["bad_label.json"], on_bad="error")
    assert len(labels) == len(full) + 1
    kept = next(lab for lab in labels if lab.short)
    assert kept.short == 1 and kept.exist.sum() == min(len(good["lanes"]), 4)
    np.testing.assert_allclose(kept.points, full[0].points)
    assert "left out 1 lane(s) with fewer than 6 labelled points" in capsys.readouterr().err


def test_tusimple_through_the_task_and_cli_error(tusimple_root, tmp_path):
    root, _ = tusimple_root
    task = make_task(data={"source": "tusimple", "root": str(root)})
    batch = batch_of(task.dataset("train"), 4)
    out = task.criterion()(task.model()(batch["image"]), batch)
    assert float(out["loss"].detach()) > 0
    assert task.baseline()["point_error"] > 0
    bad = _write_bad(root, ['{"lanes": [], "h_samples": []}'])
    proc = run_cli("runner.train", "--config", "configs/lanes.yaml", "--data.source=tusimple",
                   f"--data.root={root}", f"--data.train_labels=['{bad.name}']", f"--out_dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"runner.train: error: {bad}:3: missing key(s) ['raw_file']")


# ---------------------------------------------------------------- the CLI with W&B, and predict

TINY = ["--data.image_height=36", "--data.image_width=64", "--data.train_size=96", "--data.val_size=32",
        "--train.epochs=2", "--train.batch_size=16", "--train.log_every=2", "--viz.n_samples=2",
        "--model.width=8", "--model.hidden=32", "--optim.warmup_steps=2"]


def test_cli_run_logs_lanes_keys_to_wandb_and_predict_prints_lanes(out_dir):
    proc = run_cli("runner.train", "--config", "configs/lanes.yaml", "--wandb", "--no-progress",
                   f"--out_dir={out_dir}", *TINY, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(no loss parameters)" in proc.stdout
    rows = history(inspect_records(find_wandb_run(out_dir)))
    keys = set().union(*rows)
    for k in ("train/loss", "train/loss_reg", "train/loss_exist", "train/loss_curv", "pred/std_ratio",
              "pred/exist_rate", "target/exist_rate", "val/point_error", "val/cp_error", "val/exist_precision",
              "val/exist_recall", "val/pred/std_ratio", "epoch/val_loss"):
        assert k in keys, k
    assert not any(k.startswith("loss/sigma") for k in keys)
    assert all(r["train/loss"] >= 0 for r in rows if "train/loss" in r)
    assert list((next(out_dir.iterdir()) / "media").glob("val_overlays_epoch002.png"))
    ckpt = next(out_dir.glob("*/checkpoints/latest.pt"))
    pred = run_cli("runner.predict", "--checkpoint", str(ckpt), "--n", "4")
    assert pred.returncode == 0, pred.stderr
    lines = pred.stdout.splitlines()
    assert sum(line.startswith("Sample ") for line in lines) == 4
    assert sum("Lane 1: pred P0=(" in line and "-> P5=(" in line for line in lines) == 4
    assert lines[-2].startswith("spread across 4 samples: pred std") and "pred/std_ratio" in lines[-2]
    assert lines[-1].startswith("exist: predicted probability std across samples")


def test_cli_seed_broken_config_logs_sigmas(out_dir):
    proc = run_cli("runner.train", "--config", "configs/lanes_seed_broken.yaml", "--wandb", "--no-progress",
                   f"--out_dir={out_dir}", *TINY, "--viz.n_samples=0", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING: 3 learnable loss parameters (log_var_reg, log_var_exist, log_var_curv)" in proc.stdout
    rows = history(inspect_records(find_wandb_run(out_dir)))
    sig = [r["loss/sigma_reg"] for r in rows if "loss/sigma_reg" in r]
    assert sig and all(s > 0 for s in sig) and len({round(s, 6) for s in sig}) > 1  # learned, not constant
    assert {"loss/sigma_exist", "loss/sigma_curv", "train/weight/reg"} <= set().union(*rows)
