"""CUDA checks: the runner's device paths on a real GPU, in one prepared run, with the figures recorded.

    WANDB_MODE=offline python bench/cuda_check.py --out DIR            # on a machine with CUDA
    WANDB_MODE=offline python bench/cuda_check.py --out DIR --device cpu   # the same flow on CPU (dry run)

What it checks, each as a pass/fail line with its figure:

- every task (the four built-in ones and the worked example in examples/keypoints) trains on the GPU
  through `python -m runner.train --wandb` with bf16 autocast: exit 0, finite validation metrics, an
  overlay PNG, best/latest checkpoints and an offline W&B run;
- fp16 autocast (grad scaler), and torch.compile with channels_last;
- the same fp32 run on the GPU and on the CPU: the logged training loss agrees (relative difference per
  log row), and so does the final validation metric;
- the health verdict does not depend on the device: health-suite scenarios (four failures and a healthy run)
  give the same status and the same first alert (rule and cause) on the GPU as on the CPU;
- checkpoints cross devices: a GPU run's latest.pt resumes on the CPU and a CPU run's on the GPU;
- torchrun with one process on the GPU (NCCL);
- the training step reads nothing back from the GPU: with torch.cuda.set_sync_debug_mode("warn"), the
  synchronizing calls of an epoch are counted against its log intervals, for every task;
- runner.health.Monitor in a hand-written loop, and the Lightning HealthCallback on accelerator="gpu":
  a model fed zeros is reported collapsed, a healthy one is not.

Results: <out>/cuda_check.json and <out>/cuda_check.md (also printed); the output of a failed run is kept
in <out>/failed_runs.log. Exit status 1 when a check failed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

EXAMPLE = ROOT / "examples" / "keypoints"
COMMON = ["--no-progress", "--train.epochs=2", "--train.num_workers=0", "--checkpoint.upload=false"]
TASKS = {  # config, settings that make a run take seconds
    "sequence": ("configs/sequence_demo.yaml",
                 ["--data.train_size=512", "--data.val_size=64", "--data.image_size=64", "--train.log_every=8"]),
    "lanes": ("configs/lanes.yaml", ["--data.train_size=256", "--data.val_size=32", "--train.log_every=4"]),
    "puzzle": ("configs/puzzle.yaml", ["--data.train_size=128", "--data.val_size=32", "--train.log_every=4"]),
    "occupancy": ("configs/occupancy.yaml", ["--data.train_size=128", "--data.val_size=16", "--train.log_every=4"]),
    "example": (str(EXAMPLE / "config.yaml"), ["--data.train_size=512", "--data.val_size=64", "--train.log_every=8"]),
}
# health-suite scenarios (bench/health_suite.py, --scale small, seed 0): the verdict must not depend on the
# device. Failures of five kinds (non-finite loss, runaway loss weighting, a stuck loss, a data bug, a model that
# does not train) and a healthy run. (huge_lr is left out: at lr 10 the run is chaotic, and float rounding that
# differs between devices sends it to different failures: measured, GPU vanishing_zero first, CPU collapse first.)
SUITE = ["nan_lr", "lanes_uncertainty", "puzzle_giou", "constant_inputs_sequence", "not_stepping_sequence",
         "healthy_default"]


def launch(name: str, cmd: list[str], runs: Path, cwd: Path = ROOT, timeout: float = 420) -> dict:
    """Run one training command whose run directory lands in `runs`; returns rc, seconds, the run directory,
    its summary and the tail of its output."""
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "2", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(EXAMPLE)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        rc, text = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = 124, f"timed out after {timeout}s\n{e.stdout or ''}{e.stderr or ''}"
    dirs = sorted(c.parent for c in runs.glob("*/config.yaml"))
    run_dir = dirs[-1] if dirs else None
    summary = json.loads((run_dir / "summary.json").read_text()) if run_dir and (run_dir / "summary.json").exists() else {}
    return {"name": name, "cmd": " ".join(cmd), "rc": rc, "seconds": round(time.perf_counter() - t0, 1),
            "run_dir": str(run_dir) if run_dir else None, "summary": summary, "tail": text[-3000:]}


def train(out: Path, name: str, config: str, args: list[str], device: str, launcher=None, cwd: Path = ROOT) -> dict:
    """One `python -m runner.train` run of a config with the check's short settings."""
    runs = out / "runs" / name
    cmd = (launcher or [sys.executable]) + ["-m", "runner.train", "--config", config, *COMMON, *args,
                                            f"--train.device={device}", f"--out_dir={runs}"]
    return launch(name, cmd, runs, cwd)


