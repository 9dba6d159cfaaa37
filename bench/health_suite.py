"""Health monitor benchmark: recall per failure type, false positives on healthy runs, checks from onset
to alert, and the monitor's time overhead (monitor on vs off, interleaved within one run).

    python bench/health_suite.py                      # everything: 5 seeds, 2 parallel runs
    python bench/health_suite.py --seeds 1 --only rare_done healthy_default
    python bench/health_suite.py --overhead-only      # just the overhead measurement
    python bench/health_suite.py --list

Every run is an ordinary `python -m runner.train` on a real task, broken (or not) only by config
settings. Scenarios whose task is not in this checkout are skipped and listed. Each failure run is
checked afterwards by a hindsight oracle that reads its whole logged history (which the online
monitor cannot): a run in which the failure did not actually happen is reported as "not produced"
and left out of recall rather than counted either way. Onset is the first check (or evaluation)
from which the failure's defining statistic stays in the failure region, counted from the first
check after the warm-up (when any online rule may first judge); the lag is alert index - onset index.

Results: <out>/results.json and a markdown report on stdout (and <out>/report.md).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runner.config import MonitorConfig  # noqa: E402
from runner.health.replay import is_check, is_evaluation  # noqa: E402
from runner.tasks import available  # noqa: E402

RULES = MonitorConfig()
K = RULES.patience

# ---------------------------------------------------------------- presets (ordinary config settings)

# The suite runs --jobs trainings side by side, so each makes its data in its own process (no workers).
SEQ = {  # sequence task, small enough for CPU: 64 steps/epoch, a check every 8 steps
    "data.image_size": 64, "data.min_objects": 4, "data.max_objects": 10, "data.radius": 2,
    "data.train_size": 2048, "data.val_size": 256, "model.width": 16, "train.batch_size": 32,
    "train.log_every": 8, "train.epochs": 5, "optim.lr": 3e-3, "optim.warmup_steps": 40, "viz.n_samples": 0,
    "early_stop.enabled": False, "train.num_workers": 0,
}
# --scale tiny (the test suite's subset): the same scenarios on a few-second budget
TINY = {
    "sequence": {"data.image_size": 32, "data.min_objects": 2, "data.max_objects": 4, "data.radius": 2,
                 "data.train_size": 256, "data.val_size": 64, "model.width": 12, "train.batch_size": 16,
                 "train.log_every": 4, "train.epochs": 4, "optim.lr": 1e-2, "optim.warmup_steps": 8},
}
OCC = {"data.train_size": 512, "data.val_size": 64, "train.log_every": 8, "train.epochs": 4, "viz.n_samples": 0,
       "early_stop.enabled": False, "train.num_workers": 0}
LANES = {"data.train_size": 1024, "data.val_size": 128, "train.epochs": 5, "train.batch_size": 16,
         "viz.n_samples": 0, "early_stop.enabled": False, "train.num_workers": 0}
PUZZLE = {"data.train_size": 1024, "data.val_size": 128, "train.epochs": 5, "viz.n_samples": 0,
          "early_stop.enabled": False, "train.num_workers": 0}
SEQ_TINY_TRAIN = {**SEQ, "data.train_size": 8, "train.batch_size": 4, "train.epochs": 60, "optim.schedule": "constant",
                  "optim.weight_decay": 0.0, "optim.warmup_steps": 10, "data.val_size": 128, "model.width": 48,
                  "loss.kind": "mse"}


# ---------------------------------------------------------------- oracles: (rows, evals) -> onset index or None

def sustained(seq: list[bool], start: int, k: int) -> int | None:
    """First index >= start from which seq holds for k consecutive entries. A condition that only begins
    in the last k - 1 entries has not persisted (no rule could have judged it): the failure was not produced."""
    for i in range(start, len(seq) - k + 1):
        if all(seq[i:i + k]):
            return i
    return None


def first_judged(rows: list[dict], warmup: int) -> int:
    return next((i for i, r in enumerate(rows) if r["_step"] > warmup), len(rows))


def oracle_collapse(rows, evals, warmup, summary):
    low = [r.get("pred/std_ratio", 1.0) < RULES.collapse_ratio for r in rows]
    return at(sustained(low, first_judged(rows, warmup), K), "checks")


def at(index: int | None, unit: str) -> tuple[int, str] | None:
    return None if index is None else (index, unit)


def oracle_rare(rows, evals, warmup, summary):
    recall = [e.get("val/done_recall", 1.0) <= RULES.rare_recall for e in evals]
    return at(sustained(recall, 0, RULES.eval_patience), "evaluations")


def oracle_overfit(rows, evals, warmup, summary):
    vals = [e["epoch/val_loss"] for e in evals]
    if len(vals) < 2:
        return None
    best = min(range(len(vals)), key=vals.__getitem__)
    worse = [v > vals[best] * (1 + RULES.overfit_margin) for v in vals]
    onset = sustained(worse, best + 1, RULES.eval_patience)
    final_worse = vals[-1] > vals[best] * (1 + RULES.overfit_margin)
    trains = [e["epoch/train_loss"] for e in evals]
    shared = trains[-1] - trains[best] >= 0.5 * (vals[-1] - vals[best])  # both rose: divergence
    return at(onset if final_worse and not shared else None, "evaluations")


def oracle_gradients(rows, evals, warmup, summary):
    """Non-finite values or a spike (> explode_factor x the running median) count at once; a head whose
    gradient is vanishingly small next to the largest other head's must stay so for `patience` checks."""
    if "non-finite" in str(summary.get("stop_reason", "")):
        return 0, "checks"  # the trainer stopped on non-finite steps (possibly before the first log)
    at_once, vanish, learned = [], {}, set()
    for i, r in enumerate(rows):
        past = [x["grad/total"] for x in rows[max(0, i - 8):i] if "grad/total" in x]
        g = r.get("grad/total", math.nan)
        spike = len(past) >= 3 and g > RULES.explode_factor * statistics.median(past)
        at_once.append(not math.isfinite(g) or "train/loss" not in r or spike)
        heads = {k: v for k, v in r.items() if k.startswith("grad/") and k != "grad/total"}
        for h, v in heads.items():  # cut off: exactly zero, or tiny without ever having had a usable gradient
            others = [w for k, w in heads.items() if k != h]
            tiny = bool(others) and v < RULES.vanish_ratio * max(others)
            if others and not tiny:
                learned.add(h)
            vanish.setdefault(h, [False] * i).append(r["_step"] > warmup and tiny and (v == 0 or h not in learned))
    onsets = [sustained(at_once, 0, 1)] + [sustained(seq, 0, K) for seq in vanish.values()]
    onsets = [o for o in onsets if o is not None]
    return at(min(onsets) if onsets else None, "checks")


