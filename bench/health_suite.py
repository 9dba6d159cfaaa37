"""Health monitor benchmark, decided by outcome: recall per failure family, false positives on healthy
runs, lag from onset to alert, whether the finding named the right cause, and the monitor's overhead.

    python bench/health_suite.py --scale small --seeds 3 --holdout 1     # the suite (small, CPU)
    python bench/health_suite.py --seeds 1 --only rare_done healthy_default
    python bench/health_suite.py --overhead-only
    python bench/health_suite.py --list

Every run is an ordinary `python -m runner.train` on a real task. Loss-setting failures are config
settings; data and code bugs are wrappers applied from outside the product (bench/bugs.py wraps the
task's datasets or patches the optimizer). Whether a failure was produced, and whether a healthy run is
healthy, is decided by bench/outcome.py from the finished run's validation outcome against the task's
trivial baseline; it imports nothing from runner.health and shares no threshold with the monitor.
Healthy runs that do not beat the baseline clearly are reported and left out of the false-positive count
(they are not known to be healthy). Every bug is present from the start, so the onset is the first
check (or evaluation) at which any rule may judge (after the warm-up); lag = alert index - onset index,
in checks for step-level findings and in evaluations for evaluation-level ones. Overfitting starts after
the run's best validation epoch (outcome.py's overfit_onset), so its lag is counted from there. The right cause: the
cause the first alert names (its `cause`: the evidence-supported cause key, or its detector) is one the
family's scenario lists.

Seeds from --holdout on (the last seeds) are scored separately as held out.

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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import outcome  # noqa: E402  (bench/outcome.py: imports nothing from runner.health)
from runner.tasks import available  # noqa: E402

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
PRESETS = {"sequence": SEQ, "lanes": LANES, "puzzle": PUZZLE, "occupancy": OCC}
# --scale small: each task's preset shrunk to seconds-to-tens-of-seconds on one CPU core; a scenario's own
# settings (Scenario.own) are applied on top
SMALL = {
    "sequence": {**SEQ, "data.image_size": 32, "data.min_objects": 2, "data.max_objects": 4, "data.train_size": 512,
                 "data.val_size": 64, "model.width": 12, "train.batch_size": 16, "train.log_every": 8,
                 "train.epochs": 6, "optim.lr": 1e-2, "optim.warmup_steps": 16},
    # lanes and occupancy: long enough that the healthy presets beat the trivial baseline clearly (measured:
    # lanes 384 x 4 epochs and occupancy 256 x 3 epochs at lr 3e-3 did not; 768 x 8 and 512 x 6 at lr 1e-2 do)
    "lanes": {**LANES, "data.train_size": 768, "data.val_size": 64, "train.epochs": 8, "train.log_every": 6,
              "optim.warmup_steps": 12},
    "puzzle": {**PUZZLE, "data.train_size": 384, "data.val_size": 64, "train.epochs": 4, "train.log_every": 6,
               "optim.warmup_steps": 12},
    "occupancy": {**OCC, "data.train_size": 512, "data.val_size": 32, "train.epochs": 6, "optim.warmup_steps": 12,
                  "optim.lr": 1e-2},
}
SEQ_TINY_TRAIN = {**SEQ, "data.train_size": 8, "train.batch_size": 4, "train.epochs": 60, "optim.schedule": "constant",
                  "optim.weight_decay": 0.0, "optim.warmup_steps": 10, "data.val_size": 128, "model.width": 48,
                  "loss.kind": "mse"}


EVAL_LEVEL = {"rare_class", "overfitting", "baseline", "data", "collapse_val"}
# the detectors that name each outcome failure (bench/outcome.py), for "the first alert names a confirmed failure";
# worse_than_baseline is left out: it confirms any finding about a model that did not learn
OUTCOME_DETECTORS = {"identical": {"collapse"}, "class_never_predicted": {"rare_class", "sparse_collapse"},
                     "overfit": {"overfitting"}, "nonfinite": {"gradients"}}


@dataclass
class Scenario:
    name: str
    task: str
    kind: str  # failure | healthy
    about: str  # how it is produced, and the seed it mirrors
    overrides: dict[str, Any]
    failure: str | None = None  # failure family
    # the causes a first finding may name to be right: a finding's `cause` (runner/health/advice.py's key for the
    # cause its evidence supports; the detector's name when it has only one). Widened in session 4 where
    # another finding's text names the cause as well: huge_lr + collapse (a learning rate too high for a
    # saturating head), no_spatial_term + vanishing_zero (its loss term has weight 0), puzzle_giou + collapse (the
    # seed's own symptom, one box for every input, whose causes name GIoU on corners). Session 5, before any
    # run was scored with causes: a collapse whose evidence says the model ignores varying inputs
    # (inputs_ignored) stands with collapse; data and code bugs name their own cause, not the detector that
    # found it (constant inputs: inputs_constant, whether the data rule or the collapse rule says it; wrong
    # targets: baseline or mean_target; empty labels: mostly_empty).
    expect: tuple[str, ...] = ()
    bug: str | None = None  # bench/bugs.py wrapper
    config: str = ""

    own: dict[str, Any] = field(default_factory=dict)  # the scenario's settings beyond its task's preset

    def __post_init__(self):
        self.config = self.config or {"sequence": "configs/sequence_demo.yaml"}.get(self.task, f"configs/{self.task}.yaml")
        preset = PRESETS.get(self.task, {})
        self.own = {k: v for k, v in self.overrides.items() if preset.get(k, object()) != v}


SCENARIOS: list[Scenario] = [
    # ---------------- failures
    Scenario("rare_done", "sequence", "failure",
             "done on 2% of samples (data.sampling=balanced, balanced_done_rate=0.02) with the seed's "
             "unweighted done BCE (loss.done_weight=1): seed 003, done never predicted",
             {**SEQ, "data.sampling": "balanced", "data.balanced_done_rate": 0.02, "loss.done_weight": 1.0},
             "rare_class", ("rare_class",)),
    Scenario("rare_done_1pct", "sequence", "failure",
             "done on 1% of samples with the seed's unweighted done BCE: as rare_done, rarer (the model learns "
             "done at 2% in most seeds, so rarity alone produces the failure only in some)",
             {**SEQ, "data.sampling": "balanced", "data.balanced_done_rate": 0.01, "loss.done_weight": 1.0},
             "rare_class", ("rare_class",)),
    Scenario("huge_lr", "sequence", "failure",
             "a huge learning rate (optim.lr=10, 3000x the preset): gradient explosion and dead heads",
             {**SEQ, "optim.lr": 10.0}, "gradients", ("nonfinite", "explosion", "vanishing", "vanishing_zero",
                                                     "collapse", "inputs_ignored")),
    Scenario("overfit_tiny_train", "sequence", "failure",
             "a tiny training set (8 samples, 60 epochs, no weight decay): seed 003, best val loss early, "
             "then rising while train loss falls",
             SEQ_TINY_TRAIN, "overfitting", ("overfitting",)),
    Scenario("no_spatial_term", "sequence", "failure",
             "the position term weighted to zero (loss.spatial_weight=0), seed 000's end state: the model "
             "outputs one position for every input",
             {**SEQ, "loss.spatial_weight": 0.0}, "collapse", ("collapse", "inputs_ignored", "vanishing_zero",
                                                                  "vanishing")),
    Scenario("no_done_term", "sequence", "failure",
             "the done term weighted to zero (loss.done_weight=0): no gradient reaches the done head",
             {**SEQ, "loss.done_weight": 0.0}, "gradients", ("vanishing_zero", "vanishing")),
    Scenario("nan_lr", "sequence", "failure",
             "an absurd learning rate without clipping (optim.lr=1e6, train.grad_clip=0): non-finite gradients",
             {**SEQ, "optim.lr": 1e6, "train.grad_clip": 0.0, "optim.warmup_steps": 0}, "gradients",
             ("nonfinite", "explosion")),
    Scenario("lanes_uncertainty", "lanes", "failure",
             "the seed's learnable uncertainty weights (configs/lanes_seed_broken.yaml, lr 2e-2): the "
             "smoothness weight runs away and the existence term is switched off (seed 000); constant lr and "
             "8 epochs (512 steps) so that the run gets where the config's 1152 cosine steps do",
             {**LANES, "optim.schedule": "constant", "train.epochs": 8}, "loss_weighting", ("loss_weighting",), config="configs/lanes_seed_broken.yaml"),
    Scenario("puzzle_giou", "puzzle", "failure",
             "the seed's GIoU-only loss on x1y1x2y2 through a sigmoid head (loss.kind=giou, model.head=regress, "
             "model.box_format=xyxy): seed 002, position loss stuck at 1.000",
             {**PUZZLE, "loss.kind": "giou", "model.head": "regress", "model.box_format": "xyxy"}, "stuck_loss",
             ("stuck_loss", "collapse", "inputs_ignored")),
    Scenario("puzzle_hot_sigmoid", "puzzle", "failure",
             "a too-high learning rate for a sigmoid box head (model.head=regress, box_format=xyxy, lr 5e-2): "
             "seed 002, every input gets the same corner box",
             {**PUZZLE, "model.head": "regress", "model.box_format": "xyxy", "optim.lr": 5e-2}, "collapse",
             ("collapse", "inputs_ignored")),
    Scenario("occ_pos_weight", "occupancy", "failure",
             "weighted BCE on 0.83% occupied voxels with a mis-set positive weight (loss.kind=weighted_bce, "
             "pos_weight=0.01): seed 004, probabilities sink and no voxel reaches 0.5",
             {**OCC, "loss.kind": "weighted_bce", "loss.pos_weight": 0.01}, "sparse_collapse",
             ("sparse_collapse",)),
    Scenario("occ_empty_labels", "occupancy", "failure",
             "the seed's weighted BCE (pos_weight 10) on labels that came out empty for 95% of scenes "
             "(data.empty_label_fraction=0.95, seed 004's UAVScenes note): the model predicts empty",
             {**OCC, "loss.kind": "weighted_bce", "data.empty_label_fraction": 0.95}, "sparse_collapse",
             ("sparse_collapse", "mostly_empty")),
    # ---------------- data and code bugs (bench/bugs.py wrappers; present from the start)
    *[Scenario(f"{bug}_{task}", task, "failure", about, PRESETS[task], family, expect, bug=bug)
      for bug, family, expect, about, tasks in (
          ("constant_inputs", "inputs_constant", ("inputs_constant",),
           "every sample's input replaced by the first sample's (both splits)", ("sequence", "lanes", "occupancy")),
          ("zeroed_inputs", "inputs_constant", ("inputs_constant",), "every input zeroed (both splits)",
           ("sequence", "puzzle")),
          ("shuffled_targets", "wrong_targets", ("baseline", "mean_target"),
           "training inputs paired with another sample's targets (validation right)", ("sequence", "lanes")),
          ("class_missing", "class_missing", ("class_split",),
           "the done class dropped from the training split only (a labelling filter)", ("sequence",)),
          ("preprocessing_mismatch", "preprocessing", ("preprocessing",),
           "validation inputs x 255 (0..255), training inputs 0..1", ("sequence", "lanes", "puzzle")),
          ("target_scale", "target_scale", ("baseline", "collapse", "inputs_ignored", "stuck_loss"),
           "regression targets x 100 (pixels instead of [0, 1]) in both splits", ("sequence", "lanes")),
          ("not_stepping", "not_training", ("not_training",), "optimizer.step() does nothing",
           ("sequence", "lanes", "puzzle", "occupancy")),
          ("frozen", "not_training", ("not_training",), "no parameter ever receives a gradient (all frozen)",
           ("sequence", "occupancy")),
      ) for task in tasks],
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
    Scenario("healthy_batch2", "sequence", "healthy", "batch size 2 (run_sequential_attention.sh's), clipped",
             {**SEQ, "train.batch_size": 2, "data.train_size": 128, "train.log_every": 8}),
    Scenario("healthy_batch4", "sequence", "healthy", "batch size 4", {**SEQ, "train.batch_size": 4,
                                                                          "data.train_size": 192}),
    Scenario("healthy_log_every_1", "sequence", "healthy", "a check at every step", {**SEQ, "train.log_every": 1}),
    Scenario("healthy_flat_tail", "sequence", "healthy",
             "a long flat converged tail: twice the epochs, constant low lr after the first half",
             {**SEQ, "train.epochs": 12, "optim.schedule": "cosine", "optim.min_lr_ratio": 0.001}),
    Scenario("healthy_balanced", "sequence", "healthy", "balanced done sampling (data.sampling=balanced)",
             {**SEQ, "data.sampling": "balanced"}),
    Scenario("healthy_unbalanced_weighted", "sequence", "healthy",
             "done on 5% of samples with done weight (1-p)/p = 19", {**SEQ, "data.sampling": "balanced",
                                                                    "data.balanced_done_rate": 0.05,
                                                                    "loss.done_weight": 19.0}),
    Scenario("healthy_lanes_batch4", "lanes", "healthy", "lanes at batch size 4", {**LANES, "train.batch_size": 4,
                                                                                    "data.train_size": 128}),
    Scenario("healthy_puzzle_log1", "puzzle", "healthy", "puzzle with a check at every step",
             {**PUZZLE, "train.log_every": 1}),

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
    head = [sys.executable, str(ROOT / "bench" / "bugs.py"), sc.bug] if sc.bug else [sys.executable, "-m", "runner.train"]
    args = head + ["--config", sc.config, "--no-progress", f"--out_dir={out / sc.name / f'seed{seed}'}", f"--seed={seed}"]
    if scale == "small":
        overrides = {**SMALL.get(sc.task, {}), **sc.own}
    else:
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


def is_check(record: dict) -> bool:
    """A logged row holding a log interval's values (an epoch-end row at the same step can be both)."""
    return "train/loss" in record or "grad/total" in record or "lr" in record