def scenario(out: Path, name: str, device: str, label: str) -> dict:
    """One health-suite scenario at --scale small, seed 0, on `device` (its own argv, device appended)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import health_suite

    sc = next(s for s in health_suite.SCENARIOS if s.name == name)
    argv = health_suite.argv_for(sc, 0, out / f"suite_{label}", "small") + [f"--train.device={device}"]
    return launch(f"{name} ({label})", argv, out / f"suite_{label}" / name / "seed0")


def rows(run_dir: str | None) -> list[dict]:
    if not run_dir or not (Path(run_dir) / "metrics.jsonl").exists():
        return []
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def val_metrics(run_dir: str | None) -> dict[str, float]:
    last = [r for r in rows(run_dir) if any(k.startswith("val/") for k in r)]
    return {k: v for k, v in (last[-1] if last else {}).items() if k.startswith("val/") and isinstance(v, (int, float))}


def first_finding(summary: dict) -> str | None:
    """The first alert's detector and cause (warnings and failures; notes are not alerts)."""
    found = [f for f in summary.get("health/findings", []) if f.get("severity") in ("failed", "warning")]
    if not found:
        return None
    f = min(found, key=lambda f: f.get("step", 0))
    return f"{f['detector']}/{f.get('cause', f['detector'])}"


# ---------------------------------------------------------------- checks over finished runs

def check_trained(r: dict) -> dict:
    run_dir = Path(r["run_dir"]) if r["run_dir"] else None
    vm = val_metrics(r["run_dir"])
    pngs = list(run_dir.glob("media/*.png")) if run_dir else []
    ckpts = {p.name for p in run_dir.glob("checkpoints/*.pt")} if run_dir else set()
    wandb_runs = list(run_dir.glob("wandb/offline-run-*/run-*.wandb")) if run_dir else []
    problems = []
    if r["rc"] != 0:
        problems.append(f"exit {r['rc']}")
    if r["summary"].get("stop_reason") != "completed":
        problems.append(f"stop_reason {r['summary'].get('stop_reason')}")
    if not vm or not all(math.isfinite(v) for v in vm.values()):
        problems.append(f"validation metrics not finite: {vm}")
    if not pngs:
        problems.append("no overlay PNG")
    if not {"best.pt", "latest.pt"} <= ckpts:
        problems.append(f"checkpoints {sorted(ckpts)}")
    if "--wandb" in r["cmd"] and not wandb_runs:
        problems.append("no offline W&B run")
    primary = {k: round(v, 4) for k, v in vm.items() if k in {"val/pixel_error", "val/loss", "val/f1", "val/iou",
                                                               "val/lane_error", "val/center_error"}}
    found = "; ".join(f"{f.get('severity')} {f.get('detector')}: {f.get('title', '')} at step {f.get('step')}"
                      for f in r["summary"].get("health/findings", []))
    detail = (f"{r['seconds']}s, health {r['summary'].get('health/status')}{' (' + found + ')' if found else ''}, "
              f"{len(pngs)} overlay PNGs, "
              f"checkpoints {sorted(ckpts)}, {primary or dict(list(vm.items())[:2])}")
    return {"check": f"train {r['name']}", "ok": not problems, "detail": "; ".join(problems) or detail}


