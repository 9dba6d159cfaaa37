"""Health rules: small documented rules over the statistics the trainer already logs -> Findings.

A detector sees the two streams the callbacks see, as plain floats (no tensors, no device reads):

  check       every train.log_every steps (Callback.on_log): train/<term>, train/weighted/<term>,
              pred/std_ratio, pred/<r>_mean|_rate|_max, target/<r>_rate, grad/<head>, grad/total,
              lr, loss/sigma_<term> (learnable loss weights) ...
  evaluation  every epoch (Callback.on_epoch_end): epoch/train_loss, epoch/val_loss, val/<term>,
              val/<metric> (e.g. val/done_recall), val/pred/std_ratio, val/target/<r>_rate ...,
              plus health/fixed_std_ratio from the monitor's fixed validation batch.

Every rule is a ratio or a relative change that must persist (`patience` consecutive checks, or
`eval_patience` evaluations) before it fires, and fires once per episode: an episode ends after
`clear_checks` clean checks, and only then can the same subject fire again. The thresholds are
the MonitorConfig fields (runner/config.py); docs/health.md documents every rule.

The rules replay identically from metrics.jsonl (python -m runner.health RUN_DIR).
"""
from __future__ import annotations

import math
import re
import statistics
from typing import Any

from runner import keys
from runner.config import MonitorConfig
from runner.keys import WEIGHT_PATTERNS, term_key
from runner.health.advice import ADVICE
from runner.health.findings import (MOSTLY_EMPTY, PROB_THRESHOLD, TINY, Detector, Finding, History, Streak, finite, fmt, pct,
                                    status_of)


# ---------------------------------------------------------------- 1. prediction collapse

# a collapsed model whose mean prediction is within this many target stds of the targets' mean predicts the
# average target: the constant a regression loss prefers when the inputs tell it nothing about the targets
# (a model collapsed to a corner box or a saturated head sits a target std or more away)
MEAN_GAP = 0.25
# a model that is still starting gives about the average target first (the constant a regression loss reaches
# first: its bias); predictions that have not spread and sit a target std or more from the targets' mean have
# not even found that: their outputs do not reach the targets (targets on another scale than the head, a
# saturated head, a degenerate minimum such as seed 002's corner box). They get no starting grace, unless the
# gap shrank by the `growth` factor within the patience window (against its largest value over the last
# `patience` checks): that model is still on its way to the targets (targets that vary little put a model that
# has not converged yet many target stds away).
FAR_GAP = 1.0



