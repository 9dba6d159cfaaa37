"""The engine's contracts: callbacks in any order, skipped steps that leave BatchNorm alone and do
not fail a run, every step reaching a log interval, a mid-epoch stop that keeps its checkpoint."""
from __future__ import annotations

import json
import math
import random

import torch
from torch import nn

from runner import checkpoint as ckpt
from runner import train as train_mod
from runner.build import make_loaders, make_optimizer
from runner.callbacks import Callback, Checkpointing, fixed_batch
from runner.config import load_config
from runner.data import spread_indices
from runner.engine import FixedBatch, Trainer
from runner.schedules import make_lr_fn
from runner.tasks import build_task
from tests.conftest import ROOT, run_cli

SMALL = {"data.image_size": 32, "data.radius": 2, "model.width": 4, "data.train_size": 80, "data.val_size": 16,
         "train.batch_size": 8}


# ---------------------------------------------------------------- non-finite steps and BatchNorm

class TinyBNTask:
    """The smallest task the Trainer accepts: y = f(x) through a BatchNorm layer."""

    def forward(self, model, batch):
        return {"y": model(batch["x"])}

    def monitor_view(self, outputs, batch):
        from runner.tasks.base import MonitorView
        return MonitorView(pred=outputs["y"], target=batch["y"])


def test_a_skipped_step_leaves_batchnorm_statistics_and_weights_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    crit = lambda out, batch: {"loss": ((out["y"] - batch["y"]) ** 2).mean()}  # noqa: E731
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    trainer = Trainer(task=TinyBNTask(), model=model, criterion=crit, optimizer=opt, lr_fn=lambda s: 1e-2,
                      train_loader=[], val_loader=[], device=torch.device("cpu"), epochs=1, progress=False)
    good = {"x": torch.randn(8, 3), "y": torch.randn(8, 1)}
    model.train()
    trainer.train_step(good)  # a normal step moves the statistics (the check below can fail)
    bn = model[1]
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    bad = {"x": good["x"].clone(), "y": good["y"]}
    bad["x"][0, 0] = float("nan")
    trainer.train_step(bad)
    after = bn.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    for k, v in weights.items():
        assert torch.equal(model.state_dict()[k], v), k
    values = {k: v.clone() for k, v in trainer.guard.tensors().items()}
    values = {k: float(v) for k, v in values.items()}
    assert trainer.guard.check(values, 2) == 1
    assert values["health/nonfinite_steps"] == 1.0 and values["health/nonfinite_streak"] == 1.0
    trainer.train_step(good)
    assert not torch.equal(bn.running_mean, before["running_mean"])  # statistics move again after it


def test_one_nonfinite_batch_per_epoch_does_not_fail_the_run_and_it_resumes_without_force(tmp_path):
    """A real run with one NaN training sample (one non-finite batch each epoch): exit 0, the
    checkpoint is not marked failed, and --resume works without --force."""
    args = ["--config", "configs/sequence_demo.yaml", "--no-progress", "--data.train_size=64",
            "--data.val_size=16", "--data.image_size=32", "--data.radius=2", "--model.width=4",
            "--train.batch_size=16", "--train.log_every=2", "--viz.n_samples=0", "--early_stop.enabled=False",
            f"--out_dir={tmp_path}"]
    p = run_cli("tests.inject_nonfinite", *args, "--train.epochs=2")
    assert p.returncode == 0, p.stderr[-2000:]
    run = next(tmp_path.iterdir())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    skipped = [r["health/nonfinite_steps"] for r in rows if "health/nonfinite_steps" in r]
    assert skipped[-1] == 2.0  # one per epoch, counted
    assert max(r["health/nonfinite_streak"] for r in rows if "health/nonfinite_streak" in r) == 1.0
    # the explosion rule's step-loss median is logged at every interval, the NaN step's one included (nanmedian)
    medians = [r.get("health/loss_median") for r in rows if "health/nonfinite_steps" in r]
    assert all(m is not None and math.isfinite(m) for m in medians), medians
    assert len(medians) > len([r for r in rows if "health/nonfinite_steps" in r and "train/loss" in r])
    latest = ckpt.load(run / "checkpoints" / "latest.pt")
    assert latest["health"]["status"] != "failed", latest["health"]
    assert latest["run_state"]["nonfinite_steps"] == 2
    p = run_cli("runner.train", *args, "--train.epochs=3", "--resume", str(run / "checkpoints" / "latest.pt"))
    assert p.returncode == 0, p.stderr[-2000:]
    assert ckpt.load(run / "checkpoints" / "latest.pt")["epoch"] == 3


# ---------------------------------------------------------------- log intervals and a mid-epoch stop

def make_trainer(tmp_path, callbacks, epochs=2, log_every=4):
    cfg = load_config(ROOT / "configs" / "sequence_demo.yaml", SMALL)
    task = build_task(cfg)
    train_dl, val_dl = make_loaders(cfg, task.dataset("train"), task.dataset("val"), torch.device("cpu"))
    model, criterion = task.model(), task.criterion()
    optimizer = make_optimizer(model, cfg.optim, criterion, verbose=False)
    return Trainer(task=task, model=model, criterion=criterion, optimizer=optimizer,
                   lr_fn=make_lr_fn(cfg.optim, 20), train_loader=train_dl, val_loader=val_dl,
                   device=torch.device("cpu"), epochs=epochs, log_every=log_every, progress=False,
                   callbacks=callbacks)


