"""End to end through the real CLI and a real offline W&B run, read back with `wandb leet inspect`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from runner import checkpoint as ckpt
from tests.conftest import find_wandb_run, history, inspect_records, inspect_summary, run_cli

TINY = ["--config", "configs/sequence_demo.yaml", "--wandb", "--no-progress", "--train.epochs=2",
        "--data.train_size=256", "--data.val_size=64", "--train.log_every=4", "--viz.n_samples=4"]

STEP_KEYS = {"train/loss", "train/loss_spatial", "train/loss_done", "train/mse", "pred/mean", "pred/std",
             "pred/min", "pred/max", "gt/std", "pred/std_ratio", "pred/done_mean", "grad/point_head",
             "grad/done_head", "grad/backbone", "lr", "train/data_time", "train/step_time"}
EPOCH_KEYS = {"epoch/train_loss", "epoch/val_loss", "epoch/lr", "epoch/time_seconds", "val/loss_spatial",
              "val/loss_done", "val/pixel_error", "val/done_recall", "val/done_precision"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    p = run_cli("runner.train", *TINY, f"--out_dir={out}", "--wandb-tags", "e2e", "tiny")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    run_dir = next(out.iterdir())
    return p, run_dir, find_wandb_run(run_dir)


def test_history_has_every_step_and_epoch_key(tiny_run):
    _, _, wdir = tiny_run
    rows = history(inspect_records(wdir))
    keys = set().union(*rows)
    assert STEP_KEYS <= keys, STEP_KEYS - keys
    assert EPOCH_KEYS <= keys, EPOCH_KEYS - keys
    steps = [r["_step"] for r in rows]
    assert steps == sorted(steps) and steps[-1] == 2 * 256 // 32  # one row per log step, monotonic


def test_overlay_images_are_logged_each_epoch_as_one_grid(tiny_run):
    _, run_dir, wdir = tiny_run
    rows = [r for r in history(inspect_records(wdir)) if r.get("val/overlays._type") == "image-file"]
    assert len(rows) == 2  # one grid image per epoch, not one file per sample
    pngs = sorted((run_dir / "media").glob("val_overlays_epoch*.png"))
    assert [p.name for p in pngs] == ["val_overlays_epoch001.png", "val_overlays_epoch002.png"]
    logged = list(Path(wdir, "files", "media", "images").rglob("*.png"))
    assert len(logged) == 2


def test_checkpoint_artifact_aliases_and_safe_reload(tiny_run):
    _, run_dir, wdir = tiny_run
    arts = [r["artifact"] for r in inspect_records(wdir) if r.get("type") == "artifact"]
    assert arts, "no artifact records"
    run_id = run_dir.name.rsplit("-", 1)[1]
    assert {a["name"] for a in arts} == {f"model-{run_id}"} and {a["type"] for a in arts} == {"model"}
    aliases = [set(a["aliases"]) for a in arts]
    assert any({"best", "epoch-1"} <= s for s in aliases) or any({"best", "epoch-2"} <= s for s in aliases)
    assert any("epoch-2" in s and "latest" in s for s in aliases)
    meta = json.loads(arts[-1]["metadata"])
    assert meta["epoch"] == 2 and "val_loss" in meta and meta["config"]["task"] == "sequence"
    state = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    for key in ("model", "optimizer", "scaler", "rng", "step", "epoch", "best_metric", "config", "run_id"):
        assert key in state, key
    assert state["run_id"] == run_id
    assert ckpt.load(run_dir / "checkpoints" / "latest.pt")["epoch"] == 2


def test_summary_holds_best_val_loss_config_and_tags(tiny_run):
    _, run_dir, wdir = tiny_run
    s = inspect_summary(wdir)
    text = json.dumps(s)
    assert '"model_parameters"' in text and '"threshold"' in text and '"baseline/pixel_error"' in text
    hist = history(inspect_records(wdir))
    val_losses = [r["epoch/val_loss"] for r in hist if "epoch/val_loss" in r]
    # define_metric(summary="min") keeps the best, not the last, value
    assert f'{min(val_losses)}'[:8] in text
    assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.jsonl").is_file()
    assert 0.0 <= s["summary"]["perf/data_share"] <= 1.0 and s["summary"]["perf/num_workers"] == 1  # one worker


def test_terminal_report_says_where_the_run_is(tiny_run):
    p, run_dir, wdir = tiny_run
    assert f"run directory : {run_dir}" in p.stdout
    assert f"wandb sync {wdir}" in p.stdout and "wandb leet" in p.stdout
    assert "val/pixel_error" in p.stdout and "mean-target baseline" in p.stdout