def check_parity(gpu: dict, cpu: dict) -> dict:
    a = {x["_step"]: x for x in rows(gpu["run_dir"]) if "train/loss" in x}
    b = {x["_step"]: x for x in rows(cpu["run_dir"]) if "train/loss" in x}
    steps = sorted(set(a) & set(b))
    if gpu["rc"] or cpu["rc"] or not steps:
        return {"check": "fp32 GPU vs CPU", "ok": False, "detail": f"rc {gpu['rc']}/{cpu['rc']}, {len(steps)} common rows"}
    rel = [abs(a[s]["train/loss"] - b[s]["train/loss"]) / max(abs(b[s]["train/loss"]), 1e-12) for s in steps]
    va, vb = val_metrics(gpu["run_dir"]), val_metrics(cpu["run_dir"])
    key = "val/pixel_error"
    vrel = abs(va.get(key, math.nan) - vb.get(key, math.nan)) / max(abs(vb.get(key, math.nan)), 1e-12)
    # the first row is a handful of steps from the same initial weights: it must agree closely; later rows
    # drift apart as float rounding differs (cuDNN's algorithms, reduction order), so the run's end is judged
    # by its validation metric
    ok = rel[0] < 1e-3 and vrel < 0.10
    return {"check": "fp32 GPU vs CPU", "ok": ok,
            "detail": f"train/loss rel. diff at step {steps[0]}: {rel[0]:.2e}, max over {len(steps)} rows "
                      f"{max(rel):.2e}; final {key} GPU {va.get(key, math.nan):.3f} vs CPU "
                      f"{vb.get(key, math.nan):.3f} (rel. diff {vrel:.2%})"}


def check_verdict(name: str, gpu: dict, cpu: dict) -> dict:
    sg, sc = gpu["summary"], cpu["summary"]
    same = (sg.get("health/status"), first_finding(sg)) == (sc.get("health/status"), first_finding(sc))
    ok = same and sg.get("health/status") is not None
    return {"check": f"health verdict GPU = CPU (suite scenario {name})", "ok": ok,
            "detail": f"GPU {sg.get('health/status')}, first alert {first_finding(sg)} ({gpu['seconds']}s); "
                      f"CPU {sc.get('health/status')}, first alert {first_finding(sc)} ({cpu['seconds']}s)"}


def check_resumed(label: str, r: dict, epochs: int, source: Path) -> dict:
    """A resumed run continues in its checkpoint's run directory: its summary is read there."""
    summary_file = source.parent.parent / "summary.json"
    done = json.loads(summary_file.read_text()).get("epochs_completed") if summary_file.exists() else None
    ok = r["rc"] == 0 and done == epochs
    return {"check": label, "ok": ok, "detail": f"exit {r['rc']}, epochs_completed {done}, {r['seconds']}s"}


# ---------------------------------------------------------------- in-process checks

def short(path: str) -> str:
    p = Path(path)
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else "/".join(p.parts[-2:])