def is_evaluation(record: dict) -> bool:
    return "epoch/val_loss" in record or "epoch/train_loss" in record


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
    found = [f.to_dict() for f in replay(rows, cfg, warm, summary=summary).findings]
    return found + [f for f in recorded if f["step"] > last]


def score(sc: Scenario, res: RunResult, use_replay: bool = False) -> dict[str, Any]:
    """Per-run verdict from the outcome (bench/outcome.py) and the findings: produced / healthy by outcome,
    detected, right cause, false positive, lag from onset (the first judged check or evaluation)."""
    if use_replay:
        res.findings = replayed_findings(res.run_dir, res.findings)
    real = sorted((f for f in res.findings if f["severity"] != "note"), key=lambda f: f["step"])
    verdict = outcome.judge(res.run_dir)
    out: dict[str, Any] = {"scenario": sc.name, "seed": res.seed, "kind": sc.kind, "run_dir": res.run_dir,
                           "family": sc.failure, "outcome": verdict["failures"],
                           "outcome_evidence": verdict["evidence"],
                           "findings": [(f["detector"], f["subject"], f["step"]) for f in real],
                           "notes": [f["title"] for f in res.findings if f["severity"] == "note"]}
    if sc.kind == "healthy":
        out["healthy_by_outcome"] = verdict["healthy"]
        out["false_positive"] = bool(real) if verdict["healthy"] else None
        return out
    # a run that never evaluated crashed (in these runs: a bench wrapper the task's code path did not accept)
    # (a run stopped on non-finite values before its first evaluation failed by outcome all the same)
    out["produced"] = bool(verdict["failures"]) and ("no_evaluation" not in verdict["failures"]
                                                     or "nonfinite" in verdict["failures"])
    out["detected"] = bool(real)
    if not real:
        return out
    first = real[0]
    named = first.get("cause") or first["detector"]  # runs recorded before findings carried a cause: the detector
    out["right_cause"] = named in sc.expect
    # or the first alert names a failure the outcome confirms (identical predictions -> collapse, ...): a run
    # can fail in more than the injected way (rare done at 2% also left the positions identical in some seeds)
    out["outcome_cause"] = out["right_cause"] or any(
        first["detector"] in OUTCOME_DETECTORS.get(f.split(":")[0], ()) for f in verdict["failures"])
    out["first_finding"] = f"{first['detector']} ({named}): {first['title']}"
    rows, evals = load_rows(res.run_dir)
    warmup = warmup_of(res.run_dir)
    # judged at an evaluation: an evaluation-only rule, or a rule's evaluation channel ("for N evaluations")
    eval_level = (first["detector"] in EVAL_LEVEL or "val" in first["title"]
                  or " evaluation" in first.get("evidence", ""))
    seq = evals if eval_level else [r for r in rows if r["_step"] > warmup]
    out["unit"] = "evaluations" if eval_level else "checks"
    out["alert_step"] = first["step"]
    out["lag"] = next((i for i, r in enumerate(seq) if r["_step"] >= first["step"]), len(seq))
    onset = verdict["evidence"].get("overfit_onset")
    if eval_level and onset and first["detector"] in OUTCOME_DETECTORS["overfit"]:
        # overfitting starts after the best epoch (outcome.py): an alert before it has lag 0
        out["lag"] = max(0, out["lag"] - onset["index"])
    if not eval_level and first["step"] <= warmup:
        out["lag"] = 0
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

