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
import csv
import io
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from runner.config import parse_value
from runner.errors import UserError, exit_on_user_error
from runner.sweepfile import Param, SweepFile, expand_command, load_sweep, py, quantize, strip_keys

POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 60  # after SIGINT, a stopped trial gets this long to save and finish its W&B run


# ---------------------------------------------------------------- search methods

class GridSearch:
    """All combinations, parameters sorted by name, last varying fastest (wandb/sweeps grid_search)."""

    def __init__(self, params: dict[str, Param]):
        names = sorted(params)
        self.combos = [dict(zip(names, c)) for c in itertools.product(*(params[n].grid_values() for n in names))]
        self.i = 0

    def __len__(self) -> int:
        return len(self.combos)

    def ask(self) -> dict[str, Any] | None:
        if self.i >= len(self.combos):
            return None
        self.i += 1
        return dict(self.combos[self.i - 1])

    def tell(self, token, value: float | None, failed: bool) -> None: ...


def sample(p: Param, rng: np.random.Generator) -> Any:
    """One draw of a W&B distribution (definitions of wandb/sweeps params.HyperParameter.ppf)."""
    d, s = p.distribution, p.spec
    q = s.get("q")
    if d == "constant":
        return s["value"]
    if d == "categorical":
        return s["values"][int(rng.integers(len(s["values"])))]
    if d == "categorical_w_probabilities":
        return s["values"][int(rng.choice(len(s["values"]), p=np.asarray(s["probabilities"]) / sum(s["probabilities"])))]
    if d == "int_uniform":
        return int(rng.integers(s["min"], s["max"] + 1))
    if d in ("uniform", "q_uniform"):
        x = rng.uniform(s["min"], s["max"])
    elif d in ("log_uniform", "q_log_uniform"):
        x = math.exp(rng.uniform(s["min"], s["max"]))
    elif d in ("log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values"):
        x = math.exp(rng.uniform(math.log(s["min"]), math.log(s["max"])))
    elif d == "inv_log_uniform":
        x = math.exp(-rng.uniform(s["min"], s["max"]))
    elif d in ("normal", "q_normal"):
        x = rng.normal(s["mu"], s["sigma"])
    elif d in ("log_normal", "q_log_normal"):
        x = math.exp(rng.normal(s["mu"], s["sigma"]))
    elif d in ("beta", "q_beta"):
        x = rng.beta(s["a"], s["b"])
    else:
        raise ValueError(d)
    return quantize(float(x), q) if d.startswith("q_") else float(x)


class RandomSearch:
    def __init__(self, params: dict[str, Param], seed: int | None):
        self.params, self.rng = params, np.random.default_rng(seed)

    def ask(self) -> dict[str, Any]:
        return {n: py(sample(self.params[n], self.rng)) for n in sorted(self.params)}

    def tell(self, token, value: float | None, failed: bool) -> None: ...


class BayesSearch:
    """Model-based search with optuna's TPE sampler over the sweep's bounded distributions.

    Ranges map to optuna distributions in the space W&B samples them (log for log_uniform*);
    q_* values are quantized after the draw, as W&B does; categorical values go by index.
    Failed trials are told as FAIL (TPE leaves them out; W&B imputes them as the worst value).
    """

    def __init__(self, params: dict[str, Param], minimize: bool, seed: int | None, count: int, workers: int):
        import warnings

        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self.optuna, self.params = optuna, params
        self.dists = {n: self._dist(p) for n, p in params.items() if p.distribution != "constant"}
        startup = max(2, min(10, count // 3))  # random trials before TPE models the results
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True,
                                             constant_liar=workers > 1)
        self.study = optuna.create_study(direction="minimize" if minimize else "maximize", sampler=sampler)

    def _dist(self, p: Param):
        D, s, d = self.optuna.distributions, p.spec, p.distribution
        if d.startswith("categorical"):
            return D.CategoricalDistribution(list(range(len(s["values"]))))
        if d == "int_uniform":
            return D.IntDistribution(s["min"], s["max"])
        if d in ("uniform", "q_uniform"):
            return D.FloatDistribution(s["min"], s["max"])
        if d in ("log_uniform", "q_log_uniform"):
            return D.FloatDistribution(math.exp(s["min"]), math.exp(s["max"]), log=True)
        if d == "inv_log_uniform":
            return D.FloatDistribution(math.exp(-s["max"]), math.exp(-s["min"]), log=True)
        return D.FloatDistribution(s["min"], s["max"], log=True)  # *_log_uniform_values

    def ask(self):
        trial = self.study.ask(self.dists)
        values = {}
        for n in sorted(self.params):
            p = self.params[n]
            if p.distribution == "constant":
                values[n] = p.spec["value"]
            elif p.distribution.startswith("categorical"):
                values[n] = p.spec["values"][trial.params[n]]
            elif p.distribution.startswith("q_"):
                values[n] = quantize(trial.params[n], p.spec["q"])
            else:
                values[n] = py(trial.params[n])
        return values, trial

    def tell(self, trial, value: float | None, failed: bool) -> None:
        if failed or value is None:
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, value)