def oracle_stuck(rows, evals, warmup, summary):
    keys = [k for k in rows[0] if k.startswith("train/weighted/")] if rows else []
    for key in [k.replace("weighted/", "") for k in keys]:
        v = [r.get(key, math.nan) for r in rows]
        flat = [i + K <= len(v) and max(v[i:i + K]) - min(v[i:i + K]) <= RULES.stuck_tol * abs(v[i])
                for i in range(len(v))]
        onset = sustained(flat, first_judged(rows, warmup), 1)
        if onset is not None:
            return onset, "checks"
    return None


def oracle_sparse(rows, evals, warmup, summary):
    """Mean probability far below the positive rate (checks), or no validation element ever
    reaching 0.5 while positives exist (evaluations)."""
    names = [k[len("target/"):-len("_rate")] for k in (rows[0] if rows else {}) if k.startswith("target/")]
    for r in names:
        low = [row.get(f"pred/{r}_mean", 1) < RULES.sparse_ratio * row.get(f"target/{r}_rate", 0) for row in rows]
        onset = sustained(low, first_judged(rows, warmup), K)
        if onset is not None:
            return onset, "checks"
        never = [e.get(f"val/pred/{r}_max", 1) < 0.5 and e.get(f"val/target/{r}_rate", 0) > 0 for e in evals]
        onset = sustained(never, 0, RULES.eval_patience)
        if onset is not None:
            return onset, "evaluations"
    return None