def table(scored: list[dict], title: str) -> list[str]:
    fails = [s for s in scored if s["kind"] == "failure"]
    healthy = [s for s in scored if s["kind"] == "healthy"]
    lines = [f"## {title}: recall per failure family", "",
             "| family | scenarios | runs | produced (outcome) | detected | recall | right cause (family's) "
             "| right cause (family's or an outcome failure) | lag median (max) |",
             "|---|---|---|---|---|---|---|---|---|"]
    by: dict[str, list[dict]] = {}
    for s in fails:
        by.setdefault(s["family"], []).append(s)
    tp = td = tc = to = 0
    for fam, ss in sorted(by.items()):
        prod = [s for s in ss if s["produced"]]
        det = [s for s in prod if s["detected"]]
        cause = [s for s in det if s.get("right_cause")]
        ocause = [s for s in det if s.get("outcome_cause")]
        to += len(ocause)
        lags = [s["lag"] for s in det if "lag" in s]
        units = "/".join(sorted({s["unit"][0] for s in det if "unit" in s}))
        tp, td, tc = tp + len(prod), td + len(det), tc + len(cause)
        rec = f"{100 * len(det) / len(prod):.0f}%" if prod else "-"
        lag = f"{statistics.median(lags):g} ({max(lags)}) {units}" if lags else "-"
        names = ", ".join(sorted({s["scenario"] for s in ss}))
        lines.append(f"| {fam} | {names} | {len(ss)} | {len(prod)} | {len(det)} | {rec} | {len(cause)}/{len(det)} "
                     f"| {len(ocause)}/{len(det)} | {lag} |")
    if tp:
        lines.append(f"| **all** | | {len(fails)} | {tp} | {td} | **{100 * td / tp:.0f}%** | "
                     f"**{tc}/{td}** | **{to}/{td}** | |")
    lines += ["", "lag units: c = checks after the warm-up, e = evaluations; onset = the first judged one.", "",
              "| healthy scenario | runs | healthy by outcome | false positives | findings |", "|---|---|---|---|---|"]
    for name in sorted({s["scenario"] for s in healthy}):
        ss = [s for s in healthy if s["scenario"] == name]
        ok = [s for s in ss if s["healthy_by_outcome"]]
        fp = [s for s in ok if s["false_positive"]]
        what = "; ".join(f"seed {s['seed']}: {s['findings']}" for s in fp)
        lines.append(f"| {name} | {len(ss)} | {len(ok)} | {len(fp)} | {what or '-'} |")
    ok = [s for s in healthy if s["healthy_by_outcome"]]
    lines.append(f"| **all** | {len(healthy)} | {len(ok)} | **{sum(bool(s['false_positive']) for s in ok)}** | |")
    missed = [s for s in fails if s["produced"] and not s["detected"]]
    if missed:
        lines += ["", "Missed: " + "; ".join(f"{s['scenario']} seed {s['seed']} (outcome {s['outcome']})"
                                             for s in missed)]
    wrong = [s for s in fails if s.get("detected") and s["produced"] and not s.get("right_cause")]
    if wrong:
        lines += ["", "Wrong cause first: " + "; ".join(f"{s['scenario']} seed {s['seed']}: {s['first_finding']}"
                                                        for s in wrong)]
    unproduced = [s for s in fails if not s["produced"]]
    if unproduced:
        lines += ["", "Not produced by outcome (left out of recall): " +
                  "; ".join(f"{s['scenario']} seed {s['seed']} (found {s['findings']})" for s in unproduced)]
    unhealthy = [s for s in healthy if not s["healthy_by_outcome"]]
    if unhealthy:
        lines += ["", "Healthy scenarios that did not beat the baseline clearly (left out of the false-positive "
                  "count): " + "; ".join(f"{s['scenario']} seed {s['seed']} (outcome {s['outcome'] or 'too close'}"
                                         f", found {s['findings']})" for s in unhealthy)]
    return lines