# ---------------------------------------------------------------- trials

@dataclass
class Trial:
    index: int
    values: dict[str, Any]
    dir: Path
    argv: list[str]
    token: Any = None  # the search's handle (optuna trial)
    proc: subprocess.Popen | None = None
    log: Any = None
    status: str = "pending"  # running | finished | failed | stopped (hyperband) | interrupted
    returncode: int | None = None
    started: float = 0.0
    seconds: float = 0.0
    best: float | None = None
    last: float | None = None
    history: list[float] = field(default_factory=list)
    run_dir: str = ""
    health: str = "n/a"
    note: str = ""
    stop_sent: float | None = None

    def find_run_dir(self) -> Path | None:
        found = sorted(self.dir.glob("*/config.yaml"))
        return found[0].parent if found else None


def metric_history(run_dir: Path | None, metric: str) -> list[float]:
    """Finite values of `metric` in the order the run logged them (its metrics.jsonl mirror)."""
    if run_dir is None or not (run_dir / "metrics.jsonl").is_file():
        return []
    out = []
    with open(run_dir / "metrics.jsonl") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line being written right now
                continue
            v = row.get(metric)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out.append(float(v))
    return out


def last_error_line(log_path: Path) -> str:
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for ln in reversed(lines):
        if "error" in ln.lower() or ln.startswith(("Traceback", "KeyboardInterrupt")):
            return ln[:300]
    return lines[-1][:300] if lines else ""


def hyperband_stops(histories: dict[int, list[float]], running: list[int], bands: list[int], eta: float,
                    minimize: bool) -> dict[int, tuple[int, float, float]]:
    """Which running trials hyperband stops: {trial: (band, its value there, the band's threshold)}.

    As wandb/sweeps hyperband_stopping: a band b is the b-th logged value (0-based) of the metric;
    its threshold is the value at rank int(n / eta) among all n trials (running or not) that
    logged more than b values; a running trial is stopped when its value at the latest band it
    has passed is worse than that band's threshold.
    """
    sign = 1.0 if minimize else -1.0
    hist = {k: [sign * v for v in h] for k, h in histories.items()}
    thresholds = []
    for band in bands:
        vals = sorted(h[band] for h in hist.values() if len(h) > band)
        thresholds.append(vals[int(len(vals) / eta)] if vals else math.inf)
    out = {}
    for k in running:
        h = hist.get(k, [])
        passed = [(b, th) for b, th in zip(bands, thresholds) if b < len(h)]
        if passed and h[passed[-1][0]] > passed[-1][1]:
            band, th = passed[-1]
            out[k] = (band, sign * h[band], sign * th)
    return out


def write_sweep_params(path: Path, values: dict[str, Any]) -> None:
    """The file `wandb agent` writes for wandb.init (config_util.save_config_file_from_dict)."""
    body = yaml.dump({k: {"value": v} for k, v in values.items()}, Dumper=yaml.SafeDumper,
                     default_flow_style=False, allow_unicode=True, sort_keys=False)
    path.write_text("wandb_version: 1\n\n" + body)


# ---------------------------------------------------------------- the runner

