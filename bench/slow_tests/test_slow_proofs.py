"""Slow proofs moved out of the test suite (which must stay under 10 minutes in CI). Run them with

    PYTHONPATH=. WANDB_MODE=offline .venv/bin/python -m pytest bench/slow_tests -q

- the demo preset learns clearly better than the mean-target predictor (about 65 s);
- SIGKILL at random points, then resume, gives bit-identical weights (about 63 s).
"""
from __future__ import annotations

import json
import random
import signal
import time

from runner import checkpoint as ckpt
from tests.conftest import run_cli
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