def oracle_weighting(rows, evals, warmup, summary):
    """A term's share of the learnable weight (train/weight/<t>) below weight_drop x its first share."""
    keys = [k for k in (rows[0] if rows else {}) if k.startswith("train/weight/")]
    if not keys:
        return None
    low = []
    for r in rows:
        total = sum(r.get(k, 0.0) for k in keys)
        first = sum(rows[0][k] for k in keys)
        low.append(total > 0 and any(r.get(k, 0.0) / total < RULES.weight_drop * rows[0][k] / first for k in keys))
    return at(sustained(low, 0, K), "checks")


EVAL_LEVEL = {"rare_class", "overfitting"}


@dataclass
class Scenario:
    name: str
    task: str
    kind: str  # failure | healthy
    about: str  # how it is produced, and the seed it mirrors
    overrides: dict[str, Any]
    failure: str | None = None  # failure type
    expect: tuple[str, ...] = ()  # detectors whose finding counts as detecting it
    oracle: Callable | None = None
    config: str = ""

    def __post_init__(self):
        self.config = self.config or {"sequence": "configs/sequence_demo.yaml"}.get(self.task, f"configs/{self.task}.yaml")


SCENARIOS: list[Scenario] = [
    # ---------------- failures
    Scenario("rare_done", "sequence", "failure",
             "done on 2% of samples (data.sampling=balanced, balanced_done_rate=0.02) with the seed's "
             "unweighted done BCE (loss.done_weight=1): seed 003, done never predicted",
             {**SEQ, "data.sampling": "balanced", "data.balanced_done_rate": 0.02, "loss.done_weight": 1.0},
             "rare_class", ("rare_class",), oracle_rare),
    Scenario("rare_done_1pct", "sequence", "failure",
             "done on 1% of samples with the seed's unweighted done BCE: as rare_done, rarer (the model learns "
             "done at 2% in most seeds, so rarity alone produces the failure only in some)",
             {**SEQ, "data.sampling": "balanced", "data.balanced_done_rate": 0.01, "loss.done_weight": 1.0},
             "rare_class", ("rare_class",), oracle_rare),
    Scenario("huge_lr", "sequence", "failure",
             "a huge learning rate (optim.lr=10, 3000x the preset): gradient explosion and dead heads",
             {**SEQ, "optim.lr": 10.0}, "gradients", ("gradients",), oracle_gradients),
    Scenario("overfit_tiny_train", "sequence", "failure",
             "a tiny training set (8 samples, 60 epochs, no weight decay): seed 003, best val loss early, "
             "then rising while train loss falls",
             SEQ_TINY_TRAIN, "overfitting", ("overfitting",), oracle_overfit),
    Scenario("no_spatial_term", "sequence", "failure",
             "the position term weighted to zero (loss.spatial_weight=0), seed 000's end state: the model "
             "outputs one position for every input",
             {**SEQ, "loss.spatial_weight": 0.0}, "collapse", ("collapse",), oracle_collapse),
    Scenario("no_done_term", "sequence", "failure",
             "the done term weighted to zero (loss.done_weight=0): no gradient reaches the done head",
             {**SEQ, "loss.done_weight": 0.0}, "gradients", ("gradients",), oracle_gradients),
    Scenario("nan_lr", "sequence", "failure",
             "an absurd learning rate without clipping (optim.lr=1e6, train.grad_clip=0): non-finite gradients",
             {**SEQ, "optim.lr": 1e6, "train.grad_clip": 0.0, "optim.warmup_steps": 0}, "gradients",
             ("gradients",), oracle_gradients),
    Scenario("lanes_uncertainty", "lanes", "failure",
             "the seed's learnable uncertainty weights (configs/lanes_seed_broken.yaml, lr 2e-2): the "
             "smoothness weight runs away and the existence term is switched off (seed 000); constant lr and "
             "8 epochs (512 steps) so that the run gets where the config's 1152 cosine steps do",
             {**LANES, "optim.schedule": "constant", "train.epochs": 8}, "loss_weighting", ("loss_weighting",), oracle_weighting,
             config="configs/lanes_seed_broken.yaml"),
    Scenario("puzzle_giou", "puzzle", "failure",
             "the seed's GIoU-only loss on x1y1x2y2 through a sigmoid head (loss.kind=giou, model.head=regress, "
             "model.box_format=xyxy): seed 002, position loss stuck at 1.000",
             {**PUZZLE, "loss.kind": "giou", "model.head": "regress", "model.box_format": "xyxy"}, "stuck_loss",
             ("stuck_loss",), oracle_stuck),
    Scenario("puzzle_hot_sigmoid", "puzzle", "failure",
             "a too-high learning rate for a sigmoid box head (model.head=regress, box_format=xyxy, lr 5e-2): "
             "seed 002, every input gets the same corner box",
             {**PUZZLE, "model.head": "regress", "model.box_format": "xyxy", "optim.lr": 5e-2}, "collapse",
             ("collapse",), oracle_collapse),
    Scenario("occ_pos_weight", "occupancy", "failure",
             "weighted BCE on 0.83% occupied voxels with a mis-set positive weight (loss.kind=weighted_bce, "
             "pos_weight=0.01): seed 004, probabilities sink and no voxel reaches 0.5",
             {**OCC, "loss.kind": "weighted_bce", "loss.pos_weight": 0.01}, "sparse_collapse",
             ("sparse_collapse",), oracle_sparse),
    Scenario("occ_empty_labels", "occupancy", "failure",
             "the seed's weighted BCE (pos_weight 10) on labels that came out empty for 95% of scenes "
             "(data.empty_label_fraction=0.95, seed 004's UAVScenes note): the model predicts empty",
             {**OCC, "loss.kind": "weighted_bce", "data.empty_label_fraction": 0.95}, "sparse_collapse",
             ("sparse_collapse",), oracle_sparse),
    # ---------------- healthy
    Scenario("healthy_default", "sequence", "healthy", "the preset: fixed losses, done weight 3", SEQ),
    Scenario("healthy_converged", "sequence", "healthy",
             "a loss that has simply converged: 10 epochs, cosine decay to 1% of the lr",
             {**SEQ, "train.epochs": 10}),
    Scenario("healthy_rare_learned", "sequence", "healthy",
             "a rare class that is learned: done on 2% of samples with done weight 49 = (1-p)/p",
             {**SEQ, "data.sampling": "balanced", "data.balanced_done_rate": 0.02, "loss.done_weight": 49.0}),
    Scenario("healthy_low_lr", "sequence", "healthy", "a slow start: lr 1e-3 with a long warm-up",
             {**SEQ, "optim.lr": 1e-3, "optim.warmup_steps": 120}),
    Scenario("healthy_constant_lr", "sequence", "healthy", "constant lr 2e-3, batch 16",
             {**SEQ, "optim.schedule": "constant", "optim.lr": 2e-3, "train.batch_size": 16,
              "data.train_size": 1024}),
    Scenario("healthy_mse", "sequence", "healthy", "the seed's MSE position loss with done weight 3",
             {**SEQ, "loss.kind": "mse"}),
    Scenario("healthy_lanes", "lanes", "healthy", "fixed Bezier loss (configs/lanes.yaml)", LANES),
    Scenario("healthy_lanes_negative", "lanes", "healthy",
             "a converging uncertainty-weighted loss that goes negative: the seed's loss at lr 5e-3, every "
             "term falling (only a note is expected)",
             {**LANES, "optim.lr": 5e-3}, config="configs/lanes_seed_broken.yaml"),
    Scenario("healthy_lanes_low_variance", "lanes", "healthy",
             "targets that vary little: all four lanes present, nearly straight, lane width and horizon "
             "almost fixed (lane_prob 1, curvature 0.02, lane_width [0.27, 0.29], horizon [0.37, 0.38])",
             {**LANES, "data.lane_prob": 1.0, "data.min_lanes": 4, "data.curvature": 0.02,
              "data.lane_width": "[0.27, 0.29]", "data.horizon": "[0.37, 0.38]"}),
    Scenario("healthy_puzzle", "puzzle", "healthy", "CIoU + SmoothL1 on a center+size heatmap head (the fix)",
             PUZZLE),
    Scenario("healthy_occupancy", "occupancy", "healthy", "focal + dice + mean matching on 0.83% occupancy", OCC),
    Scenario("healthy_occupancy_bce", "occupancy", "healthy",
             "the seed's weighted BCE (pos_weight 10), which over-predicts but learns (docs/occupancy.md)",
             {**OCC, "loss.kind": "weighted_bce"}),
]