def sync_counts(device: torch.device) -> list[dict]:
    """Synchronizing CUDA calls during one training epoch of each task (set_sync_debug_mode warn)."""
    from runner.build import make_loaders, make_optimizer
    from runner.config import load_config
    from runner.engine import Trainer
    from runner.schedules import make_lr_fn
    from runner.tasks import build_task

    sys.path.insert(0, str(EXAMPLE))
    small = {"sequence": ("configs/sequence_demo.yaml", {"data.image_size": 48, "model.width": 8}),
             "lanes": ("configs/lanes.yaml", {"model.width": 4, "model.hidden": 16}),
             "puzzle": ("configs/puzzle.yaml", {"model.width": 4, "model.embed": 4}),
             "occupancy": ("configs/occupancy.yaml", {"data.grid": [16, 16, 8]}),
             "example": (str(EXAMPLE / "config.yaml"), {"data.image_size": 16, "model.width": 4, "model.hidden": 16})}
    out = []
    for name, (path, extra) in small.items():
        try:
            bs = 2 if name == "occupancy" else 4
            cfg = load_config(ROOT / path, {**extra, "data.train_size": 24 * bs, "data.val_size": 8,
                                             "train.batch_size": bs, "train.num_workers": 0})
            task = build_task(cfg)
            train_dl, val_dl = make_loaders(cfg, task.dataset("train"), task.dataset("val"), device)
            model, criterion = task.model().to(device), task.criterion().to(device)
            optimizer = make_optimizer(model, cfg.optim, criterion, verbose=False)
            trainer = Trainer(task=task, model=model, criterion=criterion, optimizer=optimizer,
                              lr_fn=make_lr_fn(cfg.optim, 24), train_loader=train_dl, val_loader=val_dl,
                              device=device, epochs=1, log_every=6, progress=False, amp=True)
            batches = [b for b in train_dl]
            trainer.train_loader, trainer.sampler = batches, None
            logs: list[int] = []
            noop = lambda self, *a: None  # noqa: E731
            trainer.callbacks = [type("Spy", (), {"on_log": lambda self, t, step, v: logs.append(step),
                                                  **{h: noop for h in ("on_fit_start", "on_epoch_end", "on_fit_end",
                                                                       "on_interrupt", "on_exception")}})()]
            bar = type("Bar", (), {"update": lambda s, n: None, "set_postfix_str": lambda s, t: None})()
            trainer.train_epoch(1, bar=bar)  # warm-up epoch: cuDNN autotuning, allocator
            logs.clear()
            trainer.state.batch_in_epoch = 0  # (the fit loop resets it between epochs)
            caught: list[tuple] = []  # (message, file, line, the runner's frames, at the log interval)

            def record(message, category, filename, lineno, file=None, line=None):
                import traceback as tb
                stack = tb.extract_stack()
                ours = [f"{short(fr.filename)}:{fr.lineno}" for fr in stack if str(ROOT / "runner") in fr.filename]
                interval = any(fr.name in ("_log_interval", "_read") for fr in stack)  # the interval's / epoch's read
                caught.append((str(message), filename, lineno, " < ".join(reversed(ours[-3:])), interval))
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = record
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.set_sync_debug_mode("warn")
                try:
                    trainer.train_epoch(2, bar=bar)
                finally:
                    if device.type == "cuda":
                        torch.cuda.set_sync_debug_mode("default")
            syncs = [w for w in caught if "synchronizing CUDA operation" in w[0]]
            in_steps = [w for w in syncs if not w[4]]
            where = Counter(f"{short(w[1])}:{w[2]} [{w[3]}]" for w in syncs)
            # the steps: none; the log intervals: the one host read each, plus the epoch's last partial interval
            expected = len(logs) + 1
            ok = len(logs) == 4 and not in_steps and len(syncs) <= expected
            detail = (f"{len(in_steps)} synchronizing calls in the 24 steps, {len(syncs) - len(in_steps)} in the reads "
                      f"of the {len(logs)} log intervals and the epoch's end (at most {expected})")
            if len(syncs) > expected or in_steps:
                detail += f"; from {dict(where.most_common(8))}"
            if in_steps and device.type == "cuda":
                detail += "; " + trace_step_sync(trainer, batches[0])
            out.append({"check": f"host syncs in a training epoch ({name})", "ok": ok, "detail": detail})
        except Exception as e:  # noqa: BLE001  (a check that breaks is a failed check, with its reason)
            out.append({"check": f"host syncs in a training epoch ({name})", "ok": False,
                        "detail": f"{type(e).__name__}: {e} | {traceback.format_exc(limit=3)[-400:]}"})
    return out


def trace_step_sync(trainer, batch) -> str:
    """Which forward operation's backward synchronizes: one step with sync debug mode "error" and autograd's
    anomaly mode, which names the forward call of the backward that raised."""
    import re
    msgs: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *a, **k: msgs.append(str(message))
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            from runner.engine import move
            with torch.autograd.detect_anomaly(check_nan=False):
                trainer.train_step(move(batch, trainer.device, trainer.channels_last))
            return "no error raised in a traced step"
        except RuntimeError as e:
            err = str(e).splitlines()[0][:120]
        finally:
            torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize()
    fwd = [m for m in msgs if "Traceback of forward call" in m]
    op = re.search(r"Error detected in (\w+)", " ".join(msgs))
    frames = re.findall(r'File "[^"]*/(runner/[^"]+)", line (\d+)', fwd[0]) if fwd else []
    return (f"traced: {op.group(1) if op else '?'} from the forward at "
            f"{' < '.join(f'{f}:{n}' for f, n in reversed(frames[-3:])) or '?'} ({err})")