class Spy(Callback):
    def __init__(self):
        self.logs, self.epochs = [], []

    def on_log(self, trainer, step, values):
        self.logs.append((step, values["epoch"]))

    def on_epoch_end(self, trainer, epoch, metrics):
        self.epochs.append(epoch)


def test_the_last_partial_interval_of_each_epoch_is_logged_and_the_fixed_batch_forwarded_once(tmp_path,
                                                                                             monkeypatch):
    from runner.config import MonitorConfig
    from runner.health.monitor import HealthMonitor
    from runner.tracking import NullTracker

    spy = Spy()
    trainer = make_trainer(tmp_path, [spy])  # 10 batches an epoch, a log every 4 steps
    val = trainer.val_loader.dataset
    # the health monitor reads the trainer's fixed batch: no forward of its own at evaluations
    monitor = HealthMonitor(MonitorConfig(), NullTracker(tmp_path, "r"), val)
    trainer.callbacks.append(monitor)
    seen = []
    stats = monitor.fixed_batch_stats
    monkeypatch.setattr(monitor, "fixed_batch_stats", lambda t: seen.append(t.fixed) or stats(t))
    trainer.fixed_source = fixed_batch(val, 3)
    calls = []
    forward = trainer.forward_fixed
    monkeypatch.setattr(trainer, "forward_fixed", lambda: calls.append(1) or forward())
    trainer.fit()
    assert [s for s, _ in spy.logs] == [4, 8, 10, 12, 16, 20]
    assert [e for s, e in spy.logs if s in (10, 20)] == [1.0, 2.0]
    assert len(calls) == 3  # once per epoch, and once at fit start for the untrained model's spread
    assert seen[0] is None and seen[1] is not None and seen[2] is trainer.fixed  # fit start, epoch 1, epoch 2
    assert monitor.batch is None  # the monitor keeps no fixed samples of its own
    assert monitor.rules.by_name("collapse").start_fixed is not None
    fixed = trainer.fixed
    assert isinstance(fixed, FixedBatch) and fixed.view.pred.shape[0] == 3
    assert torch.equal(fixed.batch["image"], torch.stack([val[i]["image"] for i in spread_indices(len(val), 3)]))


class StopAt(Callback):
    """Stops as the health monitor does: asks the trainer for a checkpoint, then sets should_stop."""

    def __init__(self, step):
        self.step = step

    def on_log(self, trainer, step, values):
        if step == self.step:
            trainer.save_checkpoint("health-stop", extra={"health_stop": {"step": step}}, name="health_stop.pt")
            trainer.should_stop = True


def test_a_stop_mid_epoch_keeps_the_epoch_open_and_its_checkpoint_latest(tmp_path):
    store = ckpt.CheckpointStore(tmp_path, 0)
    spy = Spy()
    trainer = make_trainer(tmp_path, [])
    trainer.callbacks = [StopAt(4), spy, Checkpointing(store, None, {"task": "sequence"}, "r", upload=False)]
    st = trainer.fit()
    assert spy.epochs == []  # no evaluation, no epoch end
    assert (st.epoch, st.batch_in_epoch, st.step) == (0, 4, 4)
    latest = ckpt.load(tmp_path / "checkpoints" / "latest.pt")
    assert latest["health_stop"] == {"step": 4} and latest["run_state"]["batch_in_epoch"] == 4
    assert (tmp_path / "checkpoints" / "health_stop.pt").exists()


# ---------------------------------------------------------------- callbacks in any order

def run_with_order(tmp_path, order, monkeypatch):
    class Shuffled(Trainer):
        def __init__(self, **kw):
            cbs = list(kw.pop("callbacks"))
            super().__init__(callbacks=order(cbs), **kw)

    monkeypatch.setattr(train_mod, "Trainer", Shuffled)
    cfg = load_config(ROOT / "configs" / "sequence_demo.yaml",
                      {**SMALL, "data.train_size": 48, "train.epochs": 2, "train.log_every": 4, "viz.n_samples": 2,
                       "early_stop.patience": 1, "out_dir": str(tmp_path)})
    result = train_mod.fit(cfg, progress=False)
    run = next(tmp_path.iterdir())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keys = sorted({k for r in rows for k in r})
    files = sorted(p.name for p in (run / "checkpoints").iterdir())
    best = ckpt.load(run / "checkpoints" / "best.pt")
    findings = [(f["detector"], f["severity"], f["step"]) for f in result.get("health/findings", [])]
    return keys, files, best["epoch"], result["best_epoch"], result["stop_reason"], findings


def test_callback_order_does_not_matter(tmp_path, monkeypatch):
    ref = run_with_order(tmp_path / "a", lambda cbs: cbs, monkeypatch)
    assert any(k.startswith("health/") for k in ref[0]) and "epoch/best_epoch" in ref[0]
    for i, order in enumerate([lambda cbs: cbs[::-1], lambda cbs: random.Random(3).sample(cbs, len(cbs))]):
        assert run_with_order(tmp_path / str(i), order, monkeypatch) == ref
