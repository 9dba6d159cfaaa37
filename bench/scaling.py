"""How cost grows: per-step time and peak memory against image size and grid size.

    python bench/scaling.py                  # every task in this checkout, 3-4 sizes each
    python bench/scaling.py --quick          # 3 sizes each, fewer steps
    python bench/scaling.py --device cuda    # on a GPU: peak memory from torch.cuda.max_memory_allocated

Each (task, size) runs in its own process: the task's default (CPU) preset with its data size
fields scaled (image tasks: x1, x2, x4, x8 of the preset's pixels per side; occupancy: listed grids
up to the seed's 200 x 200 x 121), the preset's model, a batch of min(preset batch, --max-batch; 2 for
occupancy),
and the real Trainer.train_epoch (forward, loss, backward, clip, AdamW, meters, collapse
statistics, one log read) over in-memory batches, so data generation is not timed.

  step time   train/step_time as the Trainer logs it, divided by the steps (after one warm-up step);
  peak memory CPU: the process's peak resident memory over the steps minus its resident memory just
              before the first one (Linux VmHWM, reset through /proc/self/clear_refs): activations,
              gradients, optimizer state, allocator slack; GPU: torch.cuda.max_memory_allocated
              over the steps minus the memory allocated before them.
  saved       bytes of the tensors autograd saves for backward in one step (parameters left out),
              counted with saved_tensors_hooks: exact, and the same on any device (fp32).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# default (CPU) preset per task, and how its data size is scaled
PRESETS = {"sequence": "sequence_demo.yaml", "lanes": "lanes.yaml", "puzzle": "puzzle.yaml",
           "occupancy": "occupancy.yaml"}
IMAGE_FIELDS = ("image_size", "image_height", "image_width", "puzzle_width", "puzzle_height")
IMAGE_SCALES = (1, 2, 4, 8)
MAX_BATCH = {"occupancy": 2}  # a 200 x 200 x 121 step at batch 8 takes ~30 s on this CPU
OCCUPANCY_GRIDS = ([64, 64, 16], [100, 100, 60], [128, 128, 96], [200, 200, 121])


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} CPUs"


def sizes(task: str, quick: bool) -> list[dict]:
    """Data overrides for each size, smallest first."""
    from runner.config import load_config, to_dict

    if task == "occupancy":
        grids = OCCUPANCY_GRIDS[:1] + OCCUPANCY_GRIDS[2:] if quick else OCCUPANCY_GRIDS
        return [{"grid": g} for g in grids]
    data = to_dict(load_config(ROOT / "configs" / PRESETS[task]))["data"]
    fields = [f for f in IMAGE_FIELDS if f in data]
    if not fields:
        raise SystemExit(f"scaling: no image size field among {IMAGE_FIELDS} in task {task!r}")
    scales = IMAGE_SCALES[:3] if quick else IMAGE_SCALES
    return [{f: data[f] * s for f in fields} for s in scales]


def label(over: dict) -> str:
    if "grid" in over:
        return "x".join(map(str, over["grid"]))
    if "image_size" in over:
        return f"{over['image_size']}x{over['image_size']}"
    h = over.get("image_height", over.get("puzzle_height"))
    w = over.get("image_width", over.get("puzzle_width"))
    return f"{h}x{w}" if h and w else json.dumps(over)


# ---------------------------------------------------------------------------- one size, in a worker
def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def worker(args) -> dict:
    import torch
    from torch.utils.data import default_collate

    from runner.build import make_optimizer, seed_everything
    from runner.config import load_config
    from runner.engine import Trainer
    from runner.schedules import make_lr_fn
    from runner.tasks import build_task

    torch.set_num_threads(1)
    over = json.loads(args.over)
    base = load_config(ROOT / "configs" / PRESETS[args.worker])
    batch = min(base.train.batch_size, MAX_BATCH.get(args.worker, args.max_batch))
    cfg = load_config(ROOT / "configs" / PRESETS[args.worker],
                      {**{f"data.{k}": v for k, v in over.items()}, "train.batch_size": batch,
                       "data.train_size": max(batch * 2, 16), "data.val_size": batch})
    device = torch.device(args.device)
    seed_everything(cfg.seed)
    task = build_task(cfg)
    ds = task.dataset("train")
    batches = [default_collate([ds[i * batch + j] for j in range(batch)]) for i in range(2)]
    sample_kib = sum(v.numel() * v.element_size() for v in batches[0].values() if torch.is_tensor(v)) / batch / 1024
    model, criterion = task.model().to(device), task.criterion().to(device)
    optimizer = make_optimizer(model, cfg.optim, criterion, verbose=False)
    n_params = sum(p.numel() for p in model.parameters())
    logs: list[dict] = []

    class Spy:
        state_key = ""

        def on_log(self, trainer, step, values):
            logs.append(dict(values))

        def __getattr__(self, name):
            return lambda *a, **k: None

    bar = type("Bar", (), {"update": lambda s, n: None, "set_postfix_str": lambda s, t: None})()

    def run(steps: int) -> float:
        trainer = Trainer(task=task, model=model, criterion=criterion, optimizer=optimizer,
                          lr_fn=make_lr_fn(cfg.optim, 1000), train_loader=[batches[i % 2] for i in range(steps)],
                          val_loader=[], device=device, epochs=1, log_every=steps, grad_clip=cfg.train.grad_clip,
                          callbacks=[Spy()], progress=False, amp=cfg.train.amp, amp_dtype=cfg.train.amp_dtype)
        trainer.sampler, trainer.batches_per_epoch = None, steps
        t0 = time.perf_counter()
        trainer.train_epoch(1, bar)
        return time.perf_counter() - t0

    # memory is measured from before the first step: its peak holds the activations, gradients and
    # the optimizer state it creates (later steps reuse memory the allocator already holds)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_mem = torch.cuda.memory_allocated()
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            reset = True
        except OSError:
            reset = False
        base_mem = rss_kib("VmRSS") * 1024
    # activations saved for backward in the first step, counted exactly (parameters left out)
    param_ptrs = {p.data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        if t.data_ptr() not in param_ptrs:
            saved[t.data_ptr()] = max(saved.get(t.data_ptr(), 0), t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        warm = run(1)  # first step: allocations, optimizer state, kernels
    steps = max(2, min(args.steps, int(args.budget / max(warm, 1e-3))))
    wall = run(steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base_mem
        peak_total = torch.cuda.max_memory_allocated()
        how = "torch.cuda.max_memory_allocated"
    else:
        hwm = rss_kib("VmHWM") * 1024 if reset else 0
        if not reset or hwm < base_mem:
            import resource

            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak, peak_total, how = hwm - base_mem, hwm, "VmHWM - VmRSS" if reset else "ru_maxrss - VmRSS"
    step_time = logs[-1]["train/step_time"] / steps
    return {"task": args.worker, "size": label(over), "batch": batch, "width": getattr(cfg.model, "width", None),
            "params": n_params, "sample_kib": sample_kib, "warmup_s": warm, "steps": steps, "step_s": step_time,
            "wall_per_step_s": wall / steps, "peak_bytes": peak, "saved_bytes": sum(saved.values()), "peak_total_bytes": peak_total, "memory": how,
            "device": str(device), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None}


# ---------------------------------------------------------------------------- the parent
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--tasks", nargs="+", default=None, help="default: every task in this checkout")
    p.add_argument("--quick", action="store_true", help="3 sizes per task, fewer steps")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--max-batch", type=int, default=8, help="batch = min(preset batch, this)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per size (default 5, quick 3)")
    p.add_argument("--max-step-seconds", type=float, default=60.0,
                   help="skip a size whose predicted step (from the growth so far) would take over half this")
    p.add_argument("--budget", type=float, default=None, help="seconds of timed steps per size (default 30, quick 12)")
    p.add_argument("--markdown", type=Path, help="write the table here")
    p.add_argument("--json", type=Path, help="write the rows here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--over", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.steps = args.steps or (3 if args.quick else 5)
    args.budget = args.budget or (12.0 if args.quick else 30.0)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    from runner.tasks import available

    tasks = [t for t in (args.tasks or available()) if t in PRESETS]
    t_start = time.time()
    print(f"scaling on {args.device}: tasks {', '.join(tasks)}; {load_text()}", flush=True)
    rows = []
    for task in tasks:
        prev = None  # (pixels or voxels, step seconds) of the previous size
        for over in sizes(task, args.quick):
            n = math.prod(next(iter(over.values()))) if "grid" in over else math.prod(over.values())
            if prev and prev[1] > 0:
                # predict from the growth so far (at least linear in the pixels); skip what cannot finish
                guess = prev[1] * (n / prev[0]) ** max(1.0, prev[2])
                if guess * 2 > args.max_step_seconds:
                    print(f"{task} {label(over)}: skipped (about {guess:.0f} s per step predicted; "
                          f"--max-step-seconds {args.max_step_seconds:g})", flush=True)
                    rows.append({"task": task, "size": label(over), "skipped": guess})
                    continue
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", task, "--over", json.dumps(over),
                   "--device", args.device, "--max-batch", str(args.max_batch), "--steps", str(args.steps),
                   "--budget", str(args.budget)]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{task} {label(over)}: failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}",
                      flush=True)
                rows.append({"task": task, "size": label(over), "error": (proc.stderr.strip().splitlines() or ["?"])[-1]})
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["load"] = os.getloadavg()[0]
            exponent = math.log(row["step_s"] / prev[1]) / math.log(n / prev[0]) if prev and prev[1] > 0 else 1.0
            prev = (n, row["step_s"], exponent)
            rows.append(row)
            print(f"{task:<10} {row['size']:>12} batch {row['batch']}: {row['step_s'] * 1e3:9.1f} ms/step "
                  f"({row['steps']} steps), peak {row['peak_bytes'] / 2**20:8.1f} MiB above the "
                  f"{(row['peak_total_bytes'] - row['peak_bytes']) / 2**20:.0f} MiB before the steps; "
                  f"load {row['load']:.2f}", flush=True)
    import torch

    dev = rows[0].get("gpu") if rows and rows[0].get("gpu") else f"CPU ({os.cpu_count()} cores, shared), 1 thread"
    lines = [f"## Scaling: `python bench/scaling.py {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(t_start))}, {dev}, torch {torch.__version__}; "
             f"{time.time() - t_start:.0f} s. Each task's default preset (model width as in the preset) with its "
             f"size scaled, batch min(preset, {args.max_batch}); step time from `train/step_time`; peak memory = "
             + ("torch.cuda.max_memory_allocated during the steps minus the memory allocated before them."
                if args.device == "cuda" else
                "peak resident memory over the steps minus resident memory before the first one (VmHWM reset "
                "via /proc/self/clear_refs): activations, gradients, optimizer state, allocator slack.")
             + " Saved for backward: bytes autograd keeps for one step's backward (exact, parameters excluded)."
             + " Load average (1 min) at each row's end: the machine is shared, step times carry its noise.", "",
             "| task | size | batch | model params | sample (KiB) | step (ms) | steps timed | peak memory (MiB) | "
             "saved for backward (MiB) | load |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['task']} | {r['size']} | | | | skipped: ~{r['skipped']:.0f} s/step predicted | | | | |")
            continue
        if "error" in r:
            lines.append(f"| {r['task']} | {r['size']} | | | | failed: {r['error'][:80]} | | | | |")
            continue
        lines.append(f"| {r['task']} | {r['size']} | {r['batch']} | {r['params']:,} | {r['sample_kib']:.0f} | "
                     f"{r['step_s'] * 1e3:.1f} | {r['steps']} | {r['peak_bytes'] / 2**20:.1f} | "
                     f"{r['saved_bytes'] / 2**20:.1f} | {r['load']:.1f} |")
    text = "\n".join(lines)
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
