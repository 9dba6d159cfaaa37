"""Running a sweep's trials on this machine: each a subprocess with the argv `wandb agent` builds,
its metric read back from the run's metrics.jsonl, hyperband stops, and the leaderboard."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.cli import strip_keys
from runner.errors import UserError
from runner.sweep.agent import expand_command, write_sweep_params
from runner.sweep.search import BayesSearch, GridSearch, RandomSearch, hyperband_stops
from runner.sweep.validate import SweepFile

POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 60  # after SIGINT, a stopped trial gets this long to save and finish its W&B run



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


