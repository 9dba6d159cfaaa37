"""The health table printed at the end of a run and by `python -m runner.health`."""
from __future__ import annotations

from runner.health.findings import SEVERITIES, Finding, pct, status_of
from runner.health.rules import DETECTORS


def health_table(findings: list[Finding], balance: dict | None = None, source: str = "") -> str:
    """The text table printed at the end of a run and by `python -m runner.health`."""
    status = status_of(findings)
    by_det: dict[str, list[Finding]] = {}
    for f in findings:
        by_det.setdefault(f.detector, []).append(f)
    counts = {sev: sum(f.severity == sev for f in findings) for sev in SEVERITIES}
    lines = [f"  status: {status.upper()} ({counts['failed']} failures, {counts['warning']} warnings, "
             f"{counts['note']} notes)" + (f"; {source}" if source else "")]
    lines.append(f"  {'detector':<16} {'status':<8} {'step':>7}  evidence")
    for cls in DETECTORS:
        fs = [f for f in by_det.get(cls.name, []) if f.severity != "note"]
        if not fs:
            lines.append(f"  {cls.name:<16} {'ok':<8} {'-':>7}  -")
            continue
        for f in fs:
            lines.append(f"  {cls.name:<16} {f.severity:<8} {f.step:>7}  {f.title}")
    notes = [f for f in findings if f.severity == "note"]
    for f in notes:
        lines.append(f"  note: {f.title} ({f.evidence})")
    if balance:
        parts = [f"{r} {', '.join(f'{pct(v)} of {s}' for s, v in splits.items())}" for r, splits in balance.items()]
        lines.append("  class balance at start: " + "; ".join(parts))
    for i, f in enumerate([f for f in findings if f.severity != "note"], 1):
        lines.append(f"  [{i}] {f.detector} at step {f.step} (epoch {f.epoch:g}): {f.evidence}")
        if f.causes:
            lines.append(f"      likely causes: {'; '.join(f.causes)}")
        if f.fixes:
            lines.append(f"      fixes: {'; '.join(f.fixes)}")
    return "\n".join(lines)
