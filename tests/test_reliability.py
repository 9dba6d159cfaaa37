"""Faults: kills and resumes, SIGTERM, non-finite steps, bad checkpoints, secrets, unreachable W&B."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from runner import checkpoint as ckpt
from tests.conftest import ROOT, find_wandb_run, run_cli

BASE = ["--config", "configs/sequence_demo.yaml", "--no-progress", "--data.train_size=192", "--data.val_size=32",
        "--data.image_size=48", "--data.radius=2", "--model.width=8", "--train.batch_size=32",
        "--train.log_every=1", "--viz.n_samples=2", "--early_stop.enabled=False"]
STEPS = 5 * 6  # 5 epochs of 6 steps


def wait_for_lines(out_dir: Path, n: int, proc, timeout: float = 120) -> None:
    """Block until the run's metrics.jsonl has n lines (one per step, one per epoch)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        files = list(out_dir.glob("*/metrics.jsonl"))
        if files and sum(len(f.read_text().splitlines()) for f in files) >= n:
            return
        time.sleep(0.05)


def popen(args, out_dir, env=None):
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "runner.train", *args, f"--out_dir={out_dir}"], cwd=ROOT,
                            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    (latest,) = [p for p in out_dir.glob("*/checkpoints/latest.pt") if ckpt.load(p)["epoch"] == 5]
    return ckpt.load(latest)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    p = run_cli("runner.train", *BASE, "--train.epochs=5", f"--out_dir={out}")
    assert p.returncode == 0, p.stderr[-2000:]
    return final_weights(out)


def test_sigterm_saves_mid_epoch_resumes_same_wandb_run_and_weights(reference, tmp_path):
    proc = popen([*BASE, "--train.epochs=5", "--wandb"], tmp_path)
    wait_for_lines(tmp_path, 10, proc)  # in the middle of epoch 2
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    resume_lines = [l for l in err.splitlines() if "resume with:" in l]
    assert len(resume_lines) == 1 and "--resume" in resume_lines[0] and "SIGTERM" in resume_lines[0]
    latest = next(tmp_path.glob("*/checkpoints/latest.pt"))
    saved = ckpt.load(latest)
    assert saved["interrupted"] == "SIGTERM" and saved["run_state"]["batch_in_epoch"] > 0  # mid-epoch
    p = run_cli("runner.train", *BASE, "--train.epochs=5", "--wandb", "--resume", str(latest), f"--out_dir={tmp_path}")
    assert p.returncode == 0, p.stderr[-2000:]
    run_dirs = list(tmp_path.iterdir())
    assert len(run_dirs) == 1  # resumed in the same run directory
    wandb_runs = sorted(run_dirs[0].glob("wandb/offline-run-*"))
    ids = {w.name.rsplit("-", 1)[1] for w in wandb_runs}
    assert len(ids) == 1 and ids == {run_dirs[0].name.rsplit("-", 1)[1]}  # one W&B run id: one dashboard run
    assert_same_weights(final_weights(tmp_path), reference)


def test_nonfinite_steps_are_skipped_and_stop_the_run_naming_the_term(tmp_path):
    p = run_cli("runner.train", *BASE, "--train.epochs=2", "--optim.lr=1e30", "--optim.warmup_steps=0",
                "--train.nonfinite_patience=3", f"--out_dir={tmp_path}")
    assert p.returncode == 1
    line = [l for l in p.stderr.splitlines() if "non-finite" in l]
    assert line and "consecutive non-finite steps" in line[0] and "first non-finite value was 'loss" in line[0]
    rows = (next(tmp_path.iterdir()) / "metrics.jsonl").read_text()
    assert "health/nonfinite_steps" in rows
    for f in tmp_path.glob("*/checkpoints/best.pt"):  # a non-finite model is never the best
        assert all(torch.isfinite(v).all() for v in ckpt.load(f)["model"].values() if v.is_floating_point())


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("good")
    p = run_cli("runner.train", *BASE, "--train.epochs=1", f"--out_dir={out}")
    assert p.returncode == 0, p.stderr[-2000:]
    return next(out.glob("*/checkpoints/latest.pt"))


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {Path(os.environ.get('PAYLOAD_MARK', '/tmp/x'))}",))


