"""HealthCallback in real PyTorch Lightning: a model that collapses, with an offline WandbLogger read back
by `wandb leet inspect`, and the same model healthy without W&B."""
from __future__ import annotations

from pathlib import Path

import subprocess
import sys

import lightning.pytorch as pl  # the integrations extra; `make test` installs it (a missing one fails here)
import torch
from torch import nn

from runner.integrations.lightning import HealthCallback
from tests.conftest import ROOT, inspect_records
from tests.test_loop import summary_of

LOG_EVERY, PATIENCE = 5, 3


class Regressor(pl.LightningModule):
    """y = W x with a tiny MLP; zero_inputs is the bug under test (the model sees only zeros)."""

    def __init__(self, zero_inputs: bool):
        super().__init__()
        self.zero_inputs = zero_inputs
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x * 0 if self.zero_inputs else x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        pred = self(x)
        loss = nn.functional.mse_loss(pred, y)
        return {"loss": loss, "pred": pred, "target": y}

    def validation_step(self, batch, batch_idx):
        x, y = batch
        pred = self(x)
        return {"loss": nn.functional.mse_loss(pred, y), "pred": pred, "target": y}

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def loaders():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, generator=g)
    x = torch.randn(480, 6, generator=g)
    data = torch.utils.data.TensorDataset(x, x @ w)
    train = torch.utils.data.DataLoader(torch.utils.data.Subset(data, range(400)), batch_size=16)
    val = torch.utils.data.DataLoader(torch.utils.data.Subset(data, range(400, 480)), batch_size=16)
    return train, val


def fit(tmp_path, zero_inputs, logger=False, **monitor):
    torch.manual_seed(0)
    cb = HealthCallback(patience=PATIENCE, **monitor)
    trainer = pl.Trainer(max_epochs=2, log_every_n_steps=LOG_EVERY, logger=logger, callbacks=[cb],
                         default_root_dir=str(tmp_path), enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, accelerator="cpu", devices=1, num_sanity_val_steps=0)
    train, val = loaders()
    trainer.fit(Regressor(zero_inputs), train, val)
    return trainer, cb


def test_collapse_alerts_through_the_wandb_logger_and_stops(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")  # WandbLogger(offline=True, log_model=...) refuses to run
    logger = WandbLogger(project="lightning-test", save_dir=str(tmp_path))
    trainer, cb = fit(tmp_path, zero_inputs=True, logger=logger, on_failure="stop")
    run_dir = Path(logger.experiment.dir).parent
    logger.experiment.finish()
    collapse = [f for f in cb.monitor.findings if f.detector == "collapse"]
    assert collapse, cb.monitor.table()
    f = collapse[0]
    assert f.severity == "failed" and f.checks <= 2 * PATIENCE
    assert f.step == f.onset_step + (f.checks - 1) * LOG_EVERY, f
    # on_failure=stop: Lightning's own checkpoint, holding the finding in this callback's state; stopped there
    assert trainer.global_step == f.step < 50, trainer.global_step
    ckpt = torch.load(tmp_path / "health_stop.ckpt", weights_only=False)
    state = next(v for k, v in ckpt["callbacks"].items() if "HealthCallback" in k)
    assert state["stopped"]["detector"] == "collapse" and state["status"] == "failed"
    records = inspect_records(run_dir)
    alerts = [r["alert"] for r in records if r.get("type") == "alert"]
    assert any(a["title"].startswith("FAILED collapse: prediction collapse") for a in alerts), alerts
    summary = summary_of(records)
    assert summary["health/status"] == "failed"
    assert "collapse         failed" in summary["health/table"] and "collapse" in str(summary["health/findings"])


def test_healthy_model_no_finding_and_table_printed_without_wandb(tmp_path, capsys):
    trainer, cb = fit(tmp_path, zero_inputs=False)
    assert cb.monitor.findings == [], cb.monitor.table()
    assert trainer.global_step == 50  # 2 epochs of 25 batches: nothing stopped it
    # grad/total from on_before_optimizer_step reached the gradient rule, once per log interval
    hist = cb.monitor.rules.by_name("gradients").hist  # keeps the last hist.n values
    assert len(hist.get("grad/total")) == min(hist.n, 50 // LOG_EVERY) and min(hist.get("grad/total")) > 0
    out = capsys.readouterr().out
    assert "[health] run health:" in out and "status: HEALTHY" in out and "collapse         ok" in out


def test_callback_state_roundtrip():
    cb = HealthCallback(patience=PATIENCE)
    cb.monitor.step(torch.zeros(4, 3), torch.randn(4, 3), losses={"loss": torch.tensor(1.0)})
    cb.stopped = {"detector": "collapse"}
    again = HealthCallback(patience=PATIENCE)
    again.load_state_dict(cb.state_dict())
    assert again.stopped == cb.stopped and again.state_dict() == cb.state_dict()


def test_clear_import_error_without_lightning():
    code = ("import sys; sys.modules['lightning'] = None\n"
            "try:\n    import runner.integrations.lightning\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}).stdout
    assert "needs PyTorch Lightning: pip install 'runner[integrations]'" in out, out
