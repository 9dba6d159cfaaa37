"""Slow proofs moved out of the test suite (which must stay under 10 minutes in CI). Run them with

    PYTHONPATH=. WANDB_MODE=offline .venv/bin/python -m pytest bench/slow_tests -q

- the demo preset learns clearly better than the mean-target predictor (about 65 s);
- SIGKILL at random points, then resume, gives bit-identical weights (about 63 s);
- two-process DDP matches one process on the same global batch (about 31 s).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
import random
import signal
import time

from runner import checkpoint as ckpt
from tests.conftest import ROOT, find_wandb_run, run_cli  # noqa: F401
from tests.test_distributed import ARGS, free_port, rows  # noqa: F401
from tests.test_reliability import (BASE, assert_same_weights, final_weights, popen,  # noqa: F401 (fixture)
                                    reference, wait_for_lines)


def test_demo_config_learns_clearly_better_than_the_mean_predictor(tmp_path):
    """A few CPU minutes of the demo preset beat always predicting the mean target."""
    p = run_cli("runner.train", "--config", "configs/sequence_demo.yaml", "--no-progress",
                "--train.epochs=4", "--data.train_size=2048", f"--out_dir={tmp_path}")
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(next(tmp_path.iterdir()).joinpath("summary.json").read_text())
    rows = [json.loads(l) for l in next(tmp_path.iterdir()).joinpath("metrics.jsonl").read_text().splitlines()]
    err = [r["val/pixel_error"] for r in rows if "val/pixel_error" in r][-1]
    base = summary["baseline/pixel_error"]
    print(f"val/pixel_error {err:.1f} px vs mean-target baseline {base:.1f} px")
    assert err < 0.6 * base


def test_sigkill_at_random_points_then_resume_gives_identical_weights(reference, tmp_path):
    rng = random.Random(1234)
    kills, seen = 0, 0
    for attempt in range(12):
        proc = popen([*BASE, "--train.epochs=5", "--resume", "auto"], tmp_path)
        if attempt < 4:  # at a random point of training: in a step, a checkpoint write or validation
            seen += rng.randint(3, 9)
            wait_for_lines(tmp_path, seen, proc)
            time.sleep(rng.uniform(0.0, 0.2))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.communicate(timeout=60)
        else:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-2000:]
            break
        for f in tmp_path.glob("*/checkpoints/*.pt"):  # nothing truncated, ever
            ckpt.load(f)
    assert kills >= 2
    assert_same_weights(final_weights(tmp_path), reference)


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
    assert abs(last_m["val/gt/std"] - last_o["val/gt/std"]) < 1e-5  # val shards recombined, each sample once (63: odd)
    assert abs(last_m["val/pixel_error"] - last_o["val/pixel_error"]) < 0.01 * last_o["val/pixel_error"]