class PredictionCollapse(Detector):
    """pred/std_ratio (std of the predictions across samples / std of the targets) below
    `collapse_ratio` and not growing by `growth` per check, for `patience` checks after warm-up.
    At evaluations the same rule reads val/pred/std_ratio (with the same patience) and the fixed validation
    batch: health/fixed_std_ratio below `identical_ratio` (identical predictions for different inputs) after
    the warm-up fails at once. The finding names the cause the evidence supports: the fixed inputs
    themselves do not vary (health/fixed_input_spread ~0); every input gets about the average target
    (pred/mean_gap below MEAN_GAP: what a loss does when the inputs carry no information about the targets,
    e.g. inputs paired with the wrong targets); or the inputs vary and the model ignores them."""

    name = "collapse"
    doc = "pred std / target std far below 1 and not recovering; identical predictions on fixed val inputs"

    def __init__(self, cfg, warmup_steps=0):
        super().__init__(cfg, warmup_steps)
        self.prev: dict[str, float] = {}
        self.peak: dict[str, tuple[float, int]] = {}  # key -> (highest ratio so far, its step)
        self.gaps: dict[str, list[float]] = {}  # key -> pred/mean_gap at the last `patience` checks (or evaluations)
        self.start_fixed: float | None = None  # the fixed-input spread of the untrained model (monitor, fit start)
        self.sample_rows: list[list[float]] = []  # set by the monitor: fixed-batch predictions, for evidence
        self.target_rows: list[list[float]] = []

    def far(self, key: str, gap: float | None) -> bool:
        """Records the gap (`gap`: pred/mean_gap) and says whether the predictions sit FAR_GAP target stds or
        more from the targets' mean and are not closing in on it. Closing in: the gap shrank by the `growth`
        factor against its largest value over the last `patience` checks, the window the rule waits over (one
        check back alone lost the grace when the gap paused once on its way, as a held-out healthy lanes run's
        val gap did: 12.5, 4.8, 4.9 target stds, then it spread)."""
        recent = self.gaps.get(key, [])
        closing = finite(gap) and any(g >= self.cfg.growth * gap for g in recent)
        self.gaps[key] = (recent + ([gap] if finite(gap) else []))[-self.cfg.patience:]
        return finite(gap) and gap >= FAR_GAP and not closing

    def low(self, key: str, ratio: float, limit: float, step: int, far: bool = False) -> bool:
        """Below the limit and not recovering. Growth from below TINY is noise, not recovery; so is growth of
        predictions that are `far` from the targets and not closing in: outputs that grow without getting nearer
        the targets are not on their way to them (targets x 100 against a [0, 1] head: the spread grew 3x per
        check, from 0.1% to 0.4% of the targets', while the gap stayed at 2.0-2.2 target stds)."""
        prev = self.prev.get(key)
        self.prev[key] = ratio
        if ratio > self.peak.get(key, (-1.0, 0))[0]:
            self.peak[key] = (ratio, step)
        if ratio >= limit:
            return False
        recovering = (not far and prev is not None and ratio > TINY
                      and ratio >= self.cfg.growth * max(prev, TINY / 2))
        return not recovering

    def patience(self, key: str, limit: float, far: bool = False) -> int:
        """A model that has never spread its predictions may still be starting: twice the patience, unless its
        predictions are `far` from the targets and not closing in (a starting model passes through the average
        target first). One whose predictions spread and then fell together has collapsed: the plain patience.
        (Measured, docs/health.md: a finding at the plain patience for every never-spread model alerted in
        healthy runs whose predictions took 4-8 checks after the warm-up to spread; so did one at the plain
        patience for never-spread predictions that were flat or falling over the window: a healthy batch-4
        sequence run sat at 0.012-0.017 for 4 checks after the warm-up, then spread.)"""
        if self.peak.get(key, (0.0, 0))[0] >= limit or far:
            return self.cfg.patience
        return 2 * self.cfg.patience

    def history(self, key: str, limit: float) -> str:
        peak, at = self.peak.get(key, (0.0, 0))
        return f"fell from {fmt(peak)} at step {at}" if peak >= limit else f"never above {limit} since the start"

    def check(self, step, epoch, values):
        ratio = values.get("pred/std_ratio")
        if not finite(ratio) or values.get("gt/std", 1.0) < 1e-8:  # constant targets: nothing to compare
            return []
        key, limit = "pred/std_ratio", self.cfg.collapse_ratio
        # probabilities of a sparse target that collapsed with none predicted positive: the sparse rule's
        far = self.far(key, values.get("pred/mean_gap"))
        holds = self.low(key, ratio, limit, step, far) and self.warm(step) and predicted_empty(values) is None
        s = self.judge("predictions", "train", holds, step, epoch, self.patience(key, limit, far))
        if not s:
            return []
        ev = (f"pred std {fmt(values.get('pred/std', math.nan))} vs gt std {fmt(values.get('gt/std', math.nan))} "
              f"(ratio {fmt(ratio)} < {limit}) for {s.count} checks since step {s.onset_step} "
              f"({self.history(key, limit)}); "
              f"pred range [{fmt(values.get('pred/min', math.nan))}, {fmt(values.get('pred/max', math.nan))}]")
        gap = values.get("pred/mean_gap")
        if finite(gap):
            ev += f"; pred mean {fmt(gap)} target std from the targets' mean"
        causes, fixes, cause = self.explain(values)
        return [self.finding("failed", "predictions", step, epoch,
                             f"prediction collapse: pred/std_ratio {fmt(ratio)}", ev, causes, fixes, s,
                             {"pred/std_ratio": ratio}, cause=cause)]

    def evaluation(self, step, epoch, metrics):
        ratio = metrics.get("val/pred/std_ratio")
        fixed = metrics.get("health/fixed_std_ratio")
        if metrics.get("val/gt/std", 1.0) < 1e-8:
            ratio = None  # constant targets: nothing to compare
        far = self.far("val/pred/std_ratio", metrics.get("val/pred/mean_gap"))
        low_val = finite(ratio) and self.low("val/pred/std_ratio", ratio, self.cfg.collapse_ratio, step, far)
        low_fixed = finite(fixed) and self.low("health/fixed_std_ratio", fixed, self.cfg.identical_ratio, step)
        # Identical predictions for different inputs, after the warm-up, fail at the first evaluation that shows
        # them when the evidence says the model will not start spreading them: the inputs do not vary, or the
        # spread fell below the one the untrained model had at fit start (outputs pulled together). A model
        # whose outputs have simply not spread yet (still at or above its starting spread) gets the patience.
        spread = metrics.get("health/fixed_input_spread")
        start = self.start_fixed
        now = low_fixed and self.warm(step) and (
            (finite(spread) and spread < self.cfg.identical_ratio)
            or (finite(start) and fixed * self.cfg.growth < start))
        s = self.judge("predictions", "identical", now, step, epoch, 1)
        identical = finite(fixed) and fixed < self.cfg.identical_ratio
        if not s:
            holds = (low_val or low_fixed) and self.warm(step)
            s = self.judge("predictions", "val", holds, step, epoch,
                           self.patience("val/pred/std_ratio", self.cfg.collapse_ratio, far))
        if not s:
            return []
        parts = []
        if finite(ratio):
            parts.append(f"val pred std {fmt(metrics.get('val/pred/std', math.nan))} vs gt std "
                         f"{fmt(metrics.get('val/gt/std', math.nan))} (ratio {fmt(ratio)})")
        if finite(fixed):
            parts.append(f"{len(self.sample_rows) or 'the'} fixed val inputs give predictions whose spread is "
                         f"{fmt(fixed)} of the targets'")
            rows = self.sample_rows[:3]
            if rows:
                parts.append("; ".join(f"sample {i}: pred ({', '.join(f'{v:.3f}' for v in r[:4])})"
                                       for i, r in enumerate(rows)))
        if finite(fixed) and finite(self.start_fixed):
            parts.append(f"(the untrained model's spread at fit start was {fmt(self.start_fixed)})")
        if finite(spread):
            parts.append(f"the fixed val inputs themselves vary by {fmt(spread)} across the batch (std across "
                         f"samples / std of all their values)")
        ev = "; ".join(parts) + f" for {s.count} evaluation{'s' if s.count > 1 else ''} since epoch {int(s.onset_epoch)}"
        title = ("identical predictions for different val inputs" if identical
                 else f"val predictions collapsed: pred/std_ratio {fmt(ratio)}")
        gap = metrics.get("val/pred/mean_gap")
        if finite(gap):
            ev += f"; val pred mean {fmt(gap)} target std from the targets' mean"
        causes, fixes, cause = self.explain(metrics, "val/")
        return [self.finding("failed", "predictions", step, epoch, title, ev, causes, fixes, s,
                             {"val/pred/std_ratio": ratio if finite(ratio) else math.nan,
                              "health/fixed_std_ratio": fixed if finite(fixed) else math.nan,
                              "health/fixed_input_spread": spread if finite(spread) else math.nan}, cause=cause)]

    def explain(self, values, prefix: str = "") -> tuple[list[str], list[str], str]:
        """(causes, fixes, cause key) the evidence supports: inputs that do not vary (the fixed inputs' spread,
        at evaluations); every input given about the average target (the loss's best answer when the inputs
        carry no information about the targets); or a model that ignores inputs that vary (loss or optimization)."""
        spread = values.get("health/fixed_input_spread")
        if finite(spread) and spread < self.cfg.identical_ratio:
            return ADVICE["inputs_constant"].causes, ADVICE["inputs_constant"].fixes, "inputs_constant"
        gap = values.get(prefix + "pred/mean_gap")
        if finite(gap) and gap < MEAN_GAP:
            adv = ADVICE["mean_target"].format(gap=fmt(gap))
            return adv.causes + self.causes(values), adv.fixes + ADVICE["collapse"].fixes, "mean_target"
        causes, fixes = self.causes(values), ADVICE["collapse"].fixes
        if finite(gap) and gap >= FAR_GAP:  # the outputs do not reach the targets: say so first (the key stays)
            lo, hi, std = (values.get(prefix + k) for k in ("pred/min", "pred/max", "gt/std"))
            known = all(finite(x) for x in (lo, hi, std))
            # every prediction within less than one target std: the outputs live on another scale than the targets
            # (targets x 100 against a [0, 1] head: [0.56, 0.94] vs std 23); a wider range held away from the targets
            # is a saturated head or a degenerate constant (seed 002's corner box: [0, 1] vs std 0.28)
            if known and hi - lo < std:
                adv = ADVICE["out_of_scale"].format(gap=fmt(gap), lo=fmt(lo), hi=fmt(hi), std=fmt(std))
            else:
                span = f" (predictions in [{fmt(lo)}, {fmt(hi)}], target std {fmt(std)})" if known else ""
                adv = ADVICE["out_of_reach"].format(gap=fmt(gap), span=span)
            causes, fixes = adv.causes + causes, adv.fixes + fixes
        if finite(spread):
            causes = [ADVICE["inputs_ignored"].causes[0].format(spread=fmt(spread))] + causes
        return causes, fixes, "inputs_ignored" if finite(spread) else "collapse"

    def causes(self, values) -> list[str]:
        if any(keys.is_loss_param(k) for k in values):
            c = ADVICE["collapse"].causes
            return [c[2], c[0], c[1]]
        return ADVICE["collapse"].causes[:2]

    def extra_state(self):
        return {"prev": dict(self.prev), "peak": {k: list(v) for k, v in self.peak.items()},
                "start_fixed": self.start_fixed, "gaps": {k: list(v) for k, v in self.gaps.items()}}

    def load_extra_state(self, state):
        self.prev = dict(state.get("prev", {}))
        self.peak = {k: (float(v[0]), int(v[1])) for k, v in state.get("peak", {}).items()}
        self.start_fixed = state.get("start_fixed")
        self.gaps = {k: [float(g) for g in v] for k, v in state.get("gaps", {}).items()}


# ---------------------------------------------------------------- 2. runaway loss weighting

class RunawayWeighting(Detector):
    """Learnable loss weights: a term's share of the total learnable weight (its own weight when it is
    the only one) below `weight_drop` x its share at the first check, still falling over `patience`
    checks, while the term it weights made no new low in those checks: the optimizer is switching the
    term off instead of learning it. A negative total while no share runs away is only a note (the
    log-variance regulariser is negative when sigma < 1)."""

    name = "loss_weighting"
    doc = "a learnable loss weight's share heading to zero while its term stops falling (negative total: a note)"

    def __init__(self, cfg, warmup_steps=0):
        super().__init__(cfg, warmup_steps)
        self.first: dict[str, float] = {}  # term -> first log share
        self.hist = History(cfg.patience + 1)
        self.noted = False

    @staticmethod
    def weights(values) -> dict[str, tuple[str, float]]:
        """term -> (logged key, log effective weight); one entry per term whatever keys it logs."""
        out: dict[str, tuple[str, float]] = {}
        for pat, conv in WEIGHT_PATTERNS:
            for k, v in values.items():
                m = pat.match(k)
                if m and finite(v) and m.group(1) not in out:
                    lw = conv(v)
                    if isinstance(lw, float) and not math.isnan(lw):
                        out[m.group(1)] = (k, lw)
        return out

    def check(self, step, epoch, values):
        weights = self.weights(values)
        if not weights:
            return []
        lws = [lw for _, lw in weights.values()]
        top = max(lws)
        if not math.isfinite(top):
            return []
        lse = top + math.log(sum(math.exp(lw - top) for lw in lws)) if len(lws) > 1 else 0.0
        found, runaway_any = [], False
        for term, (key, lw) in weights.items():
            share = lw - lse  # log of this term's share of the total weight (or of its weight, if alone)
            self.first.setdefault(term, share)
            tkey = term_key(values, term)
            tval = values.get(tkey) if tkey else None
            prev_s, prev_t = self.hist.get("s:" + term), self.hist.get("t:" + term)
            self.hist.push("s:" + term, share)
            if finite(tval):
                self.hist.push("t:" + term, tval)
            p = self.cfg.patience
            drop = share - self.first[term]
            falling = len(prev_s) >= p and share < prev_s[-p]
            stalled = (not finite(tval)) or (len(prev_t) >= p and tval >= min(prev_t[-p:]))
            holds = drop < math.log(self.cfg.weight_drop) and falling and stalled
            runaway_any |= holds
            s = self.judge(term, "train", holds, step, epoch, p)
            if not s:
                continue
            ratio = math.exp(drop)
            if len(lws) > 1:
                big = max(weights, key=lambda t: weights[t][1])
                what = (f"{key} = {fmt(values[key])}: the term's share of the learnable weight is "
                        f"{pct(math.exp(share))}, {fmt(ratio)} x its share at the start, and still falling for "
                        f"{s.count} checks since step {s.onset_step} (largest: {weights[big][0]} = "
                        f"{fmt(values[weights[big][0]])})")
            else:
                what = (f"{key} = {fmt(values[key])}: the term's effective weight is {fmt(ratio)} x its "
                        f"starting value and still falling for {s.count} checks since step {s.onset_step}")
            ev = what + (f"; {tkey} made no new low ({fmt(tval)})" if finite(tval) else "; the term is not logged")
            if finite(values.get("train/loss")) and values["train/loss"] < 0:
                ev += f"; total loss {fmt(values['train/loss'])} (negative)"
            found.append(self.finding(
                "failed", term, step, epoch, f"runaway loss weighting: the {term} term is being switched off", ev,
                ADVICE["loss_weighting"].causes, ADVICE["loss_weighting"].fixes,
                s, {key: values[key], "share_ratio": ratio}))
        total = values.get("train/loss")
        if finite(total) and total < 0 and not runaway_any and not self.noted and not self.active:
            self.noted = True
            terms = ", ".join(f"{key} {fmt(values[key])}" for key, _ in weights.values())
            found.append(self.finding(
                "note", "negative_total", step, epoch,
                "negative total loss from learnable uncertainty weights: expected, not a failure",
                f"train/loss {fmt(total)} at step {step} with no weight's share running away ({terms}): the "
                f"0.5*log sigma^2 regulariser is negative when sigma < 1, so a converging uncertainty-weighted "
                f"loss goes below zero", [], [], None, {"train/loss": total}))
        return found

    def extra_state(self):
        return {"first": dict(self.first), "hist": self.hist.state(), "noted": self.noted}

    def load_extra_state(self, state):
        self.first = dict(state.get("first", {}))
        self.hist.load(state.get("hist", {}))
        self.noted = bool(state.get("noted", False))


# ---------------------------------------------------------------- 3. stuck loss

class StuckLoss(Detector):
    """A loss term flat to `stuck_tol` (relative spread (max - min, the highest and lowest value left out)
    / |median|) over 2 x `patience` checks that also span at least the warm-up's length in steps (the time
    this run gives a model to get going: at log_every 1, six checks are six batches, and an untrained
    4-way classifier sits at ln 4 for that long in healthy runs), all after the warm-up, at a non-zero
    learning rate. A mean over log_every batches that does not move
    by 0.1% for that long is neither being optimized nor reacting to its inputs (batch-to-batch noise
    alone moves a converged loss by more): the term has no usable gradient (seed 002: GIoU at 1.000)."""

    name = "stuck_loss"
    doc = "a loss term flat at one value for many checks while the learning rate is non-zero"

    def __init__(self, cfg, warmup_steps=0):
        super().__init__(cfg, warmup_steps)
        self.window = 2 * cfg.patience  # checks, at least; and at least warmup_steps steps
        # enough checks to span the warm-up even at log_every 1 (a fixed 256 could never span a longer warm-up,
        # and the rule would silently never fire)
        self.hist = History(max(self.window, warmup_steps + 2))
        self.first: dict[str, float] = {}

    @staticmethod
    def terms(values) -> list[str]:
        found = [keys.train_key(t) for t in keys.weighted_terms(values) if keys.train_key(t) in values]
        total = keys.train_key(keys.TOTAL)
        return found or ([total] if total in values else [])

    def check(self, step, epoch, values):
        found = []
        lr = values.get("lr", math.nan)
        self.hist.push("_lr", lr if finite(lr) else 0.0)
        self.hist.push("_step", step)
        for key in self.terms(values):
            v = values[key]
            if not finite(v):
                continue
            first = self.first.setdefault(key, v)
            self.hist.push(key, v)
            # flat over 2 x patience checks: a loss that is only creeping (dice in a sparse task) can be flat
            # to 0.1% over 3 checks by chance (measured: docs/health.md), hardly over 6
            allsteps = self.hist.get("_step")
            n = self.window
            while n < len(allsteps) and allsteps[-1] - allsteps[-n] < self.warmup_steps:
                n += 1
            window, steps = self.hist.get(key)[-n:], allsteps[-n:]
            lrs = self.hist.get("_lr")[-n:]
            holds = False
            # the spread without the window's highest and lowest value: one spike (seed 002's GIoU sat at
            # 0.99896 with an odd 1.0028) does not make a stuck loss move
            core, mid = sorted(window)[1:-1], statistics.median(window)
            if (len(window) == n and steps[0] > self.warmup_steps and steps[-1] - steps[0] >= self.warmup_steps
                    and min(lrs) > 0):
                holds = abs(mid) > 1e-8 and core[-1] - core[0] <= self.cfg.stuck_tol * abs(mid)
            if not self.judge(key, "train", holds, step, epoch, 1):  # the window is the persistence
                continue
            ev = (f"{key} = {fmt(mid)} (spread {fmt(core[-1] - core[0])} without the highest and lowest check, "
                  f"under {self.cfg.stuck_tol:g} of it) for {n} checks since step {steps[0]} at lr {fmt(lr)} "
                  f"(range {fmt(min(window))}..{fmt(max(window))}); first value {fmt(first)}")
            found.append(self.finding(
                "failed", key, step, epoch, f"stuck loss: {key} flat at {mid:.3f}", ev,
                ADVICE["stuck_loss"].causes, ADVICE["stuck_loss"].fixes,
                Streak(n, steps[0], epoch), {key: v, "lr": lr}))
        return found

    def extra_state(self):
        return {"hist": self.hist.state(), "first": dict(self.first)}

    def load_extra_state(self, state):
        self.hist.load(state.get("hist", {}))
        self.first = dict(state.get("first", {}))


# ---------------------------------------------------------------- 4. sparse-target collapse

def rate_names(values: dict[str, float], prefix: str = "") -> list[str]:
    pat = re.compile(rf"^{re.escape(prefix)}target/(.+)_rate$")
    return [m.group(1) for k in values if (m := pat.match(k))]


def predicted_empty(values: dict[str, float]) -> str | None:
    """The sparse target r whose probabilities are the predictions themselves (pred/mean equals pred/<r>_mean
    to 10%: occupancy's voxel probabilities, not the sequence task's positions beside its done probability)
    and of which no element reaches the decision threshold although positives exist (pred/<r>_max < 0.5).
    Predictions that collapse there have collapsed to "empty": the sparse-target rule's finding, whose causes
    (the loss prefers predicting empty) are the ones that apply."""
    mean = values.get("pred/mean")
    for r in rate_names(values):
        m, mx, t = values.get(f"pred/{r}_mean"), values.get(f"pred/{r}_max"), values.get(f"target/{r}_rate")
        if (finite(mean) and finite(m) and finite(mx) and finite(t) and t > 0 and mx < PROB_THRESHOLD
                and abs(mean - m) <= 0.1 * max(abs(m), 1e-12)):
            return r
    return None




class SparseCollapse(Detector):
    """Mean predicted probability of a sparse target below `sparse_ratio` x the target's positive rate
    and not growing, for `patience` checks after warm-up. At evaluations, for targets without a recall
    metric: no validation element reaches the decision threshold (val/pred/<r>_max < 0.5). A target
    with a validation recall (a class per sample, like done) is the rare-class rule's once the first
    evaluation has shown it, or from the start when the task's baseline (Rules.set_baseline) has a recall for it:
    its per-check rate comes from a handful of positives, and a validation split without positives never shows a
    recall (a healthy run's done probabilities sank for 3 checks at 2.5% positives in training and none in
    validation, then it learned the class: health suite, healthy_rare_learned seed 17)."""

    name = "sparse_collapse"
    doc = "mean predicted probability far below the target's positive rate; max never reaches 0.5"

    def __init__(self, cfg, warmup_steps=0):
        super().__init__(cfg, warmup_steps)
        self.prev: dict[str, float] = {}
        self.classes: set[str] = set()  # targets with a validation recall: the rare-class rule's

    def check(self, step, epoch, values):
        found = []
        for r in rate_names(values):
            if r in self.classes:
                continue
            t, m = values.get(f"target/{r}_rate"), values.get(f"pred/{r}_mean")
            if not (finite(t) and finite(m)):
                continue
            prev = self.prev.get(r)
            self.prev[r] = m
            recovering = prev is not None and m >= self.cfg.growth * max(prev, 1e-12)
            sunk = m < self.cfg.sparse_ratio * t
            # or: the predictions are r's probabilities, they do not vary across samples, none reaches 0.5
            ratio = values.get("pred/std_ratio")
            flat = predicted_empty(values) == r and finite(ratio) and ratio < self.cfg.collapse_ratio
            holds = t > 0 and (sunk or flat) and not recovering and self.warm(step)
            s = self.judge(r, "train", holds, step, epoch, self.cfg.patience)
            if s:
                mx, pr = values.get(f"pred/{r}_max", math.nan), values.get(f"pred/{r}_rate", math.nan)
                ev = (f"pred {r} mean {fmt(m)} vs target {r} rate {pct(t)} (ratio {fmt(m / t)}"
                      + (f" < {self.cfg.sparse_ratio}" if sunk else "") + "); "
                      + (f"the probabilities do not vary across samples (pred/std_ratio {fmt(ratio)} < "
                         f"{self.cfg.collapse_ratio}); " if flat else "")
                      + f"predicted positive rate {pct(pr) if finite(pr) else '?'}, max probability {fmt(mx)}"
                      + (f" (never reaches {PROB_THRESHOLD})" if finite(mx) and mx < PROB_THRESHOLD else "")
                      + f", for {s.count} checks since step {s.onset_step}")
                title = (f"sparse-target collapse: {r} predicted {fmt(m / t)}x its true rate" if sunk
                         else f"sparse-target collapse: {r} predicted empty everywhere")
                found.append(self.finding("failed", r, step, epoch, title,
                                          ev, ADVICE["sparse_collapse"].causes, ADVICE["sparse_collapse"].fixes, s,
                                          {f"pred/{r}_mean": m, f"target/{r}_rate": t}))
        return found

    def evaluation(self, step, epoch, metrics):
        found = []
        for r in rate_names(metrics, "val/"):
            if f"val/{r}_recall" in metrics:
                self.classes.add(r)  # from now on at checks too
                continue  # the rare-class rule judges targets that have a recall metric
            t, mx = metrics.get(f"val/target/{r}_rate"), metrics.get(f"val/pred/{r}_max")
            if not (finite(t) and finite(mx)):
                continue
            holds = t > 0 and mx < PROB_THRESHOLD and self.warm(step)
            s = self.judge(r, "val", holds, step, epoch, self.cfg.eval_patience)
            if s:
                m = metrics.get(f"val/pred/{r}_mean", math.nan)
                ev = (f"no validation element reaches probability {PROB_THRESHOLD} (max {fmt(mx)}, mean {fmt(m)}) "
                      f"although {pct(t)} are positive, for {s.count} evaluations since epoch {int(s.onset_epoch)}")
                found.append(self.finding("failed", r, step, epoch, f"sparse-target collapse: {r} never predicted",
                                          ev, ADVICE["sparse_collapse"].causes, ADVICE["sparse_collapse"].fixes, s,
                                          {f"val/pred/{r}_max": mx, f"val/target/{r}_rate": t}))
        return found

    def extra_state(self):
        return {"prev": dict(self.prev), "classes": sorted(self.classes)}

    def load_extra_state(self, state):
        self.prev = dict(state.get("prev", {}))
        self.classes = set(state.get("classes", []))


# ---------------------------------------------------------------- 5. rare class never predicted