# ---------------------------------------------------------------- running

@dataclass
class RunResult:
    scenario: str
    seed: int
    run_dir: str
    ok: bool
    seconds: float
    findings: list[dict] = field(default_factory=list)
    error: str = ""


def argv_for(sc: Scenario, seed: int, out: Path, scale: str = "full") -> list[str]:
    args = [sys.executable, "-m", "runner.train", "--config", sc.config, "--no-progress",
            f"--out_dir={out / sc.name / f'seed{seed}'}", f"--seed={seed}"]
    overrides = {**sc.overrides, **(TINY.get(sc.task, {}) if scale == "tiny" else {})}
    return args + [f"--{k}={v}" for k, v in overrides.items()]


def run_one(sc: Scenario, seed: int, out: Path, reuse: bool, scale: str = "full") -> RunResult:
    base = out / sc.name / f"seed{seed}"
    done = sorted(base.glob("*/summary.json")) if base.exists() else []
    t0 = time.time()
    if not (reuse and done):
        if base.exists():
            for p in sorted(base.glob("*"), reverse=True):
                subprocess.run(["rm", "-rf", str(p)], check=False)
        base.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
               "PYTHONPATH": str(ROOT)}
        with open(base / "train.log", "w") as log:
            proc = subprocess.run(argv_for(sc, seed, out, scale), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        done = sorted(base.glob("*/summary.json"))
        if proc.returncode != 0 and not done:
            return RunResult(sc.name, seed, str(base), False, time.time() - t0,
                             error=(base / "train.log").read_text()[-400:])
    summary = json.loads(done[-1].read_text())
    return RunResult(sc.name, seed, str(done[-1].parent), True, time.time() - t0,
                     findings=summary.get("health/findings", []))


def load_rows(run_dir: str) -> tuple[list[dict], list[dict]]:
    rows, evals = [], []
    for line in open(Path(run_dir) / "metrics.jsonl"):
        r = json.loads(line)
        if is_check(r):
            rows.append(r)
        if is_evaluation(r):
            evals.append(r)
    return rows, evals


def warmup_of(run_dir: str) -> int:
    import yaml

    cfg = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    w = cfg["monitor"].get("warmup_steps")
    return int(w if w is not None else cfg["optim"]["warmup_steps"])


def replayed_findings(run_dir: str, recorded: list[dict]) -> list[dict]:
    """The findings the current rules give on a finished run's logged statistics (python -m runner.health
    --replay): lets runs made before a rule change be scored with the rules as they are now. Recorded
    findings after the last logged row (the trainer's non-finite stop) cannot be replayed and are kept."""
    from runner.health.__main__ import read_run, rules_config
    from runner.health.replay import replay

    rows, summary, config, _ = read_run(Path(run_dir))
    cfg, warm = rules_config(config)
    last = max((r.get("_step", 0) for r in rows), default=-1)
    found = [f.to_dict() for f in replay(rows, cfg, warm, summary.get("health/class_balance") or None).findings]
    return found + [f for f in recorded if f["step"] > last]


def score(sc: Scenario, res: RunResult, use_replay: bool = False) -> dict[str, Any]:
    """Per-run verdict: detected / false positive / lag in checks (or evaluations) from onset."""
    if use_replay:
        res.findings = replayed_findings(res.run_dir, res.findings)
    real = [f for f in res.findings if f["severity"] != "note"]
    out: dict[str, Any] = {"scenario": sc.name, "seed": res.seed, "kind": sc.kind, "run_dir": res.run_dir,
                           "findings": [(f["detector"], f["subject"], f["step"]) for f in real],
                           "notes": [f["title"] for f in res.findings if f["severity"] == "note"]}
    if sc.kind == "healthy":
        out["false_positive"] = bool(real)
        return out
    rows, evals = load_rows(res.run_dir)
    warmup = warmup_of(res.run_dir)
    summary = json.loads((Path(res.run_dir) / "summary.json").read_text())
    onset = sc.oracle(rows, evals, warmup, summary) if sc.oracle else None
    out["produced"] = onset is not None
    hits = sorted((f for f in real if f["detector"] in sc.expect), key=lambda f: f["step"])
    out["detected"] = bool(hits)
    if hits:
        unit = onset[1] if onset else ("evaluations" if sc.failure in EVAL_LEVEL else "checks")
        seq = evals if unit == "evaluations" else rows
        index = [next((i for i, r in enumerate(seq) if r["_step"] >= f["step"]), max(0, len(seq) - 1)) for f in hits]
        out["alert_step"], out["alert_index"], out["unit"] = hits[0]["step"], index[0], unit
        if onset is not None:
            out["onset_index"] = onset[0]
            after = [i for i in index if i >= onset[0]]
            out["early_alerts"] = len(index) - len(after)  # alerts on an earlier episode the oracle does not count
            if after:
                out["lag"] = after[0] - onset[0]
    return out


# ---------------------------------------------------------------- overhead (one run, monitor on/off interleaved)

def measure_overhead(out: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """One in-process training run in which the monitor works on every other log interval.

    Interval wall time (from one on_log to the next) includes the steps and the previous check's hooks;
    intervals are attributed to whether the monitor worked at the check that opened them. Intervals
    that contain an evaluation are left out. The monitor's own hook time is also timed directly.
    """
    import runner.train as train
    from runner.config import load_config
    from runner.health.monitor import HealthMonitor

    log: dict[str, list] = {"t": [], "on": [], "epoch_end": []}

    class Interleaved(HealthMonitor):
        active = True

        def on_log(self, trainer, step, values):
            log["t"].append(time.perf_counter())
            log["on"].append(self.active)
            out = super().on_log(trainer, step, values) if self.active else None
            self.active = not self.active
            return out

        def on_epoch_end(self, trainer, epoch, metrics):
            log["epoch_end"].append(len(log["t"]))
            t0 = time.perf_counter()
            out = super().on_epoch_end(trainer, epoch, metrics)
            log.setdefault("epoch_hook", []).append(time.perf_counter() - t0)
            return out

    monitors = []

    def factory(*a, **kw):
        m = Interleaved(*a, **kw)
        monitors.append(m)
        return m

    train.HealthMonitor = factory
    cfg = load_config(ROOT / "configs/sequence_demo.yaml", {**overrides, "out_dir": str(out / "overhead")})
    t0 = time.perf_counter()
    train.fit(cfg, progress=False)
    total = time.perf_counter() - t0
    m = monitors[0]
    t, on = log["t"], log["on"]
    skip = set(log["epoch_end"])  # the interval that follows an evaluation holds it
    on_iv, off_iv = [], []
    for i in range(1, len(t)):
        if i in skip:
            continue
        (on_iv if on[i - 1] else off_iv).append(t[i] - t[i - 1])
    pairs = [(t[i] - t[i - 1]) / (t[i + 1] - t[i]) for i in range(1, len(t) - 1)
             if on[i - 1] and i not in skip and i + 1 not in skip]
    per_log = m.timings["log"]
    return {
        "intervals_on": len(on_iv), "intervals_off": len(off_iv),
        "median_interval_on_s": statistics.median(on_iv), "median_interval_off_s": statistics.median(off_iv),
        "ab_ratio": statistics.median(on_iv) / statistics.median(off_iv) - 1,
        "pairwise_ratio": statistics.median(pairs) - 1 if pairs else math.nan,
        "monitor_seconds": m.seconds, "monitor_calls": m.calls, "run_seconds": total,
        "check_hook_ms": 1000 * statistics.median(per_log), "check_hook_max_ms": 1000 * max(per_log),
        "epoch_hook_ms": 1000 * statistics.mean(m.timings["epoch"]),
        "fit_start_ms": 1000 * sum(m.timings["fit_start"]),
        "step_ms": 1000 * statistics.median(off_iv) / cfg.train.log_every, "steps_per_check": cfg.train.log_every,
        "check_ratio": statistics.median(per_log) / statistics.median(off_iv),
        "direct_ratio": (sum(per_log) + sum(m.timings["epoch"])) / total,
        "checks": len(per_log),
    }


# ---------------------------------------------------------------- report

def report(scored: list[dict], skipped: list[str], overhead: dict | None) -> str:
    lines = ["# Health monitor benchmark", ""]
    fails = [s for s in scored if s["kind"] == "failure"]
    healthy = [s for s in scored if s["kind"] == "healthy"]
    by_type: dict[str, list[dict]] = {}
    for s in fails:
        by_type.setdefault(next(sc.failure for sc in SCENARIOS if sc.name == s["scenario"]), []).append(s)
    lines += ["## Recall per failure type", "",
              "| type | scenarios | runs | produced | detected (of produced) | recall | lag median (max) | unit |",
              "|---|---|---|---|---|---|---|---|"]
    tot_p = tot_d = 0
    for ftype, ss in sorted(by_type.items()):
        prod = [s for s in ss if s["produced"]]
        det = [s for s in prod if s["detected"]]
        lags = [s["lag"] for s in det if "lag" in s]
        tot_p += len(prod)
        tot_d += len(det)
        unit = "/".join(sorted({s.get("unit", "") for s in det if s.get("unit")})) or "-"
        lag = f"{statistics.median(lags):g} ({max(lags)})" if lags else "-"
        rec = f"{100 * len(det) / len(prod):.0f}%" if prod else "-"
        names = ", ".join(sorted({s['scenario'] for s in ss}))
        early = sum(1 for s in det if s.get("early_alerts") and "lag" not in s)
        unit += f"; {early} alerted only before the oracle's onset" if early else ""
        lines.append(f"| {ftype} | {names} | {len(ss)} | {len(prod)} | {len(det)} | {rec} | {lag} | {unit} |")
    if tot_p:
        lines.append(f"| **all** | | {len(fails)} | {tot_p} | {tot_d} | **{100 * tot_d / tot_p:.0f}%** | | |")
    lines += ["", "## Healthy runs", "", "| scenario | runs | false positives | findings |", "|---|---|---|---|"]
    for name in sorted({s["scenario"] for s in healthy}):
        ss = [s for s in healthy if s["scenario"] == name]
        fp = [s for s in ss if s["false_positive"]]
        what = "; ".join(f"seed {s['seed']}: {s['findings']}" for s in fp)
        lines.append(f"| {name} | {len(ss)} | {len(fp)} | {what or '-'} |")
    nfp = sum(s["false_positive"] for s in healthy)
    lines.append(f"| **all** | {len(healthy)} | **{nfp}** | |")
    notes = [(s["scenario"], s["seed"], n) for s in scored for n in s.get("notes", [])]
    if notes:
        lines += ["", "Notes (not alerts): " + "; ".join(f"{a} seed {b}: {c}" for a, b, c in notes[:10])]
    missed = [s for s in fails if s["produced"] and not s["detected"]]
    if missed:
        lines += ["", "Missed: " + "; ".join(f"{s['scenario']} seed {s['seed']} (found {s['findings']})"
                                             for s in missed)]
    unproduced = [s for s in fails if not s["produced"]]
    if unproduced:
        lines += ["", "Failure not produced (left out of recall): " +
                  "; ".join(f"{s['scenario']} seed {s['seed']} (found {s['findings']})" for s in unproduced)]
    if skipped:
        lines += ["", "Skipped (task not in this checkout): " + ", ".join(skipped)]
    if overhead:
        o = overhead
        lines += ["", "## Monitor overhead (one run, monitor on/off on alternate log intervals)", "",
                  f"- interval median on {1000 * o['median_interval_on_s']:.1f} ms vs off "
                  f"{1000 * o['median_interval_off_s']:.1f} ms over {o['intervals_on']}/{o['intervals_off']} "
                  f"intervals: A/B ratio {100 * o['ab_ratio']:+.2f}% (pairwise median {100 * o['pairwise_ratio']:+.2f}%)",
                  f"- timed directly: {o['check_hook_ms']:.3f} ms per check (median; max {o['check_hook_max_ms']:.2f} ms) "
                  f"against {o['step_ms']:.1f} ms per step x {o['steps_per_check']} steps per check = "
                  f"{100 * o['check_ratio']:.3f}% of a log interval; {o['epoch_hook_ms']:.1f} ms per evaluation "
                  f"(fixed-batch forward + rules); checks + evaluations = {100 * o['direct_ratio']:.3f}% of the "
                  f"{o['run_seconds']:.1f} s run; once at start {o['fit_start_ms']:.0f} ms (class balance)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="/tmp/health-suite")
    p.add_argument("--only", nargs="*", help="scenario names")
    p.add_argument("--reuse", action="store_true", help="reuse finished runs found under --out")
    p.add_argument("--replay", action="store_true",
                   help="score with the current rules replayed over each run's logged statistics")
    p.add_argument("--scale", choices=["full", "tiny"], default="full",
                   help="tiny: seconds-long versions of the scenarios (the test suite's subset)")
    p.add_argument("--no-overhead", action="store_true")
    p.add_argument("--overhead-only", action="store_true")
    p.add_argument("--list", action="store_true")
    args = p.parse_args(argv)
    if args.list:
        for sc in SCENARIOS:
            print(f"{sc.name:<24} {sc.kind:<8} {sc.failure or '':<16} {sc.task:<10} {sc.about}")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = set(available())
    chosen = [sc for sc in SCENARIOS if not args.only or sc.name in args.only]
    skipped = sorted({sc.name for sc in chosen if sc.task not in tasks})
    chosen = [sc for sc in chosen if sc.task in tasks]
    scored: list[dict] = []
    if not args.overhead_only:
        jobs = [(sc, seed) for seed in range(args.seeds) for sc in chosen]
        t0 = time.time()
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda j: run_one(j[0], j[1], out, args.reuse, args.scale), jobs))
        for (sc, _), res in zip(jobs, results):
            if not res.ok:
                print(f"run {sc.name} seed {res.seed} failed: {res.error}", file=sys.stderr)
                continue
            scored.append(score(sc, res, args.replay))
        print(f"{len(jobs)} runs in {time.time() - t0:.0f} s", file=sys.stderr)
    overhead = None
    if not args.no_overhead and "sequence" in tasks:
        overhead = measure_overhead(out, {"train.epochs": 3, "viz.n_samples": 0, "early_stop.enabled": False,
                                          "checkpoint.upload": False})
    text = report(scored, skipped, overhead)
    (out / "results.json").write_text(json.dumps({"runs": scored, "overhead": overhead, "skipped": skipped},
                                                 indent=1, default=str))
    (out / "report.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
