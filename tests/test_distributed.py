"""torchrun with 2 CPU processes (gloo): one W&B run, statistics over the global batch."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, find_wandb_run, run_cli

ARGS = ["--config", "configs/sequence_demo.yaml", "--no-progress", "--data.train_size=256", "--data.val_size=64",
        "--data.image_size=48", "--data.radius=2", "--model.width=8", "--train.log_every=2", "--train.epochs=1",
        "--optim.lr=1e-9", "--viz.n_samples=2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows(out: Path) -> list[dict]:
    (f,) = list(out.glob("*/metrics.jsonl"))
    return [json.loads(l) for l in f.read_text().splitlines()]


def test_two_process_ddp_matches_single_process_on_the_same_global_batch(tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([torchrun, "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
                        "-m", "runner.train", *ARGS, "--train.batch_size=16", "--wandb", f"--out_dir={tmp_path}/multi"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    run_dirs = list((tmp_path / "multi").iterdir())
    assert len(run_dirs) == 1  # rank 0 alone writes the run
    find_wandb_run(run_dirs[0])  # exactly one W&B run directory
    assert len(list(run_dirs[0].glob("checkpoints/latest.pt"))) == 1
    s = run_cli("runner.train", *ARGS, "--train.batch_size=32", f"--out_dir={tmp_path}/single")
    assert s.returncode == 0, s.stderr[-3000:]
    multi, single = rows(tmp_path / "multi"), rows(tmp_path / "single")
    assert len(multi) == len(single)
    for m, o in zip(multi, single):
        if "gt/std" in m:  # targets of the same global batch: equal up to float summation order
            assert abs(m["gt/std"] - o["gt/std"]) < 1e-5
            assert abs(m["pred/std"] - o["pred/std"]) < 0.05 * o["pred/std"] + 1e-6
            assert abs(m["train/loss"] - o["train/loss"]) < 0.01 * o["train/loss"]
    last_m, last_o = multi[-1], single[-1]
    assert abs(last_m["val/gt/std"] - last_o["val/gt/std"]) < 1e-5  # val shards recombined
    assert abs(last_m["val/pixel_error"] - last_o["val/pixel_error"]) < 0.01 * last_o["val/pixel_error"]