class RareClass(Detector):
    """Validation recall of a positive class (val/<r>_recall) at or below `rare_recall` for
    `eval_patience` consecutive evaluations; the class balance measured at start is reported."""

    name = "rare_class"
    doc = "validation recall of a (rare) positive class stuck at or near zero"

    def __init__(self, cfg, warmup_steps=0):
        super().__init__(cfg, warmup_steps)
        self.balance: dict[str, dict[str, float]] = {}  # class -> split -> positive rate (set at fit start)
        self.samples: dict[str, float] = {}  # split -> samples the rates were measured on

    def evaluation(self, step, epoch, metrics):
        found = []
        for key in [k for k in metrics if k.startswith("val/") and k.endswith("_recall") and k.count("/") == 1]:
            r = key[len("val/"):-len("_recall")]
            rec = metrics[key]
            if not finite(rec):
                continue
            holds = rec <= self.cfg.rare_recall and self.warm(step)
            s = self.judge(r, "val", holds, step, epoch, self.cfg.eval_patience)
            if s:
                rates = self.balance.get(r, {})
                p = rates.get("train", metrics.get(f"val/target/{r}_rate", math.nan))
                bal = ", ".join(f"{pct(v)} of {split}" for split, v in rates.items()) or (
                    f"{pct(p)} of val" if finite(p) else "unknown")
                mx = metrics.get(f"val/pred/{r}_max")
                ev = (f"val {r} recall {fmt(rec)} for {s.count} evaluations since epoch {int(s.onset_epoch)}; "
                      f"class balance measured at start: {r} is {bal}"
                      + (f"; max predicted {r} probability {fmt(mx)}" if finite(mx) else ""))
                split = rarer_split(rates, self.samples)
                if split:  # present in one split, absent or far rarer in the other: labels, not imbalance
                    adv = ADVICE["class_split"].format(name=r, split=split, rates=bal)
                    found.append(self.finding(
                        "warning", r, step, epoch, f"{r} labels differ between splits: recall {fmt(rec)}", ev,
                        adv.causes, adv.fixes, s, {key: rec, "positive_rate": p}, cause="class_split"))
                    continue
                fixes = []
                if finite(p) and 0 < p < 0.5:
                    fixes += ADVICE["rare_class_weight"].format(name=r, weight=(1 - p) / p, rate=pct(p)).fixes
                adv = ADVICE["rare_class"].format(rate=pct(p) if finite(p) else "few")
                fixes += adv.fixes
                found.append(self.finding(
                    "warning", r, step, epoch, f"rare class never predicted: val {r} recall {fmt(rec)}", ev,
                    adv.causes, fixes, s, {key: rec, "positive_rate": p}))
        return found

    def extra_state(self):
        return {"balance": {k: dict(v) for k, v in self.balance.items()}}

    def load_extra_state(self, state):
        self.balance = {k: dict(v) for k, v in state.get("balance", {}).items()}


def rarer_split(rates: dict[str, float], samples: dict[str, float] | None = None, factor: float = 4.0,
                level: float = 1e-3) -> str | None:
    """The split in which a class is absent or `factor` times rarer than in another split, if any, and (when
    the splits' sample counts are known) too much rarer for sampling noise: with both splits drawn from one
    distribution, the rarer split's count of positives would be at most this low with probability < `level`
    (Poisson tail at the pooled rate). 1 positive in 512 train samples against 1 in 64 val samples is 8x
    rarer and entirely noise; 0 in 400 against 20 in 64 is not."""
    if len(rates) < 2:
        return None
    lo = min(rates, key=rates.get)
    hi = max(rates, key=rates.get)
    if not (rates[hi] > 0 and rates[lo] * factor < rates[hi]):
        return None
    n_lo, n_hi = (samples or {}).get(lo), (samples or {}).get(hi)
    if not (finite(n_lo) and finite(n_hi) and n_lo > 0 and n_hi > 0):
        return lo
    k_lo, k_hi = rates[lo] * n_lo, rates[hi] * n_hi
    lam = (k_lo + k_hi) / (n_lo + n_hi) * n_lo  # positives expected in the rarer split at the pooled rate
    tail = sum(math.exp(-lam + i * math.log(lam) - math.lgamma(i + 1)) for i in range(int(math.floor(k_lo)) + 1))
    return lo if tail < level else None


# ---------------------------------------------------------------- 6. overfitting

class Overfitting(Detector):
    """Validation loss more than `overfit_margin` above its best and not recovering for `eval_patience`
    consecutive evaluations, with the rise in the validation loss only: the training loss rose by less than
    half as much since the best epoch (it fell, or stayed flat after converging). Both rising together is
    divergence, not overfitting. Recovering is a trend, as the rise is: the val loss fell at each of the last
    two evaluations and its excess over the best shrank by the `growth` factor over them (a noisy evaluation
    passing). One lower evaluation is noise, as one higher one is: counted as recovery, a single drop from a
    val loss far above its best restarted the count (health suite, overfit_tiny_train seed 7: 2.02 best, then 4.76,
    5.13, 3.96, 3.48, 3.72, 7.26 alerted 6 evaluations after the best)."""

    name = "overfitting"
    doc = "val loss rising above its best for several evaluations while train loss falls"

    def __init__(self, cfg, warmup_steps=0):
        super().__init__(cfg, warmup_steps)
        self.best: tuple[int, float, float] | None = None  # (epoch, val, train at that epoch)
        self.recent: list[float] = []  # val losses at the previous two evaluations, oldest first

    def evaluation(self, step, epoch, metrics):
        v, t = metrics.get("epoch/val_loss"), metrics.get("epoch/train_loss")
        if not (finite(v) and finite(t)):
            return []
        holds = False
        recent, self.recent = self.recent, (self.recent + [v])[-2:]
        if self.best is None or v < self.best[1]:
            self.best = (int(epoch), v, t)
        else:
            be, bv, bt = self.best
            recovering = (len(recent) == 2 and recent[0] > recent[1] > v
                          and recent[0] - bv >= self.cfg.growth * (v - bv))
            holds = v > bv + self.cfg.overfit_margin * abs(bv) and (t - bt) < 0.5 * (v - bv) and not recovering
        s = self.judge("val_loss", "val", holds, step, epoch, self.cfg.eval_patience)
        if not s:
            return []
        be, bv, bt = self.best
        adv = ADVICE["overfitting"].format(best_epoch=be)
        ev = (f"val loss {fmt(v)} at epoch {int(epoch)} vs best {fmt(bv)} at epoch {be} "
              f"(+{100 * (v - bv) / abs(bv):.0f}%) for {s.count} evaluations, while train loss went "
              f"{fmt(bt)} -> {fmt(t)}; train/val gap {fmt(v - t)} (at best epoch {fmt(bv - bt)})")
        return [self.finding("warning", "val_loss", step, epoch,
                             f"overfitting: best val loss was at epoch {be}", ev,
                             adv.causes, adv.fixes,
                             s, {"epoch/val_loss": v, "epoch/train_loss": t, "best_epoch": be, "best_val_loss": bv,
                                 "gap": v - t})]

    def extra_state(self):
        return {"best": list(self.best) if self.best else None, "recent": list(self.recent)}

    def load_extra_state(self, state):
        b = state.get("best")
        self.best = (int(b[0]), float(b[1]), float(b[2])) if b else None
        last = state.get("last")  # saved before the recovery trend: the previous evaluation only
        self.recent = [float(x) for x in state.get("recent", [] if last is None else [last])][-2:]


# ---------------------------------------------------------------- 7. gradient trouble

