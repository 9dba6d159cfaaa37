"""LR range test: the curve analysis on scripted curves, and the real CLI on a tiny model."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from conftest import find_wandb_run, inspect_summary, run_cli
from runner.lr_find import RangeTest, analyze, exp_lr, plot, smooth


def curve(lrs: np.ndarray) -> np.ndarray:
    """A typical range-test loss: flat, a sigmoid drop centred at 1e-3, then a blow-up past 1e-1."""
    x = np.log10(lrs)
    return 2.0 - 1.5 / (1.0 + np.exp(-4.0 * (x + 3.0))) + np.where(x > -1, 30.0 * (x + 1) ** 2, 0.0)


def test_schedule_is_exponential_from_start_to_end():
    f = exp_lr(1e-6, 1.0, 61)
    assert f(0) == pytest.approx(1e-6) and f(60) == pytest.approx(1.0) and f(30) == pytest.approx(1e-3)


def test_smoothing_is_bias_corrected():
    assert smooth([5.0, 5.0, 5.0]) == pytest.approx([5.0, 5.0, 5.0])


def test_suggestion_is_the_steepest_descent_and_the_range_ends_where_loss_passes_its_start():
    lrs = np.logspace(-6, 0, 121)
    loss = curve(lrs)
    res = analyze(RangeTest(lrs=lrs.tolist(), losses=loss.tolist(), smoothed=loss.tolist(), start_lr=1e-6,
                            end_lr=1.0, stop_reason="test"))
    assert res.suggested_lr == pytest.approx(1e-3, rel=0.15)
    assert res.min_loss_lr == pytest.approx(1e-1, rel=0.15)
    # loss ends up back above its start (2.0) just past 1e-1: 0.5 + 30 (x+1)^2 > 2  <=>  x > -0.776
    assert 1e-1 < res.stable_max_lr <= 10 ** -0.776 * 1.01
    # 10% of the drop is made where the sigmoid reaches 0.1: x = -3 - ln(9)/4
    assert res.stable_min_lr == pytest.approx(10 ** (-3 - math.log(9) / 4), rel=0.15)
    img = plot(res, "test")
    assert img.dtype == np.uint8 and img.shape[2] == 3


def test_no_range_when_the_loss_never_falls():
    lrs = np.logspace(-6, 0, 50)
    loss = np.linspace(1.0, 3.0, 50)
    res = analyze(RangeTest(lrs=lrs.tolist(), losses=loss.tolist(), smoothed=loss.tolist(), start_lr=1e-6,
                            end_lr=1.0, stop_reason="test"))
    assert res.stable_min_lr is None and res.stable_max_lr is None


def test_lr_find_on_a_tiny_model(tmp_path):
    start, end = 1e-5, 1.0
    res = run_cli("runner.lr_find", "--config", "configs/sequence_demo.yaml", "--wandb", "--no-progress",
                  f"--out_dir={tmp_path}", "--device=cpu", "--data.image_size=32", "--model.width=4",
                  "--train.batch_size=16", "--steps", "40", "--start-lr", str(start), "--end-lr", str(end),
                  env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir = next(tmp_path.glob("lr_find-sequence-*"))
    result = json.loads((run_dir / "lr_find.json").read_text())
    lr = result["suggested_lr"]
    assert lr is not None and math.isfinite(lr) and start <= lr <= end
    assert len(result["lrs"]) == len(result["losses"]) >= 5
    assert f"suggested lr : {lr:.3g}" in res.stdout
    png = cv2.imread(str(run_dir / "lr_find.png"))
    assert png is not None and png.shape[0] > 200
    summary = inspect_summary(find_wandb_run(run_dir))
    assert summary["summary"]["lr_find/suggested_lr"] == pytest.approx(lr)
    assert summary["summary"]["lr_find/loss"] == pytest.approx(result["losses"][-1], rel=1e-6)
    assert "lr_find" in summary["tags"]


def test_lr_find_rejects_a_bad_range(tmp_path, capsys):
    from runner.lr_find import main

    with pytest.raises(SystemExit) as exit_:
        main(["--config", "configs/sequence_demo.yaml", "--start-lr", "1", "--end-lr", "0.1", f"--out_dir={tmp_path}"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == "runner.lr_find: error: need 0 < --start-lr < --end-lr, got 1 and 0.1"
    assert not any(tmp_path.iterdir())
