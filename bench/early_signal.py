"""Could an earlier rule tell inputs paired with the wrong targets from healthy slow starters?

    python bench/early_signal.py OUT [--key val/pred/target_corr] [--thresholds 0.1 0.15 0.2 0.3]

A measurement behind the unmet lag goal for the wrong_targets family (docs/health.md, "Measured"), not a product
feature. OUT is a health-suite output directory (bench/health_suite.py --out): its results.json gives each run's
outcome (bench/outcome.py, decided after training against the trivial baseline, by no rule), and each run's
metrics.jsonl its evaluations. For a hypothetical rule "KEY below T at every evaluation up to the i-th" (i = 0, 1, 2:
within the lag goal of 2 evaluations), it prints how many wrong-target runs (shuffled_targets_*) it would catch and
how many runs the outcome calls healthy it would flag, and which healthy scenarios those are.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from health_suite import load_rows  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="a health-suite output directory (results.json and the run directories)")
    ap.add_argument("--key", default="val/pred/target_corr")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.15, 0.2, 0.3])
    args = ap.parse_args(argv)
    runs = json.loads((Path(args.out) / "results.json").read_text())["runs"]
    series: dict[tuple[str, int], list[float]] = {}
    healthy, wrong = [], []
    for r in runs:
        if not r.get("run_dir") or not (Path(r["run_dir"]) / "metrics.jsonl").exists():
            continue
        _, evals = load_rows(r["run_dir"])
        k = (r["scenario"], r["seed"])
        series[k] = [e[args.key] for e in evals if args.key in e]
        if r["scenario"].startswith("shuffled_targets") and r["produced"]:
            wrong.append(k)
        elif r["kind"] == "healthy" and not r["outcome"]:
            healthy.append(k)
    print(f"{len(wrong)} wrong-target runs (produced by outcome), {len(healthy)} healthy by outcome; "
          f"rule: {args.key} < T at every evaluation up to the i-th")
    print("| evaluation i | T | wrong targets caught | healthy flagged | healthy scenarios flagged |")
    print("|---|---|---|---|---|")
    for i in range(3):
        for t in args.thresholds:
            def below(k):
                return len(series.get(k, [])) > i and max(series[k][:i + 1]) < t
            caught = sum(map(below, wrong))
            flagged = [k for k in healthy if below(k)]
            names = ", ".join(sorted({k[0] for k in flagged})) or "-"
            print(f"| {i} | {t:g} | {caught}/{len(wrong)} | {len(flagged)}/{len(healthy)} | {names} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
