"""What the collapse rule's starting grace costs and buys: lag for inputs paired with the wrong targets against
false positives, replayed over finished health-suite runs with and without it.

    python bench/starting_grace.py OUT [--holdout SEED]

A measurement behind the unmet lag goal for collapse from the start (docs/health.md, "Measured"), not a product
feature. OUT is a health-suite output directory (bench/health_suite.py --out) whose runs have finished; no run is
started. Every run is scored twice by replaying the rules over its logged statistics (bench/health_suite.py
--replay): with the rules as they are, where predictions that have never spread get twice the patience
(PredictionCollapse.patience), and with the plain patience for them. Whether a run failed or is healthy is decided
by bench/outcome.py as in the suite, by no rule. Prints, side by side, the lag of the wrong-target scenarios and the
false positives in the runs the outcome calls healthy.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from health_suite import SCENARIOS, run_one, score  # noqa: E402

from runner.health.rules import PredictionCollapse  # noqa: E402


def finished(out: Path) -> list[tuple]:
    """(scenario, the suite's RunResult) of every finished run: run_one reuses a run with a summary (and never
    starts one here: directories without one are skipped first)."""
    return [(sc, run_one(sc, int(base.name[len("seed"):]), out, reuse=True))
            for sc in SCENARIOS for base in sorted((out / sc.name).glob("seed*"))
            if list(base.glob("*/summary.json"))]


def scored(runs: list[tuple]) -> list[dict]:
    # score() replaces a result's findings with the replayed ones: each pass replays from the recorded findings
    return [score(sc, replace(res, findings=list(res.findings)), use_replay=True) for sc, res in runs]


def summary(rows: list[dict], holdout: int | None) -> dict:
    out = {}
    for part, keep in (("all", lambda s: True), ("held out", lambda s: holdout is not None and s >= holdout)):
        part_rows = [r for r in rows if keep(r["seed"])]
        if not part_rows:
            continue
        healthy = [r for r in part_rows if r["kind"] == "healthy" and r.get("healthy_by_outcome")]
        line = {"false positives": f"{sum(bool(r.get('false_positive')) for r in healthy)} in {len(healthy)}"}
        for name in ("shuffled_targets_sequence", "shuffled_targets_lanes"):
            lags = [r["lag"] for r in part_rows if r["scenario"] == name and r.get("produced") and r.get("detected")]
            if lags:
                line[name] = (f"median {statistics.median(lags):g}, max {max(lags)}, "
                              f"{sum(lag <= 2 for lag in lags)}/{len(lags)} within 2")
        out[part] = line
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="a health-suite output directory with finished runs")
    ap.add_argument("--holdout", type=int, default=None, help="seeds from this one on are also reported apart")
    args = ap.parse_args(argv)
    runs = finished(Path(args.out))
    if not runs:
        print(f"error: no finished health-suite runs under {args.out}", file=sys.stderr)
        return 2
    as_is = summary(scored(runs), args.holdout)
    grace = PredictionCollapse.patience
    PredictionCollapse.patience = lambda self, key, limit, far=False: self.cfg.patience
    try:
        plain = summary(scored(runs), args.holdout)
    finally:
        PredictionCollapse.patience = grace
    print(f"{len(runs)} runs under {args.out}, replayed (lag units as in the suite: checks or evaluations)")
    for part in as_is:
        print(f"\n{part}:")
        for key in as_is[part]:
            print(f"  {key:<26} with the starting grace: {as_is[part][key]:<34} "
                  f"plain patience: {plain[part].get(key, '-')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
