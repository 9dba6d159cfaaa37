"""Shared helpers: run the real CLI in a subprocess and read W&B runs back with W&B's own tool."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def run_cli(module: str, *args: str, cwd: Path | None = None, timeout: int = 600,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m <module> args...` as a user would run it; returns the finished process."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT), **(env or {})}
    # a test that ran wandb in this process leaves WANDB_SERVICE set: a child would then log through this
    # process's W&B service and exit before its run is flushed. A user's command starts its own.
    full_env.pop("WANDB_SERVICE", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def wandb_bin() -> str:
    return str(Path(sys.executable).parent / "wandb")


def inspect_records(wandb_run_dir: str | Path) -> list[dict]:
    """Every record of an offline run, via `wandb leet inspect --json`."""
    out = subprocess.run([wandb_bin(), "leet", "inspect", "--json", str(wandb_run_dir)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def inspect_summary(wandb_run_dir: str | Path) -> dict:
    out = subprocess.run([wandb_bin(), "leet", "inspect", "--summary", "--json", str(wandb_run_dir)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(out)


def find_wandb_run(run_root: Path) -> Path:
    """The single offline-run-* directory under a runner run directory."""
    runs = sorted(Path(run_root).glob("**/wandb/offline-run-*"))
    assert len(runs) == 1, f"expected one W&B run under {run_root}, found {runs}"
    return runs[0]


def history(records: list[dict]) -> list[dict]:
    return [r["history"]["item"] for r in records if r.get("type") == "history"]


@pytest.fixture
def out_dir(tmp_path) -> Path:
    d = tmp_path / "runs"
    d.mkdir()
    return d


# Tensor methods that read a value to the host (a device sync on an accelerator)
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


def count_host_reads(monkeypatch) -> dict[str, int]:
    """Count calls of every HOST_READS method of torch.Tensor from now on (monkeypatch.undo() stops it)."""
    import torch

    counts = {name: 0 for name in HOST_READS}
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=original, _name=name, **k):
            counts[_name] += 1
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts

