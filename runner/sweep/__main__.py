"""Offline sweeps: run a W&B sweep file's search on this machine, no account or network needed.

    python -m runner.sweep sweeps/threshold.yaml [--count N] [--set train.device=cpu ...] [--workers K]

Each trial runs the sweep file's `command` as a subprocess (no shell), with `${args}` expanded
exactly as `wandb agent` expands it (`--loss.threshold=0.1`), so a command that works here works
under the agent and the other way round. As under the agent, the swept values are also handed to
`wandb.init` through `WANDB_SWEEP_PARAM_PATH`, so each trial's W&B run shows them in its config and
runner.train checks that they reached the resolved config. Trials are offline W&B runs grouped
under one name (`wandb.group`), each in its own `--out_dir` (its own run directory and
checkpoints, also with `--workers K`).

Search semantics follow W&B (wandb/sweeps): grid enumerates parameters sorted by name, the last
varying fastest; random samples each distribution as W&B defines it; bayes uses optuna's TPE
sampler (a maintained library; see docs/sweeps.md for why, and how it differs from W&B's GP).
A trial's metric is the best value it logged (the extremum of its history, which W&B's bayes
search reads too). `early_terminate: hyperband` stops running trials that fall below the top
1/eta at a band, as W&B's hyperband_stopping does. A crashed trial is recorded as failed and the
sweep goes on. The leaderboard (Markdown and CSV, best first) is rewritten after every trial.
"""
from __future__ import annotations

import argparse
import sys

from runner.config import parse_value
from runner.errors import UserError, exit_on_user_error
from runner.sweep.trials import SweepRunner
from runner.sweep.validate import load_sweep

# ---------------------------------------------------------------- CLI

def parse_sets(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip().removeprefix("--")
        if not eq or not key:
            raise UserError(f"--set {item!r}: write --set section.key=value")
        out.append((key, value))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runner.sweep", allow_abbrev=False,
                                description="Run a W&B sweep file locally: each trial an offline W&B run.")
    p.add_argument("sweep_file", help="sweeps/*.yaml (a W&B sweep config)")
    p.add_argument("--count", type=int, help="number of trials (grid: at most the grid size; default all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a config key for every trial, e.g. --set train.device=cpu (repeatable)")
    p.add_argument("--workers", type=int, default=1, help="trials run at the same time (default 1)")
    p.add_argument("--seed", type=int, help="seed of the random / bayes search")
    p.add_argument("--name", help="sweep name (default: the file's name: or its stem)")
    p.add_argument("--out", help="parent directory of the sweep directory (default: the config's out_dir)")
    p.add_argument("--check", action="store_true", help="validate the sweep file, print the trials' argv, exit")
    return p


def main(argv: list[str] | None = None) -> int:
    with exit_on_user_error("runner.sweep"):
        args = build_parser().parse_args(argv)
        if args.count is not None and args.count < 1:
            raise UserError(f"--count must be >= 1, got {args.count}")
        if args.workers < 1:
            raise UserError(f"--workers must be >= 1, got {args.workers}")
        sets = parse_sets(args.set)
        sweep = load_sweep(args.sweep_file, {k: parse_value(v) for k, v in sets})
        runner = SweepRunner(sweep, sets, args.count, args.workers, args.seed, args.name, args.out)
        if args.check:
            print(f"{args.sweep_file}: valid {sweep.method} sweep of task {sweep.task}, metric {sweep.metric} "
                  f"({sweep.goal}), parameters {', '.join(sweep.params)}")
            for _ in range(min(runner.count, 3 if sweep.method != "grid" else runner.count)):
                t = runner.make_trial()
                if t is None:
                    break
                print("  " + " ".join(t.argv))
            return 0
        return runner.run()
    return 2


if __name__ == "__main__":
    sys.exit(main())
