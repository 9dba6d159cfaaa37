"""Health monitor: detectors on scripted statistic sequences, then the real thing on short CLI runs."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import find_wandb_run, inspect_records, inspect_summary, run_cli
from runner.config import MonitorConfig
from runner.health.detectors import DETECTORS, Finding, Rules, health_table, replay

LOG = 10  # steps between scripted checks


def feed_checks(rules: Rules, rows: list[dict], start: int = 1) -> list[tuple[int, Finding]]:
    """Feed one dict per check; return (check index, finding) for every finding."""
    out = []
    for i, values in enumerate(rows, start):
        for f in rules.check(i * LOG, i / 10, {"lr": 1e-3, **values}):
            out.append((i, f))
    return out


def feed_evals(rules: Rules, rows: list[dict]) -> list[tuple[int, Finding]]:
    out = []
    for e, metrics in enumerate(rows, 1):
        for f in rules.evaluation(e * 100, e, metrics):
            out.append((e, f))
    return out


def fired(findings, detector):
    return [(i, f) for i, f in findings if f.detector == detector and f.severity != "note"]


# ---------------------------------------------------------------- 1. prediction collapse

def ratios(seq):
    return [{"pred/std_ratio": r, "pred/std": r * 0.3, "gt/std": 0.3} for r in seq]


@pytest.mark.parametrize("seq, fires_at", [
    ([0.5, 0.6, 0.004, 0.004, 0.004, 0.004], 5),  # seed 002: std 0.005 vs 0.3, fires at the 3rd low check
    ([0.01] * 8, 6),  # never spread from the start: twice the patience (it may still be starting)
    ([0.01] * 5 + [0.3], None),  # a slow start that gets going
    ([0.5, 0.0, 0.0008, 0.0, 0.0004], 4),  # noise below 1e-3 is not recovery
    ([0.01, 0.017, 0.05, 0.48, 0.55, 0.9], None),  # healthy start: low but growing fast (measured on sequence)
    ([0.8, 0.9, 0.95, 0.92, 0.97, 0.96], None),
    ([0.5, 0.05, 0.5, 0.05, 0.5, 0.05], None),  # never persistent
    ([0.5, 0.09, 0.095, 0.09, 0.2], 4),  # just under the limit, flat
])
def test_collapse_rule(seq, fires_at):
    found = fired(feed_checks(Rules(), ratios(seq)), "collapse")
    assert [i for i, _ in found] == ([fires_at] if fires_at else [])
    if fires_at:
        f = found[0][1]
        assert f.severity == "failed" and "vs gt std 0.3" in f.evidence and f.checks in (3, 6)


def test_collapse_waits_for_warmup_and_fires_once_per_episode():
    rules = Rules(MonitorConfig(), warmup_steps=35)  # checks at steps 10, 20, 30 are warm-up
    seq = [0.01] * 9 + [0.9] * 3 + [0.01] * 4
    found = fired(feed_checks(rules, ratios(seq)), "collapse")
    # judged from step 40 (check 4), never spread: 6 checks -> check 9; 3 clean checks end the episode;
    # after spreading to 0.9 a fall is collapse after 3 checks -> check 15, and only once
    assert [i for i, _ in found] == [9, 15]
    assert found[0][1].onset_step == 40 and "never above 0.1" in found[0][1].evidence
    assert "fell from 0.9 at step 100" in found[1][1].evidence


def test_identical_predictions_on_fixed_val_inputs():
    rules = Rules()
    rows = [{"val/pred/std_ratio": 0.5, "health/fixed_std_ratio": x} for x in (0.3, 0.004, 0.003, 0.004)]
    found = fired(feed_evals(rules, rows), "collapse")
    assert [e for e, _ in found] == [4]
    assert "fixed val inputs" in found[0][1].evidence


def test_constant_targets_are_not_collapse():
    rows = [{"pred/std_ratio": 0.0, "pred/std": 0.0, "gt/std": 0.0}] * 6
    assert not fired(feed_checks(Rules(), rows), "collapse")


# ---------------------------------------------------------------- 2. runaway loss weighting

def kendall(sigmas, terms, total=None):
    rows = []
    for s, t in zip(sigmas, terms):
        tot = total if total is not None else 0.5 * t / s ** 2 + math.log(s)
        rows.append({"loss/sigma_reg": s, "train/loss_reg": t, "train/weighted/loss_reg": t / s ** 2,
                     "train/loss": tot})
    return rows


def test_runaway_weight_fires_when_weight_collapses_and_term_stalls():
    # seed 000: sigma grows without bound while the regression term stops falling; total goes negative
    sig = [1, 1.5, 2.2, 3.3, 5, 7.5, 11, 16]
    term = [1.0, 0.8, 0.7, 0.7, 0.72, 0.75, 0.78, 0.8]
    found = fired(feed_checks(Rules(), kendall(sig, term)), "loss_weighting")
    assert len(found) == 1
    i, f = found[0]
    assert f.severity == "failed" and f.subject == "reg" and i >= 4
    assert "effective weight" in f.evidence and "train/loss_reg" in f.evidence


def test_negative_total_of_a_converging_uncertainty_loss_is_a_note():
    # sigma falls below 1 as the term falls: the total goes negative, weights rise, nothing runs away
    sig = [1.0, 0.8, 0.6, 0.45, 0.35, 0.3, 0.28, 0.27]
    term = [1.0, 0.6, 0.35, 0.2, 0.12, 0.09, 0.08, 0.075]
    found = feed_checks(Rules(), kendall(sig, term))
    assert not fired(found, "loss_weighting")
    notes = [f for _, f in found if f.severity == "note"]
    assert len(notes) == 1 and "negative total" in notes[0].title and "not a failure" in notes[0].title


# ---------------------------------------------------------------- 3. stuck loss

def terms(seq, key="loss_position", lr=1e-3):
    return [{f"train/{key}": v, f"train/weighted/{key}": v, "train/loss": v + 1.4, "lr": lr} for v in seq]


@pytest.mark.parametrize("seq, lr, fires_at", [
    ([1.0] * 8, 1e-3, 6),  # seed 002: GIoU stuck at exactly 1.000 from the start: 2 x patience checks
    ([1.0004, 1.0001, 0.9998, 1.0, 0.9999, 1.0002, 1.0], 1e-3, 6),
    ([0.9829, 0.9821, 0.9824, 0.9796, 0.9712, 0.9602, 0.9443], 1e-3, None),  # dice at the start (occupancy)
    ([1.0] * 8, 0.0, None),  # lr 0: flat by construction, not stuck
    ([1.1, 0.6, 0.61, 0.6, 0.61, 0.6, 0.6], 1e-3, None),  # plateau with batch noise (seed 002 at 0.6)
    ([1.0, 0.5, 0.1, 0.0201, 0.02005, 0.0201, 0.0201], 1e-3, None),  # converged: far below its first value
    ([1.0, 0.5, 0.2, 0.9, 0.9, 0.9, 0.9], 1e-3, 6),  # learned, then froze well above its best: 3 checks
])
def test_stuck_loss_rule(seq, lr, fires_at):
    found = fired(feed_checks(Rules(), terms(seq, lr=lr)), "stuck_loss")
    assert [i for i, _ in found] == ([fires_at] if fires_at else [])
    if fires_at:
        assert found[0][1].subject == "train/loss_position" and "flat at" in found[0][1].title


# ---------------------------------------------------------------- 4. sparse-target collapse

def occupancy(means, rate=0.0083, mx=None):
    return [{"pred/occupancy_mean": m, "pred/occupancy_rate": 0.0, "target/occupancy_rate": rate,
             "pred/occupancy_max": mx if mx is not None else min(1, 5 * m)} for m in means]


@pytest.mark.parametrize("means, fires_at", [
    ([0.5, 0.01, 0.0001, 0.0001, 0.0001], 5),  # seed 004: 0.5 -> 0.01 -> 0.0001 vs 0.83% occupancy
    ([0.5, 0.02, 0.009, 0.008, 0.0085, 0.008], None),  # healthy: mean matches the rate
    ([0.0005, 0.0008, 0.0012, 0.0019, 0.003], None),  # low but recovering by >1.5x per check
])
def test_sparse_collapse_rule(means, fires_at):
    found = fired(feed_checks(Rules(), occupancy(means)), "sparse_collapse")
    assert [i for i, _ in found] == ([fires_at] if fires_at else [])
    if fires_at:
        assert "vs target occupancy rate 0.83%" in found[0][1].evidence


def test_sparse_max_never_reaching_threshold_on_validation():
    rows = [{"val/target/occupancy_rate": 0.008, "val/pred/occupancy_max": m, "val/pred/occupancy_mean": 0.004,
             "epoch/val_loss": 1.0, "epoch/train_loss": 1.0} for m in (0.3, 0.2, 0.1, 0.1)]
    found = fired(feed_evals(Rules(), rows), "sparse_collapse")
    assert [e for e, _ in found] == [3] and "never predicted" in found[0][1].title


# ---------------------------------------------------------------- 5. rare class never predicted

@pytest.mark.parametrize("recalls, fires_at", [
    ([0.0, 0.0, 0.0, 0.0], 3),  # seed 003: done never predicted
    ([0.0, 0.02, 0.04], 3),  # near zero counts
    ([0.0, 0.0, 0.4, 0.9], None),  # a rare class that is learned by the 3rd evaluation
    ([0.9, 1.0, 1.0], None),
])
def test_rare_class_rule(recalls, fires_at):
    rules = Rules()
    rules.set_class_balance({"done": {"train": 0.03, "val": 0.031}})
    found = fired(feed_evals(rules, [{"val/done_recall": r, "val/target/done_rate": 0.03} for r in recalls]),
                  "rare_class")
    assert [e for e, _ in found] == ([fires_at] if fires_at else [])
    if fires_at:
        f = found[0][1]
        assert "3% of train" in f.evidence and "(1-p)/p = 32" in " ".join(f.fixes)


# ---------------------------------------------------------------- 6. overfitting

@pytest.mark.parametrize("val, train, fires_at", [
    ([1.0, 0.7, 0.6, 0.65, 0.8, 0.9, 1.1], [1.0, 0.6, 0.4, 0.3, 0.2, 0.15, 0.1], 6),  # seed 003 shape
    ([1.0, 0.7, 0.6, 0.58, 0.57, 0.57, 0.56], [1.0, 0.6, 0.4, 0.3, 0.2, 0.15, 0.1], None),  # still improving
    ([1.0, 0.7, 0.6, 0.7, 0.8, 0.9], [1.0, 0.6, 0.4, 0.5, 0.6, 0.7], None),  # both rise: divergence, not overfit
    ([1.0, 0.6, 0.62, 0.61, 0.615, 0.6], [1.0, 0.6, 0.5, 0.45, 0.42, 0.4], None),  # plateau within the margin
])
def test_overfitting_rule(val, train, fires_at):
    rows = [{"epoch/val_loss": v, "epoch/train_loss": t} for v, t in zip(val, train)]
    found = fired(feed_evals(Rules(), rows), "overfitting")
    assert [e for e, _ in found] == ([fires_at] if fires_at else [])
    if fires_at:
        assert "best 0.6 at epoch 3" in found[0][1].evidence and "gap" in found[0][1].evidence


# ---------------------------------------------------------------- 7. gradient trouble

def grads(totals, **heads):
    rows = []
    for i, g in enumerate(totals):
        row = {"grad/total": g, "train/loss": 1.0}
        row.update({f"grad/{h}": v[i] for h, v in heads.items()})
        rows.append(row)
    return rows


def test_nonfinite_fires_at_once_including_vanished_nan_keys():
    rows = grads([1.0, 0.9])
    rows.append({"grad/total": math.inf, "train/loss": 1.0})
    rows.append({"lr": 1e-3})  # read_host dropped NaN loss and grad norm
    found = fired(feed_checks(Rules(), rows), "gradients")
    assert [(i, f.subject) for i, f in found] == [(3, "nonfinite")]  # one episode, not two alerts


def test_explosion_relative_to_running_median():
    found = fired(feed_checks(Rules(), grads([8.0, 2.0, 1.0, 0.3, 0.25, 0.3, 40.0, 0.3])), "gradients")
    assert [(i, f.subject) for i, f in found] == [(7, "explosion")]
    assert "x its running median" in found[0][1].evidence


@pytest.mark.parametrize("head, fires_at", [
    ([0.0] * 5, 3),  # done_weight 0: no gradient reaches the head
    ([1e-6] * 5, 3),
    ([0.02] * 5, None),  # small but alive (point head of the sequence task: ~0.1x the others)
])
def test_vanishing_head(head, fires_at):
    rows = grads([1.0] * 5, backbone=[0.5] * 5, done_head=head)
    found = [x for x in fired(feed_checks(Rules(), rows), "gradients") if x[1].subject == "done_head"]
    assert [i for i, _ in found] == ([fires_at] if fires_at else [])


# ---------------------------------------------------------------- rules as a whole

def test_every_detector_is_documented_and_state_round_trips(tmp_path):
    assert len({d.name for d in DETECTORS}) == 7 and all(d.doc for d in DETECTORS)
    rules = Rules()
    feed_checks(rules, ratios([0.5] + [0.01] * 3))
    state = rules.state_dict()
    path = tmp_path / "s.pt"
    torch.save(state, path)
    back = Rules()
    back.load_state_dict(torch.load(path, weights_only=True))
    assert back.state_dict() == state and back.status() == "failed"
    # the restored rules continue the episode instead of alerting again
    assert not fired(feed_checks(back, ratios([0.01] * 2), start=5), "collapse")
    assert fired(feed_checks(rules, ratios([0.01] * 2), start=5), "collapse") == []


def test_health_table_names_status_evidence_and_fixes():
    f = Finding("collapse", "failed", "predictions", 300, 2.5, "prediction collapse", "pred std 0.004 vs gt std 0.29",
                ["a cause"], ["a fix"], 250, 3)
    table = health_table([f], {"done": {"train": 0.03}})
    assert "FAILED (1 failures" in table and "pred std 0.004 vs gt std 0.29" in table and "a fix" in table
    assert "done 3% of train" in table and "overfitting" in table  # every detector listed
    assert Finding.from_dict(json.loads(json.dumps(f.to_dict()))) == f


def test_replay_of_logged_rows_matches_live_rules():
    seq = [0.5] + [0.01] * 5
    rows = [{"_step": i * LOG, "epoch": i / 10, "lr": 1e-3, **r} for i, r in enumerate(ratios(seq), 1)]
    rows.insert(3, {"_step": 30, "epoch": 1, "epoch/val_loss": 1.0, "epoch/train_loss": 1.0})
    live = Rules()
    feed_checks(live, ratios(seq))
    assert live.findings
    assert [f.step for f in replay(rows).findings] == [f.step for f in live.findings]
