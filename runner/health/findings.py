"""The framework every health rule is built on: Finding (what a rule reports), Streak (persistence),
Detector (per-subject streaks and one episode per subject), History, and the number formats.

A rule is one Detector subclass in runner/health/rules.py; its causes and fixes are in
runner/health/advice.py. Nothing here knows any rule.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Iterable

from runner.config import MonitorConfig

SEVERITIES = ("note", "warning", "failed")
RANK = {s: i for i, s in enumerate(SEVERITIES)}
PROB_THRESHOLD = 0.5  # decision threshold of a probability (as runner/health/stats.py counts positives)
ALERT_TITLE_MAX = 63  # W&B: alert titles shorter than 64 characters
TINY = 1e-3  # a std ratio below this is "identical predictions"; growth from below it is noise
MOSTLY_EMPTY = 0.5  # more samples without any positive than this: the loss learns "empty" (seed 004's UAVScenes note)


def fmt(x: float) -> str:
    """A number as evidence shows it: 4 significant digits, no exponent for ordinary magnitudes."""
    if x is None or not isinstance(x, (int, float)):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    ax = abs(x)
    if ax >= 1e5 or ax < 1e-4:
        return f"{x:.2e}"
    return f"{x:.4g}"


def pct(x: float) -> str:
    return f"{100 * x:.2g}%" if x < 0.1 else f"{100 * x:.1f}%"


@dataclass
class Finding:
    """One thing wrong with a run: what, when, the numbers, why it happens and what to do."""

    detector: str  # collapse | loss_weighting | stuck_loss | sparse_collapse | rare_class | overfitting | gradients
    severity: str  # failed | warning | note
    subject: str  # what it is about: "predictions", "train/loss_position", "done", "done_head" ...
    step: int  # global step at which it fired
    epoch: float  # epoch (fractional at a check) at which it fired
    title: str  # one line
    evidence: str  # the numbers
    causes: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    onset_step: int = 0  # step at which the condition began to hold
    checks: int = 1  # consecutive checks (or evaluations) the condition held when it fired
    values: dict[str, float] = field(default_factory=dict)
    cause: str = ""  # the cause the evidence supports: a key of runner/health/advice.py's ADVICE (or the detector)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Finding":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def alert_title(self) -> str:
        """W&B alert title: under 64 characters (W&B's limit) and distinct per detector and subject (an
        episode alerts once); the numbers go in the text."""
        head = f"{self.severity.upper()} {self.detector}: "
        room = ALERT_TITLE_MAX - len(head)
        subject = self.subject if len(self.subject) <= room else "..." + self.subject[-(room - 3):]
        return head + subject

    def headline(self) -> str:
        return f"[health] {self.severity.upper()} {self.detector} at step {self.step}: {self.title}"

    def text(self) -> str:
        lines = [self.headline(), f"  evidence: {self.evidence}"]
        if self.causes:
            lines.append("  likely causes: " + "; ".join(self.causes))
        if self.fixes:
            lines.append("  fixes: " + "; ".join(self.fixes))
        return "\n".join(lines)


# ---------------------------------------------------------------- persistence and episodes

@dataclass
class Streak:
    """Consecutive checks a condition has held, and when it began. A check counts once it spans `min_steps`
    training steps: shorter log intervals are pooled (the condition must hold at each of them), so logging
    every step does not shorten the persistence a rule asks for to a few optimizer steps."""

    count: int = 0
    onset_step: int = 0
    onset_epoch: float = 0.0
    pooled: int = 0  # steps of the checks that held since the last one counted

    def update(self, holds: bool, step: int, epoch: float, steps: int | None = None, min_steps: int = 0) -> int:
        if holds:
            if self.count == 0 and self.pooled == 0:
                self.onset_step, self.onset_epoch = step, epoch
            self.pooled += steps if steps is not None else min_steps
            if self.pooled >= min_steps:
                self.count += 1
                self.pooled = 0
        else:
            self.count, self.pooled = 0, 0
        return self.count


class Detector:
    """Base: per-subject streaks (one per channel) and one episode flag per subject."""

    name: ClassVar[str] = ""
    doc: ClassVar[str] = ""  # one line for the health table

    def __init__(self, cfg: MonitorConfig, warmup_steps: int = 0):
        self.cfg, self.warmup_steps = cfg, warmup_steps
        self.streaks: dict[str, Streak] = {}
        self.active: dict[str, int] = {}  # subject -> clean checks since the condition last held
        self.checks = 0
        self.check_steps: int | None = None  # the steps the current check spans (Rules.check sets it)

    # -- hooks; return the findings that open a new episode
    def check(self, step: int, epoch: float, values: dict[str, float]) -> list[Finding]:
        return []

    def evaluation(self, step: int, epoch: float, metrics: dict[str, float]) -> list[Finding]:
        return []

    # -- helpers
    def warm(self, step: int) -> bool:
        return step > self.warmup_steps

    def judge(self, subject: str, channel: str, holds: bool, step: int, epoch: float, patience: int) -> Streak | None:
        """Advance the (subject, channel) streak; return it when a new episode of `subject` fires."""
        s = self.streaks.setdefault(f"{subject}|{channel}", Streak())
        # a step-level streak that asks for persistence counts checks of at least monitor.min_check_steps
        pool = channel == "train" and patience > 1
        s.update(holds, step, epoch, self.check_steps if pool else None, self.cfg.min_check_steps if pool else 0)
        if holds:
            if subject in self.active:
                self.active[subject] = 0
            elif s.count >= patience:
                self.active[subject] = 0
                return s
        elif subject in self.active and not any(
                v.count for k, v in self.streaks.items() if k.split("|")[0] == subject):
            self.active[subject] += 1
            if self.active[subject] >= self.cfg.clear_checks:
                del self.active[subject]
        return None

    def level(self) -> int:
        """0 ok, 1 a condition holds but has not persisted, 2 an episode is active."""
        if self.active:
            return 2
        return 1 if any(s.count for s in self.streaks.values()) else 0

    def finding(self, severity: str, subject: str, step: int, epoch: float, title: str, evidence: str,
                causes: list[str], fixes: list[str], streak: Streak | None, values: dict[str, float],
                cause: str | None = None) -> Finding:
        return Finding(detector=self.name, severity=severity, subject=subject, step=step, epoch=round(epoch, 3),
                       title=title, evidence=evidence, causes=causes, fixes=fixes,
                       onset_step=streak.onset_step if streak else step, checks=streak.count if streak else 1,
                       values={k: float(v) for k, v in values.items() if isinstance(v, (int, float))},
                       cause=cause or self.name)

    # -- checkpoint state (plain containers only: loads with weights_only=True)
    def state_dict(self) -> dict[str, Any]:
        return {"streaks": {k: asdict(v) for k, v in self.streaks.items()}, "active": dict(self.active),
                "checks": self.checks, "extra": self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.streaks = {k: Streak(**v) for k, v in state["streaks"].items()}
        self.active = dict(state["active"])
        self.checks = int(state["checks"])
        self.load_extra_state(state.get("extra", {}))

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None: ...


class History:
    """Last `n` values per key (host floats), kept in plain lists for checkpointing."""

    def __init__(self, n: int):
        self.n = n
        self.data: dict[str, deque] = {}

    def push(self, key: str, value: float) -> None:
        self.data.setdefault(key, deque(maxlen=self.n)).append(value)

    def get(self, key: str) -> list[float]:
        return list(self.data.get(key, ()))

    def state(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self.data.items()}

    def load(self, state: dict[str, list[float]]) -> None:
        self.data = {k: deque(v, maxlen=self.n) for k, v in state.items()}


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def status_of(findings: Iterable[Finding]) -> str:
    """healthy | warning | failed (notes do not change the status)."""
    worst = max((RANK[f.severity] for f in findings), default=0)
    return {0: "healthy", 1: "warning", 2: "failed"}[worst]