class GradientTrouble(Detector):
    """Non-finite loss or gradient norm (read_host drops NaN, so a vanished key counts) or skipped steps: a
    warning at once (the engine alone fails a run, after train.nonfinite_patience consecutive skips);
    the applied gradient norm (grad/total bounded by train.grad_clip) or the loss (health/loss_median, the
    median of the interval's step losses; train/loss where none is logged) above `explode_factor` x its running
    median for `patience` consecutive checks; a head whose gradient norm stays below `vanish_ratio` x the
    largest other head's for `patience` checks after warm-up, if it is exactly zero or the head has never had
    more (a head whose gradient shrank there has converged)."""

    name = "gradients"
    doc = "non-finite loss/gradients, exploding norms, or a head with (almost) no gradient"
    WINDOW = 8  # checks in the running median

    def __init__(self, cfg, warmup_steps=0):
        super().__init__(cfg, warmup_steps)
        self.hist = History(self.WINDOW)
        self.seen: set[str] = set()
        self.learned: set[str] = set()  # heads that have had a gradient >= vanish_ratio x the largest other's
        self.skipped = 0.0  # the engine's count of skipped non-finite steps (health/nonfinite_steps)
        self.clip = math.inf  # train.grad_clip (set by the monitor at fit start): the largest norm applied
        self.scaler = False  # an fp16 dynamic loss scaler is in use (set by the monitor at fit start)
        self.scaler_noted = False

    def check(self, step, epoch, values):
        found = []
        # -- non-finite: a NaN mean vanished from the host read, an inf stayed, or the engine skipped steps
        watched = [k for k in ("train/loss", "grad/total") if k in values or k in self.seen]
        bad = [k for k in watched if not finite(values.get(k))]
        self.seen.update(k for k in ("train/loss", "grad/total") if k in values)
        skipped = values.get("health/nonfinite_steps")
        if finite(skipped) and skipped > self.skipped:
            bad.append(f"gradients ({int(skipped - self.skipped)} steps skipped)")
        if finite(skipped):
            self.skipped = skipped
        # fp16's dynamic loss scaler starts at a scale that overflows, skips those steps and lowers the scale, and
        # raises it again later until one overflows (torch.amp.GradScaler: 2**16, halved per overflow, doubled
        # every 2000 clean steps): with a finite loss, its skips are the scaler working, not a gradient that is
        # unusable. One note says so; a non-finite loss is still a warning, and the engine still fails a run
        # after train.nonfinite_patience consecutive skips. (Measured on an H200, bench/cuda_check.py: a healthy
        # fp16 sequence run skipped 3 steps in its first interval and was otherwise clean.)
        if self.scaler and "train/loss" not in bad and bad:
            if not self.scaler_noted:
                self.scaler_noted = True
                found.append(self.finding(
                    "note", "loss_scaler", step, epoch,
                    "fp16 loss scaler skipped steps (its overflow check): expected, not a failure",
                    f"{', '.join(bad)} in the interval ending at step {step} with a finite loss "
                    f"({fmt(values.get('train/loss', math.nan))}): the fp16 grad scaler skips a step whose scaled "
                    f"gradient overflows and lowers its scale; health/nonfinite_steps keeps the count",
                    [], [], None, {}))
            bad = []
        s = self.judge("nonfinite", "train", bool(bad), step, epoch, 1)
        if s:
            what = ", ".join(f"{k} = {values.get(k, 'nan')}" if k in values or "/" in k else k for k in bad)
            found.append(self.finding(  # the engine alone stops a run that cannot train (NonFiniteError)
                "warning", "nonfinite", step, epoch, f"non-finite {' and '.join(bad)}",
                f"{what} in the interval ending at step {step} (lr {fmt(values.get('lr', math.nan))})",
                ADVICE["nonfinite"].causes, ADVICE["nonfinite"].fixes,
                s, {}, cause="nonfinite"))
        # -- explosion, relative to the running median of earlier checks. The gradient norm judged is the one
        # the optimizer applies (min(grad/total, train.grad_clip)): a spike that clipping bounds is not applied.
        # The loss judged is the median of the interval's step losses where it is logged (health/loss_median):
        # at batch size 2 one confidently wrong label lifts an interval's mean loss tenfold for 3 checks in a
        # healthy run whose clipped gradient and validation loss do not move (docs/health.md); a diverging run
        # lifts every step, so its median too. The mean (train/loss) is judged where no median is logged.
        spikes = []
        loss = keys.LOSS_MEDIAN if keys.LOSS_MEDIAN in values else "train/loss"
        for k in ("grad/total", loss):
            v = values.get(k)
            if k == "grad/total" and finite(v):
                v = min(v, self.clip)
            past = self.hist.get(k)
            if finite(v):
                if len(past) >= 3:
                    med = statistics.median(past)
                    if med > 0 and v > self.cfg.explode_factor * med:
                        spikes.append((k, v, med))
                self.hist.push(k, v)
        # `patience` consecutive checks, as every step-level rule: at batch size 4 a few batches with a weighted
        # positive lift two consecutive intervals' loss 200x and the clipped norm to the clip, in a healthy run
        # (measured: docs/health.md); a diverging run stays up
        s = self.judge("explosion", "train", bool(spikes), step, epoch, self.cfg.patience)
        if s:
            ev = "; ".join(f"{'train/loss (median of the steps)' if k == keys.LOSS_MEDIAN else k} {fmt(v)} = "
                           f"{v / med:.0f}x its running median {fmt(med)}" for k, v, med in spikes)
            clip = f", clipped at {fmt(self.clip)}" if math.isfinite(self.clip) else ""
            found.append(self.finding(
                "warning", "explosion", step, epoch,
                "exploding " + " and ".join("train/loss" if k == keys.LOSS_MEDIAN else k for k, _, _ in spikes),
                ev + f" at step {step}, for {s.count} check{'s' if s.count > 1 else ''} (lr "
                f"{fmt(values.get('lr', math.nan))}{clip})",
                ADVICE["explosion"].causes, ADVICE["explosion"].fixes, s, {k: v for k, v, _ in spikes},
                cause="explosion"))
        # -- vanishing heads
        heads = {k[5:]: v for k, v in values.items() if k.startswith("grad/") and k != "grad/total" and finite(v)}
        if len(heads) >= 2:
            for h, g in heads.items():
                others = max(v for k, v in heads.items() if k != h)
                tiny = others > 0 and g < self.cfg.vanish_ratio * others
                if others > 0 and not tiny:
                    self.learned.add(h)
                # a head that has had a usable gradient and now gets a tiny one has usually converged (e.g. a
                # target that varies little); one that never had one, or gets exactly none, is cut off
                holds = tiny and (g == 0 or h not in self.learned) and self.warm(step)
                s = self.judge(h, "train", holds, step, epoch, self.cfg.patience)
                if s:
                    top = max((k for k in heads if k != h), key=heads.get)
                    zero = g == 0
                    adv = ADVICE["vanishing_zero" if zero else "vanishing"]
                    ev = (f"grad/{h} = {fmt(g)} vs grad/{top} = {fmt(others)}"
                          f"{' (exactly zero: no gradient reaches it)' if zero else f' (ratio {fmt(g / others)})'}"
                          f" for {s.count} checks since step {s.onset_step}")
                    found.append(self.finding(
                        "warning", h, step, epoch, f"vanishing gradient: head {h} is not learning", ev,
                        adv.causes, adv.fixes,
                        s, {f"grad/{h}": g, f"grad/{top}": others}, cause="vanishing_zero" if zero else "vanishing"))
        return found

    def extra_state(self):
        return {"hist": self.hist.state(), "seen": sorted(self.seen), "skipped": self.skipped, "clip": self.clip,
                "learned": sorted(self.learned), "scaler": self.scaler, "scaler_noted": self.scaler_noted}

    def load_extra_state(self, state):
        self.hist.load(state.get("hist", {}))
        self.seen = set(state.get("seen", []))
        self.learned = set(state.get("learned", []))
        self.skipped = float(state.get("skipped", 0.0))
        self.clip = float(state.get("clip", math.inf))
        self.scaler = bool(state.get("scaler", False))
        self.scaler_noted = bool(state.get("scaler_noted", False))


# ---------------------------------------------------------------- 8. no better than the trivial baseline

def higher_is_better(metric: str) -> bool:
    return any(metric.endswith(w) for w in ("iou", "recall", "precision", "accuracy", "f1", "dice"))


