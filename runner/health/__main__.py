"""Print the health table of a finished run from its files.

    python -m runner.health RUN_DIR [--replay] [--json]

RUN_DIR is a run directory (runs/<task>-<time>-<id>/, holding summary.json and metrics.jsonl as
runner/tracking.py writes them) or a W&B run (wandb/offline-run-*, read with
`wandb leet inspect --json`). The table the monitor recorded in the summary is printed as is;
with --replay, or when the run has no recorded table (monitor off, or an older run), the rules
are run again over the logged statistics (same rules and thresholds as the run's config.yaml).
Exit status 0; a path that holds no run is a user error (exit 2).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from runner.config import MonitorConfig
from runner.errors import UserError, exit_on_user_error
from runner.health.findings import Finding
from runner.health.replay import replay
from runner.health.table import health_table


def wandb_run_path(path: Path) -> Path | None:
    """The W&B run (directory with a .wandb file) at or under path, if any."""
    if path.is_file() and path.suffix == ".wandb":
        return path
    if path.is_dir():
        if any(path.glob("*.wandb")):
            return path
        runs = sorted(path.glob("wandb/offline-run-*")) + sorted(path.glob("wandb/run-*"))
        runs = [r for r in runs if any(r.glob("*.wandb"))]
        if runs:
            return runs[-1]
    return None


def read_wandb(path: Path) -> tuple[list[dict], dict, dict]:
    """(history rows, summary, config) of a W&B run via `wandb leet inspect --json`."""
    exe = shutil.which("wandb") or str(Path(sys.executable).parent / "wandb")
    if not Path(exe).exists() and not shutil.which("wandb"):
        raise UserError("reading a W&B run needs the `wandb` command, which is not installed")
    proc = subprocess.run([exe, "leet", "inspect", "--json", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"`wandb leet inspect` could not read {str(path)!r}: "
                        f"{(proc.stderr.strip().splitlines() or ['no output'])[-1][:200]}")
    rows, summary, config = [], {}, {}
    for line in proc.stdout.splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        kind = rec.get("type")
        if kind == "history":
            rows.append(rec["history"]["item"])
        elif kind == "summary":
            summary.update(rec["summary"].get("update", {}))
        elif kind == "run":
            config.update({k: v for k, v in rec["run"].get("config", {}).get("update", {}).items()
                           if not k.startswith("_")})
    return rows, summary, config


def read_run(path: Path) -> tuple[list[dict], dict, dict, str]:
    """(rows, summary, config, source description) of the run at path."""
    if not path.exists():
        raise UserError(f"run directory {str(path)!r} does not exist")
    local = path if path.is_dir() and ((path / "metrics.jsonl").exists() or (path / "summary.json").exists()) else None
    if local is not None:
        rows = []
        if (local / "metrics.jsonl").exists():
            for i, line in enumerate(open(local / "metrics.jsonl"), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        raise UserError(f"{str(local / 'metrics.jsonl')!r} line {i} is not JSON") from None
        summary = json.loads((local / "summary.json").read_text()) if (local / "summary.json").exists() else {}
        config = yaml.safe_load((local / "config.yaml").read_text()) if (local / "config.yaml").exists() else {}
        return rows, summary, config or {}, f"run files in {local}"
    wb = wandb_run_path(path)
    if wb is not None:
        rows, summary, config = read_wandb(wb)
        return rows, summary, config, f"W&B run {wb}"
    raise UserError(f"{str(path)!r} is not a run directory: no summary.json, metrics.jsonl or W&B run in it")


def rules_config(config: dict) -> tuple[MonitorConfig, int]:
    mon = {k: v for k, v in (config.get("monitor") or {}).items() if k in MonitorConfig.model_fields}
    cfg = MonitorConfig(**mon)
    warm = cfg.warmup_steps if cfg.warmup_steps is not None else int((config.get("optim") or {}).get("warmup_steps", 0))
    return cfg, warm


def main(argv: list[str] | None = None) -> int:
    with exit_on_user_error("runner.health"):
        p = argparse.ArgumentParser(prog="python -m runner.health", allow_abbrev=False,
                                    description="Health table of a finished run (run directory or W&B run).")
        p.add_argument("run_dir", help="runs/<task>-<time>-<id> or a W&B run directory")
        p.add_argument("--replay", action="store_true", help="run the rules again over the logged statistics")
        p.add_argument("--json", action="store_true", help="print the findings as JSON")
        args = p.parse_args(argv)
        rows, summary, config, source = read_run(Path(args.run_dir))
        balance = summary.get("health/class_balance") or None
        recorded = summary.get("health/findings")
        if recorded is not None and not args.replay:
            findings = [Finding.from_dict(f) for f in recorded]
            how = f"recorded by the monitor; {source}"
        else:
            if not rows:
                raise UserError(f"{args.run_dir!r} has no recorded health findings and no logged statistics to replay")
            cfg, warm = rules_config(config)
            findings = replay(rows, cfg, warm, summary=summary).findings
            how = f"replayed from {len(rows)} logged rows and what the monitor measured at start (summary); {source}"
        if args.json:
            print(json.dumps([f.to_dict() for f in findings], indent=1))
        else:
            print(health_table(findings, balance, how))
    return 0


if __name__ == "__main__":
    sys.exit(main())