def report(scored: list[dict], skipped: list[str], overhead: dict | None, holdout: int | None = None) -> str:
    lines = ["# Health monitor benchmark (decided by outcome: bench/outcome.py)", ""]
    if holdout is None:
        lines += table(scored, "All seeds")
    else:
        lines += table([s for s in scored if s["seed"] < holdout], f"Development seeds (< {holdout})")
        lines += [""] + table([s for s in scored if s["seed"] >= holdout], f"Held-out seeds (>= {holdout})")
        lines += [""] + table(scored, "All seeds")
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
                  f"{o['run_seconds']:.1f} s run; once at start {o['fit_start_ms']:.0f} ms (class balance, input "
                  f"statistics, baseline)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0,
                   help="run seeds first-seed .. seeds-1 (held-out seeds run apart, after the rules are final)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="/tmp/health-suite")
    p.add_argument("--only", nargs="*", help="scenario names")
    p.add_argument("--reuse", action="store_true", help="reuse finished runs found under --out")
    p.add_argument("--replay", action="store_true",
                   help="score with the current rules replayed over each run's logged statistics")
    p.add_argument("--scale", choices=["full", "small", "tiny"], default="full",
                   help="small: every task's preset shrunk for a CPU; tiny: the test suite's subset")
    p.add_argument("--holdout", type=int, default=None,
                   help="seeds from this one on are scored separately as held out")
    p.add_argument("--score-only", action="store_true",
                   help="score the finished runs under --out without starting any (an interrupted suite)")
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
    # failure and healthy scenarios alternate, so that an interrupted suite has scored both kinds
    fails, oks = [sc for sc in chosen if sc.kind == "failure"], [sc for sc in chosen if sc.kind == "healthy"]
    chosen = [sc for pair in zip(fails, oks) for sc in pair] + fails[len(oks):] + oks[len(fails):]
    scored: list[dict] = []
    if not args.overhead_only:
        jobs = [(sc, seed) for seed in range(args.first_seed, args.seeds) for sc in chosen]
        t0 = time.time()
        if args.score_only:
            jobs = [(sc, seed) for sc, seed in jobs if list((out / sc.name / f"seed{seed}").glob("*/summary.json"))]
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda j: run_one(j[0], j[1], out, args.reuse or args.score_only, args.scale),
                                    jobs))
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
    text = report(scored, skipped, overhead, args.holdout)
    (out / "results.json").write_text(json.dumps({"runs": scored, "overhead": overhead, "skipped": skipped},
                                                 indent=1, default=str))
    (out / "report.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