class NoBetterThanBaseline(Detector):
    """The task's primary validation metric no better than its own trivial baseline (Task.baseline(), the
    predictor of the mean target) while the model has stopped making progress: over the last `eval_patience`
    evaluations neither the primary metric nor the validation loss improved on their best before them by
    `overfit_margin` (5%: the relative change of a validation quantity the overfitting rule also counts as
    meaningful). A model still making progress may yet cross the baseline: small lanes runs sat above it for
    3 to 4 of 8 epochs while their validation loss fell, and then learned (health suite). A run that only
    sets new bests by noise (inputs paired with the wrong targets: the best cp_error 9.00 -> 8.69 against the
    baseline's 8.13 while the val loss moved 1%) is not making progress. The primary metric is the
    baseline's first error, else its IoU, else its loss: lower is better; a higher-is-better metric (iou ...)
    is compared the other way. The window is the persistence (a finding at the first evaluation whose window
    shows no progress: evaluation eval_patience + 1 at the earliest)."""

    name = "baseline"
    doc = "the primary val metric no better than the trivial (mean-target) baseline, with no progress"

    def __init__(self, cfg, warmup_steps=0):
        super().__init__(cfg, warmup_steps)
        self.baseline: dict[str, float] = {}  # metric -> trivial predictor's value (set at fit start)
        self.hist = History(cfg.eval_patience)  # the last eval_patience primary metrics ("p") and val losses ("v")
        self.best_before: dict[str, float] = {}  # "p"/"v" -> best (sign-adjusted) value before those

    def primary(self, metrics) -> tuple[str, str, float] | None:
        """(baseline metric, logged key, baseline value) of the primary metric: the baseline's first error,
        else its IoU, else its loss. A loss is the last resort: a composite loss (focal + dice + mean
        matching) can sit above the constant predictor's while the model already segments well, so an
        error or an overlap says what the user will measure."""
        for want in (lambda k: k.endswith("_error"), lambda k: k == "iou", lambda k: k == "loss"):
            for k, b in self.baseline.items():
                key = "epoch/val_loss" if k == "loss" else f"val/{k}"
                if want(k) and key in metrics and finite(b):
                    return k, key, b
        return None

    def push(self, name: str, value: float, higher: bool) -> None:
        """Keep the last eval_patience values, and the best of every value before them."""
        seq = self.hist.get(name)
        if len(seq) == self.cfg.eval_patience:  # the oldest leaves the window
            old = -seq[0] if higher else seq[0]  # minimise sign * value
            self.best_before[name] = min(self.best_before.get(name, math.inf), old)
        self.hist.push(name, value)

    def progress(self, name: str, higher: bool) -> tuple[bool, str]:
        """Did the best of the last eval_patience values beat the best before them by overfit_margin?"""
        seq, p = self.hist.get(name), self.cfg.eval_patience
        if name not in self.best_before or len(seq) < p:
            return True, ""  # not enough history: still starting
        sign = -1.0 if higher else 1.0  # minimise sign * value
        before = self.best_before[name]
        now = min(sign * x for x in seq)
        made = now < before - self.cfg.overfit_margin * abs(before)
        change = (before - now) / abs(before) if before else math.nan
        gain = f" ({100 * change:+.1f}%)" if finite(change) else ""
        return made, f"best {fmt(sign * now)} in the last {p} evaluations vs {fmt(sign * before)} before{gain}"

    def evaluation(self, step, epoch, metrics):
        p = self.primary(metrics)
        if not p or not finite(metrics.get(p[1])):
            return []
        k, key, b = p
        v = metrics[key]
        hib = higher_is_better(k)
        self.push("p", v, hib)
        vloss = metrics.get("epoch/val_loss")
        if finite(vloss):
            self.push("v", vloss, False)
        moving, what = self.progress("p", hib)
        moving_loss, what_loss = self.progress("v", False) if finite(vloss) and key != "epoch/val_loss" else (False, "")
        holds = (v <= b if hib else v >= b) and not moving and not moving_loss and self.warm(step)
        s = self.judge("primary", "val", holds, step, epoch, 1)  # the window is the persistence
        if not s:
            return []
        fixed = metrics.get("health/fixed_std_ratio")
        spread = (f"; the predictions do vary (fixed val inputs: spread {fmt(fixed)} of the targets'), so they "
                  f"do not follow the targets" if finite(fixed) and fixed >= self.cfg.identical_ratio else "")
        ev = (f"{key} {fmt(v)} vs {fmt(b)} for the trivial baseline (mean-target predictor; "
              f"{'higher' if hib else 'lower'} is better), and no progress of {pct(self.cfg.overfit_margin)}: "
              f"{key} {what}" + (f"; epoch/val_loss {what_loss}" if what_loss else "") + spread)
        return [self.finding("warning", "primary", step, epoch, f"{key} no better than the trivial baseline", ev,
                             ADVICE["baseline"].causes, ADVICE["baseline"].fixes, s, {key: v, "baseline": b})]

    def extra_state(self):
        return {"baseline": dict(self.baseline), "hist": self.hist.state(), "best_before": dict(self.best_before)}

    def load_extra_state(self, state):
        self.baseline = {k: float(v) for k, v in state.get("baseline", {}).items()}
        self.hist.load(state.get("hist", {}))
        self.best_before = {k: float(v) for k, v in state.get("best_before", {}).items()}


# ---------------------------------------------------------------- 9. the splits' inputs and labels