def own_loop(device: torch.device) -> list[dict]:
    """runner.health.Monitor in a hand-written loop on the device: zeros in -> collapse; real inputs -> none."""
    from runner.health import Monitor

    out = []
    for zero in (True, False):
        torch.manual_seed(0)
        w = torch.randn(6, 3, device=device)
        model = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        monitor = Monitor(patience=3, run=None)
        syncs = 0
        step = 0
        for epoch in range(1, 4):
            for _ in range(50):
                step += 1
                x = torch.randn(32, 6, device=device)
                y = x @ w
                pred = model(x * 0 if zero else x)
                loss = torch.nn.functional.mse_loss(pred, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    if device.type == "cuda":
                        torch.cuda.set_sync_debug_mode("warn")
                    monitor.step(pred.detach(), y, losses={"loss": loss.detach()})
                    if device.type == "cuda":
                        torch.cuda.set_sync_debug_mode("default")
                syncs += sum("synchroniz" in str(c.message).lower() for c in caught)
                if step % 10 == 0:
                    monitor.log(step, epoch)
            with torch.no_grad():
                for _ in range(4):
                    x = torch.randn(64, 6, device=device)
                    monitor.eval_step(model(x * 0 if zero else x), x @ w, losses={"loss": torch.zeros((), device=device)})
            monitor.evaluate(step, epoch)
        detectors = sorted({f.detector for f in monitor.findings})
        ok = syncs == 0 and (("collapse" in detectors) if zero else not detectors)
        out.append({"check": f"Monitor in a hand-written loop ({'zero inputs' if zero else 'healthy'})", "ok": ok,
                    "detail": f"status {monitor.status}, findings {detectors}, {syncs} synchronizing calls in "
                              f"{step} monitor.step calls"})
    return out


def lightning(device: torch.device, out_dir: Path) -> list[dict]:
    try:
        import lightning.pytorch as pl
    except ImportError as e:
        return [{"check": "Lightning HealthCallback", "ok": False, "detail": f"lightning not importable: {e}"}]
    sys.path.insert(0, str(ROOT))
    from runner.integrations.lightning import HealthCallback
    from tests.test_lightning import Regressor, loaders

    out = []
    for zero in (True, False):
        torch.manual_seed(0)
        cb = HealthCallback(patience=3)
        trainer = pl.Trainer(max_epochs=2, log_every_n_steps=5, logger=False, callbacks=[cb],
                             default_root_dir=str(out_dir / "lightning"), enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False,
                             accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                             num_sanity_val_steps=0)
        train_dl, val_dl = loaders()
        trainer.fit(Regressor(zero), train_dl, val_dl)
        detectors = sorted({f.detector for f in cb.monitor.findings})
        ok = ("collapse" in detectors) if zero else not detectors
        out.append({"check": f"Lightning HealthCallback on {trainer.strategy.root_device} "
                             f"({'zero inputs' if zero else 'healthy'})", "ok": ok,
                    "detail": f"findings {detectors}, {trainer.global_step} steps"})
    return out


# ---------------------------------------------------------------- main

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--out", type=Path, default=Path("/tmp/cuda-check"))
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--jobs", type=int, default=6)
    args = p.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    dev = args.device
    t0 = time.perf_counter()
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    print("environment:", env, flush=True)
    if dev == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here: run with --device cpu for a dry run", file=sys.stderr)
        return 2

    jobs = {}
    with ThreadPoolExecutor(args.jobs) as pool:
        for name, (config, extra) in TASKS.items():
            cwd = EXAMPLE if name == "example" else ROOT
            cfg = "config.yaml" if name == "example" else config
            jobs[f"train_{name}"] = pool.submit(train, out, name, cfg, [*extra, "--wandb"], dev, cwd=cwd)
        seq_cfg, seq_extra = TASKS["sequence"]
        jobs["fp16"] = pool.submit(train, out, "fp16", seq_cfg, [*seq_extra, "--train.amp_dtype=fp16"], dev)
        jobs["compile"] = pool.submit(train, out, "compile", seq_cfg,
                                      [*seq_extra, "--train.compile=true", "--train.channels_last=true"], dev)
        fp32 = [*seq_extra, "--train.amp=false", "--train.epochs=1"]
        jobs["fp32_gpu"] = pool.submit(train, out, "fp32_gpu", seq_cfg, fp32, dev)
        jobs["fp32_cpu"] = pool.submit(train, out, "fp32_cpu", seq_cfg, fp32, "cpu")
        for name in SUITE:
            jobs[f"suite_{name}_gpu"] = pool.submit(scenario, out, name, dev, "gpu")
            jobs[f"suite_{name}_cpu"] = pool.submit(scenario, out, name, "cpu", "cpu")
        jobs["cpu_for_resume"] = pool.submit(train, out, "cpu_for_resume", seq_cfg, seq_extra, "cpu")
        jobs["torchrun"] = pool.submit(train, out, "torchrun", seq_cfg, seq_extra, dev,
                                       launcher=[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1",
                                                 "--master_port=29533"])
        # in-process checks run beside the subprocesses
        inproc = []
        device = torch.device(dev)
        for fn in (sync_counts, own_loop):
            try:
                inproc += fn(device)
            except Exception as e:  # noqa: BLE001
                inproc.append({"check": fn.__name__, "ok": False, "detail": f"{type(e).__name__}: {e}"})
        try:
            inproc += lightning(device, out)
        except Exception as e:  # noqa: BLE001
            inproc.append({"check": "Lightning HealthCallback", "ok": False, "detail": f"{type(e).__name__}: {e}"})
        done = {k: f.result() for k, f in jobs.items()}
        # resume across devices, from the runs above (3 epochs: one more than they trained)
        res = {}
        gpu_latest = Path(done["train_sequence"]["run_dir"] or "/nonexistent") / "checkpoints" / "latest.pt"
        cpu_latest = Path(done["cpu_for_resume"]["run_dir"] or "/nonexistent") / "checkpoints" / "latest.pt"
        res["gpu_to_cpu"] = pool.submit(train, out, "gpu_to_cpu", seq_cfg,
                                        [*seq_extra, "--train.epochs=3", "--resume", str(gpu_latest)], "cpu")
        res["cpu_to_gpu"] = pool.submit(train, out, "cpu_to_gpu", seq_cfg,
                                        [*seq_extra, "--train.epochs=3", "--resume", str(cpu_latest)], dev)
        resumed = {k: f.result() for k, f in res.items()}

    results = [check_trained(done[f"train_{n}"]) for n in TASKS]
    results += [check_trained(done["fp16"]), check_trained(done["compile"])]
    results[-2]["check"], results[-1]["check"] = "train sequence, fp16 autocast", "train sequence, compile + channels_last"
    results.append(check_parity(done["fp32_gpu"], done["fp32_cpu"]))
    results += [check_verdict(n, done[f"suite_{n}_gpu"], done[f"suite_{n}_cpu"]) for n in SUITE]
    results.append(check_resumed("GPU checkpoint resumed on CPU", resumed["gpu_to_cpu"], 3, gpu_latest))
    results.append(check_resumed("CPU checkpoint resumed on GPU", resumed["cpu_to_gpu"], 3, cpu_latest))
    tr = check_trained(done["torchrun"])
    tr["check"] = "torchrun --nproc_per_node=1 (NCCL)"
    results.append(tr)
    results += inproc

    with (out / "failed_runs.log").open("w") as f:
        for r in [*done.values(), *resumed.values()]:
            if r["rc"] != 0:
                f.write(f"==== {r['name']} rc {r['rc']}\n{r['cmd']}\n{r['tail']}\n")
    ok = all(r["ok"] for r in results)
    lines = [f"# CUDA check ({time.strftime('%Y-%m-%d')}, {time.perf_counter() - t0:.0f} s)", "",
             f"`WANDB_MODE=offline python bench/cuda_check.py --device {dev}`; {env}", "",
             "| check | result | figure |", "| --- | --- | --- |"]
    lines += [f"| {r['check']} | {'pass' if r['ok'] else 'FAIL'} | {r['detail']} |" for r in results]
    lines += ["", f"{sum(r['ok'] for r in results)}/{len(results)} passed"]
    text = "\n".join(lines)
    print(text)
    (out / "cuda_check.md").write_text(text + "\n")
    timings = {k: v["seconds"] for k, v in {**done, **resumed}.items()}
    (out / "cuda_check.json").write_text(json.dumps({"env": env, "results": results, "seconds": timings}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