class SweepRunner:
    def __init__(self, sweep: SweepFile, sets: list[tuple[str, str]], count: int | None, workers: int,
                 seed: int | None, name: str | None, out: str | None):
        self.sweep, self.workers = sweep, workers
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.group = f"{name or sweep.name}-{stamp}"
        base = Path(out or sweep.cfg.out_dir)
        self.dir = base / f"sweep-{self.group}"
        n = count or sweep.run_cap
        if sweep.method == "grid":
            self.search = GridSearch(sweep.params)
            n = min(n or len(self.search), len(self.search))
        elif n is None:
            raise UserError(f"sweep file {str(sweep.path)!r}: method {sweep.method} never ends by itself; "
                            f"pass --count N (or set run_cap)")
        elif sweep.method == "random":
            self.search = RandomSearch(sweep.params, seed)
        else:
            self.search = BayesSearch(sweep.params, sweep.minimize, seed, n, workers)
        self.count = n
        # the command, minus what --set and the runner set per trial (a later flag like --device
        # would otherwise win over an earlier --train.device=...)
        own = {"out_dir", "wandb.group", "wandb.run_name"}
        cmd = sweep.command
        i = cmd.index("runner.train") + 1
        self.template = cmd[:i] + strip_keys(cmd[i:], own | {k for k, _ in sets})
        self.set_tokens = [f"--{k}={v}" for k, v in sets]
        self.trials: list[Trial] = []
        self.target_hit = False

    # -- launching
    def make_trial(self) -> Trial | None:
        asked = self.search.ask()
        if asked is None:
            return None
        values, token = asked if isinstance(asked, tuple) else (asked, None)
        index = len(self.trials) + 1
        tdir = self.dir / f"trial-{index:03d}"
        argv = expand_command(self.template, values) + self.set_tokens + [
            f"--out_dir={tdir}", f"--wandb.group={self.group}", f"--wandb.run_name={self.group}-t{index:03d}"]
        trial = Trial(index=index, values=values, dir=tdir, argv=argv, token=token)
        self.trials.append(trial)
        return trial

    def launch(self, trial: Trial) -> None:
        trial.dir.mkdir(parents=True, exist_ok=True)
        params_file = trial.dir / "sweep-params.yaml"
        write_sweep_params(params_file, trial.values)
        (trial.dir / "trial.json").write_text(json.dumps({"trial": trial.index, "values": trial.values,
                                                          "argv": trial.argv}, indent=2, default=str))
        env = {k: v for k, v in os.environ.items() if k not in ("WANDB_SWEEP_ID", "WANDB_RUN_ID")}
        env.setdefault("WANDB_MODE", "offline")
        env["WANDB_SWEEP_PARAM_PATH"] = str(params_file.resolve())
        env["PYTHONUNBUFFERED"] = "1"
        if self.workers > 1 and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.workers))
        trial.log = open(trial.dir / "log.txt", "w")
        trial.started = time.time()
        trial.status = "running"
        # own session: a Ctrl-C in the terminal reaches only this runner, which forwards one SIGINT
        # (runner.train saves a checkpoint on the first; a second would abort it)
        trial.proc = subprocess.Popen(trial.argv, env=env, stdout=trial.log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        shown = " ".join(f"{k}={v}" for k, v in trial.values.items())
        print(f"[{self.group}] trial {trial.index}/{self.count} started: {shown} -> {trial.dir}", flush=True)

    # -- finishing
    def finish(self, trial: Trial) -> None:
        trial.returncode = trial.proc.returncode
        trial.seconds = time.time() - trial.started
        trial.log.close()
        run_dir = trial.find_run_dir()
        trial.run_dir = str(run_dir) if run_dir else ""
        trial.history = metric_history(run_dir, self.sweep.metric)
        if trial.history:
            trial.best = (min if self.sweep.minimize else max)(trial.history)
            trial.last = trial.history[-1]
        summary_path = run_dir / "summary.json" if run_dir else None
        if summary_path and summary_path.is_file():
            try:
                trial.health = str(json.loads(summary_path.read_text()).get("health/status", "n/a"))
            except (json.JSONDecodeError, OSError):
                pass
        if trial.status not in ("stopped", "interrupted"):
            trial.status = "finished" if trial.returncode == 0 else "failed"
        if trial.status == "failed":
            trial.note = f"exit {trial.returncode}: {last_error_line(trial.dir / 'log.txt')}"
        if trial.status == "finished" and trial.best is None:
            trial.note = f"{self.sweep.metric} was never logged"
        self.search.tell(trial.token, trial.best, failed=trial.status == "failed")
        value = f"{self.sweep.metric}={trial.best:.6g}" if trial.best is not None else "no metric"
        print(f"[{self.group}] trial {trial.index} {trial.status} in {trial.seconds:.0f}s: {value}, "
              f"health {trial.health}" + (f" ({trial.note})" if trial.note else ""), flush=True)
        t = self.sweep.target
        if t is not None and trial.best is not None and (trial.best <= t if self.sweep.minimize else trial.best >= t):
            self.target_hit = True
            print(f"[{self.group}] metric target {t} reached by trial {trial.index}: no new trials", flush=True)
        self.write_leaderboard()

    # -- hyperband
    def hyperband(self, running: list[Trial]) -> None:
        """Stop running trials that trail at their latest band (see hyperband_stops)."""
        hist = {}
        for t in self.trials:
            h = metric_history(t.find_run_dir(), self.sweep.metric) if t.status == "running" else t.history
            if h:
                hist[t.index] = h
        eta = self.sweep.early_terminate["eta"]
        verdicts = hyperband_stops(hist, [t.index for t in running if t.stop_sent is None], self.sweep.bands,
                                   eta, self.sweep.minimize)
        for t in running:
            if t.index in verdicts:
                band, value, threshold = verdicts[t.index]
                t.status, t.stop_sent = "stopped", time.time()
                t.note = (f"hyperband: {self.sweep.metric}={value:.4g} at iteration {band} is worse than "
                          f"the top 1/{eta:g} of trials there ({threshold:.4g})")
                print(f"[{self.group}] trial {t.index} stopped early: {t.note}", flush=True)
                t.proc.send_signal(signal.SIGINT)  # the runner saves a checkpoint and finishes its W&B run

    # -- main loop
    def run(self) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "sweep.yaml").write_text(self.sweep.path.read_text())
        print(f"[{self.group}] {self.sweep.method} sweep over {', '.join(self.sweep.params)}: {self.count} trials, "
              f"{self.workers} at a time, optimizing {self.sweep.metric} ({self.sweep.goal}); dir {self.dir}",
              flush=True)
        running: list[Trial] = []
        exhausted = False
        last_check = 0.0

        def on_term(signum, frame):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            while True:
                while (not exhausted and not self.target_hit and len(running) < self.workers
                       and len(self.trials) < self.count):
                    trial = self.make_trial()
                    if trial is None:
                        exhausted = True
                        break
                    self.launch(trial)
                    running.append(trial)
                if not running:
                    break
                time.sleep(POLL_SECONDS)
                for t in list(running):
                    if t.proc.poll() is not None:
                        running.remove(t)
                        self.finish(t)
                    elif t.stop_sent is not None and time.time() - t.stop_sent > STOP_GRACE_SECONDS:
                        t.proc.kill()
                if self.sweep.bands and running and time.time() - last_check > 2.0:
                    last_check = time.time()
                    self.hyperband(running)
        except KeyboardInterrupt:
            print(f"[{self.group}] interrupted: waiting for {len(running)} running trial(s) to finish their runs",
                  flush=True)
            for t in running:
                if t.proc.poll() is None:
                    t.proc.send_signal(signal.SIGINT)
            for t in running:
                try:
                    t.proc.wait(STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    t.proc.kill()
                    t.proc.wait()
                t.status = "interrupted"
                t.note = "interrupted: its latest checkpoint can be resumed with runner.train --resume"
                self.finish(t)
            self.write_leaderboard()
            return 130
        finally:
            signal.signal(signal.SIGTERM, previous)
        self.write_leaderboard()
        print(self.leaderboard_markdown(), flush=True)
        print(self.winner_line(), flush=True)
        print(f"[{self.group}] leaderboard: {self.dir / 'leaderboard.md'} and {self.dir / 'leaderboard.csv'}", flush=True)
        return 0 if any(t.status in ("finished", "stopped") for t in self.trials) else 1

    # -- leaderboard
    def ranked(self) -> list[Trial]:
        done = [t for t in self.trials if t.status != "pending"]
        sign = 1.0 if self.sweep.minimize else -1.0
        return sorted(done, key=lambda t: (t.status not in ("finished", "stopped"), t.best is None,
                                           sign * t.best if t.best is not None else 0.0, t.index))

    def rows(self) -> list[dict[str, Any]]:
        m, agg = self.sweep.metric, "min" if self.sweep.minimize else "max"
        out = []
        for rank, t in enumerate(self.ranked(), 1):
            row = {"rank": rank, "trial": t.index, "status": t.status}
            row.update({n: t.values.get(n) for n in self.sweep.params})
            row[f"{m} ({agg})"] = "" if t.best is None else f"{t.best:.6g}"
            row[f"{m} (final)"] = "" if t.last is None else f"{t.last:.6g}"
            row["health"] = t.health
            row["seconds"] = f"{t.seconds:.0f}"
            row["run_dir"] = t.run_dir
            row["note"] = t.note
            out.append(row)
        return out

    def leaderboard_markdown(self) -> str:
        rows = self.rows()
        if not rows:
            return "(no trials)"
        heads = list(rows[0])
        lines = [f"## sweep {self.group}: {self.sweep.method} over {', '.join(self.sweep.params)}, "
                 f"{self.sweep.goal} {self.sweep.metric}", "",
                 "| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
        def cell(v: Any) -> str:
            return (f"{v:.6g}" if isinstance(v, float) else str(v)).replace("|", "\\|")

        for r in rows:
            lines.append("| " + " | ".join(cell(r[h]) for h in heads) + " |")
        return "\n".join(lines)

    def winner(self) -> Trial | None:
        ok = [t for t in self.ranked() if t.status in ("finished", "stopped") and t.best is not None]
        return ok[0] if ok else None

    def winner_line(self) -> str:
        w = self.winner()
        if w is None:
            return f"[{self.group}] no trial logged {self.sweep.metric}: no winner"
        shown = ", ".join(f"{k}={v}" for k, v in w.values.items())
        return (f"[{self.group}] winner: {shown} with {self.sweep.metric}={w.best:.6g} "
                f"(trial {w.index}, health {w.health}, {w.run_dir})")

    def write_leaderboard(self) -> None:
        rows = self.rows()
        md = self.leaderboard_markdown() + "\n\n" + self.winner_line() + "\n"
        (self.dir / "leaderboard.md").write_text(md)
        buf = io.StringIO()
        if rows:
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (self.dir / "leaderboard.csv").write_text(buf.getvalue())


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