def bad_checkpoints(good: Path, tmp: Path) -> list[tuple[str, list[str], str]]:
    truncated = tmp / "truncated.pt"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    other_task = tmp / "other_task.pt"
    state = ckpt.load(good)
    state["config"] = {**state["config"], "task": "lanes"}
    torch.save(state, other_task)
    evil = tmp / "evil.pt"
    torch.save({"format_version": 1, "model": {}, "x": Payload()}, evil)
    return [
        ("missing", ["--resume", str(tmp / "nope.pt")], "does not exist"),
        ("truncated", ["--resume", str(truncated)], "truncated or corrupt"),
        ("other task", ["--resume", str(other_task)], "from task 'lanes', not 'sequence'"),
        ("other shape", ["--resume", str(good), "--model.width=4"], "does not fit this model"),
        ("pickle", ["--resume", str(evil)], "was refused"),
    ]


def test_bad_checkpoints_give_one_line_and_exit_2_and_never_run_code(good_checkpoint, tmp_path, capsys,
                                                                    monkeypatch):
    from runner.train import main
    mark = tmp_path / "payload-ran"
    monkeypatch.setenv("PAYLOAD_MARK", str(mark))
    for name, args, fragment in bad_checkpoints(good_checkpoint, tmp_path):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main([*BASE, "--train.epochs=2", *args, f"--out_dir={tmp_path}/runs"])
        err = capsys.readouterr().err
        lines = [l for l in err.splitlines() if l.strip()]
        assert exc.value.code == 2, (name, err)
        assert len(lines) == 1 and fragment in lines[0], (name, lines)
    assert not mark.exists()
    assert ckpt.load(good_checkpoint)["epoch"] == 1  # the good checkpoint is untouched


def test_shape_mismatch_names_the_key(good_checkpoint, tmp_path, capsys):
    from runner.train import main
    with pytest.raises(SystemExit):
        main([*BASE, "--resume", str(good_checkpoint), "--model.width=4", f"--out_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert "backbone.0.0.weight" in err and "(8, 5, 3, 3)" in err and "(4, 5, 3, 3)" in err


def test_collapsed_checkpoint_needs_force(good_checkpoint, tmp_path):
    state = ckpt.load(good_checkpoint)
    state["health"] = {"status": "failed", "summary": "prediction collapse (pred std 0.004 vs gt std 0.29)"}
    run_dir = tmp_path / "sequence-x-abcdefgh"
    path = ckpt.save_atomic(state, run_dir / "checkpoints" / "latest.pt")
    p = run_cli("runner.train", *BASE, "--train.epochs=2", "--resume", str(path), f"--out_dir={tmp_path}")
    assert p.returncode == 2 and "prediction collapse" in p.stderr and "--force" in p.stderr
    p = run_cli("runner.train", *BASE, "--train.epochs=2", "--resume", str(path), "--force", f"--out_dir={tmp_path}")
    assert p.returncode == 0, p.stderr[-1500:]


def test_api_key_never_reaches_run_files_and_unreachable_wandb_falls_back_offline(tmp_path):
    secret = "s3cr3t" + "x" * 34
    env = {"WANDB_MODE": "", "WANDB_API_KEY": secret, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    env_clean = {k: v for k, v in {**os.environ, "PYTHONPATH": str(ROOT), **env}.items() if k != "WANDB_MODE"}
    p = subprocess.run([sys.executable, "-m", "runner.train", *BASE, "--train.epochs=1", "--wandb",
                        "--wandb-mode", "online", "--wandb.init_timeout=3", f"--out_dir={tmp_path}"], cwd=ROOT,
                       env=env_clean, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    warn = [l for l in p.stderr.splitlines() if l.startswith("runner: warning: W&B online is unreachable")]
    assert len(warn) == 1 and "wandb sync" in warn[0]
    run_dir = next(tmp_path.iterdir())
    find_wandb_run(run_dir)  # the offline W&B run exists
    assert (run_dir / "checkpoints" / "latest.pt").is_file()
    leaked = [str(f) for f in run_dir.rglob("*") if f.is_file() and secret.encode() in f.read_bytes()]
    assert not leaked and secret not in p.stdout + p.stderr
