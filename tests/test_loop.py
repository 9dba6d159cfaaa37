"""runner.health.Monitor in a hand-written loop: a real model that collapses and the same model healthy."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from runner.errors import UserError
from runner.health import Monitor
from runner.health.loop import reduce_accumulators
from runner.health.stats import CollapseStats
from runner.meters import Meter
from tests.conftest import count_host_reads, inspect_records

LOG_EVERY, STEPS, PATIENCE = 5, 60, 3


def summary_of(records: list[dict]) -> dict:
    """The run summary as its summary records leave it (one `wandb leet inspect` call for everything)."""
    out: dict = {}
    for r in records:
        if r.get("type") == "summary":
            out.update(r["summary"].get("update", {}))
    return out


def train(monitor: Monitor, zero_inputs: bool, steps: int = STEPS) -> list:
    """A tiny regression y = W x; the bug under test zeroes the inputs, so the model can only learn
    the mean target: one prediction for every input."""
    torch.manual_seed(0)
    w_true = torch.randn(6, 3)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    found = []
    for step in range(1, steps + 1):
        x = torch.randn(16, 6)
        y = x @ w_true
        pred = model(x * 0 if zero_inputs else x)
        loss = nn.functional.mse_loss(pred, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        monitor.step(pred, y, losses={"loss": loss})
        if step % LOG_EVERY == 0:
            found += monitor.log(step, step / steps, {"lr": 1e-2})
    return found


def test_collapse_found_within_patience_and_reported_to_the_users_run(tmp_path):
    import wandb  # the user's own run, as their loop would start it

    run = wandb.init(mode="offline", dir=str(tmp_path), project="loop-test", settings=wandb.Settings(
        x_disable_machine_info=True))
    printed: list[str] = []
    monitor = Monitor({"patience": PATIENCE}, echo=printed.append)  # run="auto": takes wandb.run
    found = train(monitor, zero_inputs=True)
    table = monitor.finish()
    run_dir = run.dir
    run.finish()
    collapse = [f for f in found if f.detector == "collapse"]
    assert collapse, [f.title for f in found]
    # a model that never spread its predictions gets twice the patience (runner/health/rules.py)
    f = collapse[0]
    # fired at the rule's patience after the condition began (twice the patience for a model that
    # never spread its predictions: runner/health/rules.py), not later
    assert f.checks <= 2 * PATIENCE and f.step == f.onset_step + (f.checks - 1) * LOG_EVERY, f
    assert collapse[0].severity == "failed" and monitor.status == "failed"
    assert any("prediction collapse" in p for p in printed)
    assert "collapse         failed" in table
    records = inspect_records(Path(run_dir).parent)
    alerts = [r for r in records if r.get("type") == "alert"]
    assert any("FAILED collapse" in str(a) for a in alerts), alerts
    summary = summary_of(records)
    assert summary["health/status"] == "failed", summary
    assert "collapse         failed" in summary["health/table"]
    assert "collapse" in str(summary["health/findings"])


def test_healthy_model_gets_no_finding():
    monitor = Monitor(patience=PATIENCE, run=None, echo=None)
    assert train(monitor, zero_inputs=False) == []
    assert monitor.status == "healthy" and monitor.findings == []


def test_evaluation_and_state_roundtrip():
    monitor = Monitor(patience=PATIENCE, run=None, echo=None)
    train(monitor, zero_inputs=True)
    for _ in range(2):
        monitor.eval_step(torch.zeros(8, 3), torch.randn(8, 3), losses={"loss": torch.tensor(1.0)})
    monitor.evaluate(STEPS, 1.0)
    state = monitor.state_dict()
    again = Monitor(patience=PATIENCE, run=None, echo=None)
    again.load_state_dict(state)
    assert [f.to_dict() for f in again.findings] == [f.to_dict() for f in monitor.findings]
    assert again.status == "failed"


def test_bad_config_is_one_user_error():
    with pytest.raises(UserError, match="monitor: unknown config key 'patiense'; did you mean 'patience'"):
        Monitor(patiense=3, run=None)
    with pytest.raises(UserError, match="collapse_ratio"):
        Monitor({"collapse_ratio": 2.0}, run=None)


def test_step_never_reads_the_device_and_log_reads_once(monkeypatch):
    monitor = Monitor(run=None, echo=None)
    counts = count_host_reads(monkeypatch)
    torch.manual_seed(0)
    for _ in range(10):
        p = torch.rand(4, 5)
        monitor.step(torch.randn(4, 3), torch.randn(4, 3), mask=torch.ones(4),
                     rates={"done": (p, (p > 0.7).float())}, losses={"loss": torch.tensor(0.3), "box": torch.tensor(0.1)},
                     weights={"box": torch.tensor(0.5)}, grads={"total": torch.tensor(2.0)})
    assert sum(counts.values()) == 0, counts
    monitor.log(10)
    monkeypatch.undo()
    assert counts["tolist"] == 1 and sum(counts.values()) == 1, counts


def test_reduction_across_ranks_equals_one_big_batch():
    torch.manual_seed(0)
    pred, target, p = torch.randn(12, 3), torch.randn(12, 3), torch.rand(12, 4)
    halves = []
    for sl in (slice(0, 5), slice(5, 12)):
        s, m = CollapseStats(), Meter()
        from runner.tasks.base import MonitorView
        s.update(MonitorView(pred[sl], target[sl], {"r": (p[sl], (p[sl] > 0.6).float())}))
        m.update_means({"train/loss": pred[sl].abs().mean()}, sl.stop - sl.start)
        halves.append((s, m))

    def fake_reduce(rank):  # what a 2-rank all-reduce returns on `rank`, computed from both ranks' tensors
        def reduce(t, op):
            other = fake_reduce.pending[1 - rank][fake_reduce.calls[rank]]
            fake_reduce.calls[rank] += 1
            return {"sum": t + other, "min": torch.minimum(t, other), "max": torch.maximum(t, other)}[op]
        return reduce

    # record each rank's outgoing tensors first (the collectives are symmetric)
    import copy
    sent = {0: [], 1: []}
    for r in (0, 1):
        s, m = copy.deepcopy(halves[r])
        reduce_accumulators(s, m, lambda t, op, r=r: (sent[r].append(t.clone()), t)[1])
    fake_reduce.pending, fake_reduce.calls = sent, {0: 0, 1: 0}
    s0, m0 = halves[0]
    reduce_accumulators(s0, m0, fake_reduce(0))
    whole, wm = CollapseStats(), Meter()
    from runner.tasks.base import MonitorView
    whole.update(MonitorView(pred, target, {"r": (p, (p > 0.6).float())}))
    wm.update_means({"train/loss": pred[:5].abs().mean()}, 5)
    wm.update_means({"train/loss": pred[5:].abs().mean()}, 7)
    got, want = {**m0.tensors(), **s0.tensors()}, {**wm.tensors(), **whole.tensors()}
    assert set(got) == set(want)
    for k in want:
        assert torch.allclose(got[k].double(), want[k].double(), atol=1e-6), (k, got[k], want[k])


def test_the_docs_example_runs_as_written(monkeypatch, capsys):
    text = (Path(__file__).resolve().parents[1] / "docs" / "health.md").read_text()
    section = text[text.index("## Your own loop, or PyTorch Lightning"):]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("WANDB_MODE", "disabled")  # a real wandb.init, no files
    torch.manual_seed(0)
    exec(compile(code, "docs/health.md", "exec"), {})
    out = capsys.readouterr().out
    assert "status: HEALTHY" in out and "collapse         ok" in out, out


def losses_in_a_loop(spike_steps) -> list:
    """A user's loop whose total loss is 0.1, and 30 at `spike_steps`: what the explosion rule judges."""
    torch.manual_seed(0)
    monitor = Monitor(echo=None, run=None)
    found = []
    for step in range(1, 121):
        y = torch.randn(16, 3)
        pred = y + 0.1 * torch.randn(16, 3)
        monitor.step(pred, y, losses={"loss": torch.tensor(30.0 if step in spike_steps else 0.1)},
                     grads={"total": torch.tensor(1.0)})
        if step % LOG_EVERY == 0:
            found += monitor.log(step, step / 120, {"lr": 1e-2})
    return [f for f in found if f.detector == "gradients"]


def test_one_bad_step_per_interval_is_not_an_explosion_in_a_users_loop_and_a_divergence_is():
    """The monitor judges the median of an interval's step losses (batch size 2: one wrong label lifts the
    mean tenfold); every step of an interval up is a divergence."""
    one_per_interval = {s for s in range(60, 121) if s % LOG_EVERY == 3}
    assert losses_in_a_loop(one_per_interval) == []
    diverging = set(range(60, 121))
    found = losses_in_a_loop(diverging)
    assert [f.subject for f in found] == ["explosion"] and "median of the steps" in found[0].evidence