class SplitMismatch(Detector):
    """Measured at start (HealthMonitor: samples of the train and val datasets), reported at the first
    check or evaluation, whichever comes first, before any metric suffers (and before the step-level rules
    see the symptoms the data causes: a model fed constant inputs also collapses):
    - inputs that do not vary across the samples of a split (spread below `identical_ratio`): failed;
    - per-channel input statistics that differ strongly between train and val (mean difference over 1
      pooled std, a std ratio over 2, or value ranges that do not overlap): preprocessing mismatch;
    - a class present in one split and absent or 4x rarer in the other: a labelling problem;
    - most of a split's samples without any positive element (empty labels): the loss will learn "empty"."""

    name = "data"
    doc = "inputs constant in a split, train/val preprocessed differently, a class missing from one split"

    def __init__(self, cfg, warmup_steps=0):
        super().__init__(cfg, warmup_steps)
        self.inputs: dict[str, dict[str, list[float] | float]] = {}  # split -> input statistics (set at start)
        self.balance: dict[str, dict[str, float]] = {}
        self.samples: dict[str, float] = {}  # split -> samples the class balance was measured on
        self.empty: dict[str, float] = {}  # split -> fraction of samples with no positive element
        self.done = False

    def check(self, step, epoch, values):
        return self.report(step, epoch)

    def evaluation(self, step, epoch, metrics):
        return self.report(step, epoch)

    def report(self, step, epoch):
        if self.done:
            return []
        self.done = True
        found = []
        for split, st in self.inputs.items():
            if finite(st.get("spread")) and st["spread"] < self.cfg.identical_ratio:
                found.append(self.finding(
                    "failed", f"{split}_inputs", step, epoch, f"{split} inputs do not vary across samples",
                    f"{int(st.get('samples', 0))} {split} samples measured at start: spread across samples "
                    f"{fmt(st['spread'])} (std across samples / std of all values), range "
                    f"[{fmt(min(st['min']))}, {fmt(max(st['max']))}]",
                    ADVICE["inputs_constant"].causes, ADVICE["inputs_constant"].fixes, None,
                    {"spread": st["spread"]}, cause="inputs_constant"))
        t, v = self.inputs.get("train"), self.inputs.get("val")
        varies = all(finite(x.get("spread")) and x["spread"] >= self.cfg.identical_ratio for x in (t or {}, v or {}))
        if t and v and varies and len(t["mean"]) == len(v["mean"]):  # constant inputs are reported above
            bad = []
            for c, (mt, mv, st_, sv, lt, lv, ht, hv) in enumerate(zip(t["mean"], v["mean"], t["std"], v["std"],
                                                                    t["min"], v["min"], t["max"], v["max"])):
                pooled = math.sqrt((st_ ** 2 + sv ** 2) / 2)
                d = abs(mt - mv) / pooled if pooled > 0 else (math.inf if mt != mv else 0.0)
                ratio = max(st_, sv) / min(st_, sv) if min(st_, sv) > 0 else (1.0 if st_ == sv else math.inf)
                disjoint = lt > hv or lv > ht
                if d > 1 or ratio > 2 or disjoint:
                    bad.append(f"channel {c}: mean {fmt(mt)} vs {fmt(mv)}, std {fmt(st_)} vs {fmt(sv)}, range "
                               f"[{fmt(lt)}, {fmt(ht)}] vs [{fmt(lv)}, {fmt(hv)}]")
            if bad:
                found.append(self.finding(
                    "warning", "preprocessing", step, epoch, "train and val inputs are preprocessed differently",
                    "input statistics measured at start, train vs val: " + "; ".join(bad[:4]),
                    ADVICE["preprocessing"].causes, ADVICE["preprocessing"].fixes, None, {}, cause="preprocessing"))
        for r, rates in self.balance.items():
            split = rarer_split(rates, self.samples)
            if split:
                bal = ", ".join(f"{pct(x)} of {sp}" for sp, x in rates.items())
                adv = ADVICE["class_split"].format(name=r, split=split, rates=bal)
                found.append(self.finding(
                    "warning", f"{r}_labels", step, epoch, f"{r} is absent or far rarer in {split}",
                    f"class balance measured at start: {r} is {bal}", adv.causes, adv.fixes, None, {},
                    cause="class_split"))
        for split, frac in self.empty.items():
            if finite(frac) and frac > MOSTLY_EMPTY:
                adv = ADVICE["mostly_empty"].format(split=split, fraction=pct(frac))
                found.append(self.finding(
                    "warning", f"{split}_labels_empty", step, epoch,
                    f"{pct(frac)} of {split} samples have no positive label",
                    f"measured at start: {pct(frac)} of {int(self.samples.get(split, 0)) or 'the'} {split} samples "
                    f"have no positive element (more than {pct(MOSTLY_EMPTY)})", adv.causes, adv.fixes, None,
                    {"empty_fraction": frac}, cause="mostly_empty"))
        for f in found:
            self.active[f.subject] = 0
        return found

    def extra_state(self):
        return {"done": self.done}

    def load_extra_state(self, state):
        self.done = bool(state.get("done", False))


# ---------------------------------------------------------------- 10. not training

class NotTraining(Detector):
    """The weights do not change between checks at a non-zero learning rate: health/param_norm (the norm
    of the parameter vector, computed by the monitor on the device once per log interval) exactly equal
    for 2 consecutive checks with lr > 0. An optimizer that steps changes it at every step."""

    name = "not_training"
    doc = "the parameter vector does not change between checks although the learning rate is non-zero"

    def __init__(self, cfg, warmup_steps=0):
        super().__init__(cfg, warmup_steps)
        self.prev: float | None = None

    def check(self, step, epoch, values):
        norm, lr = values.get("health/param_norm"), values.get("lr")
        if not finite(norm):
            return []
        prev, self.prev = self.prev, norm
        holds = prev is not None and norm == prev and finite(lr) and lr > 0
        s = self.judge("weights", "train", holds, step, epoch, 2)
        if not s:
            return []
        return [self.finding("failed", "weights", step, epoch, "not training: the weights do not change",
                             f"norm of the parameter vector {fmt(norm)}, identical at {s.count} consecutive checks "
                             f"since step {s.onset_step}, at lr {fmt(lr)}",
                             ADVICE["not_training"].causes, ADVICE["not_training"].fixes, s,
                             {"health/param_norm": norm, "lr": lr})]

    def extra_state(self):
        return {"prev": self.prev}

    def load_extra_state(self, state):
        self.prev = state.get("prev")


DETECTORS: tuple[type[Detector], ...] = (PredictionCollapse, RunawayWeighting, StuckLoss, SparseCollapse, RareClass,
                                         Overfitting, GradientTrouble, NoBetterThanBaseline, SplitMismatch,
                                         NotTraining)


# ---------------------------------------------------------------- the rule set

class Rules:
    """All detectors, fed the check and evaluation streams; collects the findings."""

    def __init__(self, cfg: MonitorConfig | None = None, warmup_steps: int = 0):
        self.cfg = cfg or MonitorConfig()
        self.detectors = [cls(self.cfg, warmup_steps) for cls in DETECTORS]
        self.findings: list[Finding] = []
        self.last_step: int | None = None  # the previous check's step

    def by_name(self, name: str) -> Detector:
        return next(d for d in self.detectors if d.name == name)

    def set_class_balance(self, balance: dict[str, dict[str, float]], samples: dict[str, float] | None = None,
                          empty: dict[str, float] | None = None) -> None:
        """{class: {split: positive rate}}, {split: samples measured} and {split: fraction of samples without
        any positive element}, from the data at fit start."""
        for name in ("rare_class", "data"):
            self.by_name(name).balance = balance
            self.by_name(name).samples = dict(samples or {})
        self.by_name("data").empty = dict(empty or {})

    def set_baseline(self, baseline: dict[str, float]) -> None:
        """The trivial predictor's val metrics (Task.baseline()), measured at fit start. A <r>_recall among them
        declares r a class per sample: the rare-class rule's from the start, not the sparse-target rule's."""
        self.by_name("baseline").baseline = {k: float(v) for k, v in baseline.items()}
        self.by_name("sparse_collapse").classes.update(k[:-len("_recall")] for k in baseline
                                                       if k.endswith("_recall") and len(k) > len("_recall"))

    def set_input_stats(self, stats: dict[str, dict]) -> None:
        """{split: {mean, std, min, max (per channel), spread, samples}} measured at fit start."""
        self.by_name("data").inputs = stats

    def set_grad_clip(self, clip: float) -> None:
        self.by_name("gradients").clip = clip if clip and clip > 0 else math.inf

    def set_grad_scaler(self, on: bool) -> None:
        """fp16 with a dynamic loss scaler: its overflow skips are part of how it works (see GradientTrouble)."""
        self.by_name("gradients").scaler = bool(on)

    def check(self, step: int, epoch: float, values: dict[str, float]) -> list[Finding]:
        # the steps this check spans (the log interval); the first check, or one after a resume, counts in full
        span = step - self.last_step if self.last_step is not None and step > self.last_step else None
        self.last_step = step
        for d in self.detectors:
            d.check_steps = span
        new = [f for d in self.detectors for f in d.check(step, epoch, values)]
        self.findings += new
        return new

    def evaluation(self, step: int, epoch: float, metrics: dict[str, float]) -> list[Finding]:
        new = [f for d in self.detectors for f in d.evaluation(step, epoch, metrics)]
        self.findings += new
        return new

    def levels(self) -> dict[str, int]:
        return {d.name: d.level() for d in self.detectors}

    def status(self) -> str:
        return status_of(self.findings)

    def state_dict(self) -> dict[str, Any]:
        return {"detectors": {d.name: d.state_dict() for d in self.detectors},
                "findings": [f.to_dict() for f in self.findings], "status": self.status(), "last_step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for d in self.detectors:
            if d.name in state["detectors"]:
                d.load_state_dict(state["detectors"][d.name])
        self.findings = [Finding.from_dict(f) for f in state["findings"]]
        self.last_step = state.get("last_step")

