"""Does the data keep up? Synthetic generator and loader throughput, and data time vs step time.

    python bench/data_throughput.py            # every task in this checkout, default + seed-sized presets
    python bench/data_throughput.py --quick    # fewer samples, workers 0 and 1 only
    python bench/data_throughput.py --tasks sequence --markdown out.md

For each task (those in this checkout's registry) and each distinct data setup among its
configs/*.yaml presets plus the task's own defaults (the seed's size):

  generator    samples/s of dataset[i] in this process: what one DataLoader worker delivers;
  loader       samples/s through runner.build.make_loaders (the real sampler, batch size and
               collation) with 0 (main process), 1 and 2 workers, and per worker;
  data/step    for each default (CPU) preset, `train/data_time` and `train/step_time` as the
               Trainer logs them over two log intervals of real training with the preset's own
               settings (num_workers included): the fraction the dashboard shows. Goal: < 5%.

Everything runs with torch.set_num_threads(1). The machine's load average is printed; on a shared
machine the generator figures fall with the load, so compare presets measured in one run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402

from runner.build import make_loaders, make_optimizer, seed_everything  # noqa: E402
from runner.config import build_config, load_config, to_dict  # noqa: E402
from runner.engine import Trainer  # noqa: E402
from runner.schedules import make_lr_fn  # noqa: E402
from runner.tasks import available, build_task  # noqa: E402


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} CPUs"


SEED_PRESETS = {"sequential_attention.yaml"}  # the seed's own settings under another name


def data_key(cfg) -> str:
    """What makes two presets' data differ for throughput: everything but the split sizes."""
    d = {k: v for k, v in to_dict(cfg)["data"].items() if k not in ("train_size", "val_size")}
    return yaml.safe_dump(d, sort_keys=True)


def presets(task: str) -> list[tuple[str, object, str]]:
    """(label, config, kind) for each distinct data setup of a task: its configs, then its defaults
    (the task's DataConfig defaults are the seed's sizes). kind: "seed" for seed-sized presets."""
    out, seen = [], set()
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        if raw.get("task") != task:
            continue
        cfg = load_config(path)
        key = data_key(cfg)
        if key in seen:
            continue
        seen.add(key)
        kind = ("control" if "broken" in path.stem else
                "seed" if "seed" in path.stem or path.name in SEED_PRESETS else "default")
        out.append((f"configs/{path.name}", cfg, kind))
    defaults = build_config({"task": task})
    if data_key(defaults) not in seen:
        out.append((f"{task} defaults (no config file)", defaults, "task defaults"))
    return out


def describe(cfg) -> str:
    d = to_dict(cfg)["data"]
    size = {k: d[k] for k in ("image_size", "image_height", "image_width", "puzzle_height", "puzzle_width",
                              "piece_size", "grid") if k in d}
    return ", ".join(f"{k} {v}" for k, v in size.items()) + f", batch {cfg.train.batch_size}"


def generator_rate(ds, seconds: float, max_samples: int) -> tuple[float, int]:
    """Samples/s of ds[i] over about `seconds` (at least 3 samples), in this process."""
    ds[0]  # warm-up (imports, caches)
    n, t0 = 0, time.perf_counter()
    while n < max_samples and (n < 3 or time.perf_counter() - t0 < seconds):
        ds[(n + 1) % len(ds)]
        n += 1
    return n / (time.perf_counter() - t0), n


def loader_rate(cfg, ds, workers: int, seconds: float, max_batches: int) -> tuple[float, int]:
    """Samples/s through the real train loader with `workers` workers, after its first batch."""
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_workers": workers})})
    train, _ = make_loaders(cfg, ds, ds, torch.device("cpu"))
    it = iter(train)
    next(it)  # worker start-up and the first batch are not throughput
    n, batches, t0 = 0, 0, time.perf_counter()
    for batch in it:
        n += next(v for v in batch.values() if torch.is_tensor(v)).shape[0]
        batches += 1
        if batches >= max_batches or (batches >= 2 and time.perf_counter() - t0 > seconds):
            break
    rate = n / (time.perf_counter() - t0)
    del it, train
    return rate, n


def data_step_fraction(cfg, intervals: int = 2, workers: int | None = None) -> dict:
    """train/data_time and train/step_time as the Trainer logs them over `intervals` log intervals,
    with the preset's num_workers or `workers`."""
    if workers is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_workers": workers})})
    seed_everything(cfg.seed)
    task = build_task(cfg)
    train_ds, val_ds = task.dataset("train"), task.dataset("val")
    train_dl, val_dl = make_loaders(cfg, train_ds, val_ds, torch.device("cpu"))
    model, criterion = task.model(), task.criterion()
    optimizer = make_optimizer(model, cfg.optim, criterion, verbose=False)
    steps = cfg.train.log_every * intervals
    logs: list[dict] = []

    class Spy:
        state_key = ""

        def on_log(self, trainer, step, values):
            logs.append(dict(values))

        def __getattr__(self, name):  # every other hook: nothing
            return lambda *a, **k: None

    trainer = Trainer(task=task, model=model, criterion=criterion, optimizer=optimizer,
                      lr_fn=make_lr_fn(cfg.optim, steps), train_loader=train_dl, val_loader=val_dl,
                      device=torch.device("cpu"), epochs=1, max_train_iters=steps, log_every=cfg.train.log_every,
                      grad_clip=cfg.train.grad_clip, callbacks=[Spy()], progress=False)
    trainer.train_epoch(1, bar=type("Bar", (), {"update": lambda s, n: None, "set_postfix_str": lambda s, t: None})())
    # the first interval holds worker start-up; report both and judge on the later ones
    data = [v["train/data_time"] for v in logs]
    step = [v["train/step_time"] for v in logs]
    return {"steps": steps, "data": data, "step": step,
            "fraction_all": sum(data) / sum(step), "fraction_after_first": sum(data[1:]) / max(sum(step[1:]), 1e-9),
            "step_ms": 1e3 * sum(step) / steps, "data_ms": 1e3 * sum(data) / steps}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--tasks", nargs="+", default=None, help="default: every task in this checkout")
    p.add_argument("--quick", action="store_true", help="fewer samples; workers 0 and 1 only")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="default: 0 1 2")
    p.add_argument("--no-fraction", action="store_true", help="skip the training runs (data/step)")
    p.add_argument("--fraction-workers", type=int, nargs="*", default=None,
                   help="also measure data/step with these num_workers (default: 1 2; quick: 1)")
    p.add_argument("--markdown", type=Path, help="write the tables here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    workers = args.workers or ([0, 1] if args.quick else [0, 1, 2])
    if args.fraction_workers is None:
        args.fraction_workers = [1] if args.quick else [1, 2]
    seconds = 1.5 if args.quick else 4.0
    tasks = args.tasks or available()
    t_start = time.time()
    print(f"data throughput: tasks {', '.join(tasks)}; torch {torch.__version__}, 1 thread; {load_text()}", flush=True)

    gen_rows, frac_rows = [], []
    for task in tasks:
        for label, cfg, kind in presets(task):
            ds = build_task(cfg).dataset("train")
            rate, n = generator_rate(ds, seconds, 400)
            sample = ds[0]
            nbytes = sum(v.numel() * v.element_size() for v in sample.values() if torch.is_tensor(v))
            row = {"task": task, "preset": label, "kind": kind, "size": describe(cfg), "gen": rate, "gen_n": n,
                   "kb": nbytes / 1024, "loaders": {}}
            for w in workers:
                batches = max(2, int(rate * seconds * max(w, 1) / cfg.train.batch_size) + 1)
                lr, ln = loader_rate(cfg, ds, w, seconds, min(batches, 60))
                row["loaders"][w] = (lr, ln)
            gen_rows.append(row)
            print(f"{task:<10} {label:<36} {kind:<7} {row['size']}: generator {rate:8.1f} samples/s ({n}); loader "
                  + ", ".join(f"{w} workers {r:.1f}/s" for w, (r, _) in row["loaders"].items())
                  + f"; {load_text()}", flush=True)
            if kind == "default" and not args.no_fraction:
                for w in sorted({cfg.train.num_workers, *args.fraction_workers}):
                    f = data_step_fraction(cfg, workers=w)
                    f.update(task=task, preset=label, workers=w, batch=cfg.train.batch_size,
                             own=w == cfg.train.num_workers)
                    frac_rows.append(f)
                    print(f"{'':<10} data/step over {f['steps']} steps (num_workers {w}): "
                          f"{f['fraction_all']:.2%} (after the first interval {f['fraction_after_first']:.2%}); "
                          f"step {f['step_ms']:.1f} ms, data {f['data_ms']:.2f} ms per step", flush=True)

    lines = [f"## Data throughput: `python bench/data_throughput.py {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(t_start))}, CPU ({os.cpu_count()} cores, shared with "
             f"other work), torch {torch.__version__}, 1 thread per process; {load_text()} at the end; "
             f"{time.time() - t_start:.0f} s.", "",
             "Samples/s: `generator` is dataset[i] in one process (= one DataLoader worker); `loader N` goes "
             "through runner.build.make_loaders with N workers (0 = in the main process); per worker = loader N / N.",
             "", "| task | preset | kind | size | sample (KiB) | generator (samples/s) | "
             + " | ".join(f"loader {w} (/s)" for w in workers) + " | per worker at "
             + f"{max(workers)} |", "|---|---|---|---|---:|---:|" + "---:|" * len(workers) + "---:|"]
    for r in gen_rows:
        wmax = max(workers)
        per = r["loaders"][wmax][0] / max(wmax, 1)
        lines.append(f"| {r['task']} | {r['preset']} | {r['kind']} | {r['size']} | {r['kb']:.0f} | {r['gen']:.1f} | "
                     + " | ".join(f"{r['loaders'][w][0]:.1f}" for w in workers) + f" | {per:.1f} |")
    if frac_rows:
        lines += ["", "Data time as a fraction of step time, default presets, as logged by the Trainer "
                  "(`train/data_time` / `train/step_time`, summed over the intervals), with the preset's own "
                  "num_workers (marked *) and with more workers. Goal: < 5%.", "",
                  "| task | preset | batch | num_workers | steps | step (ms) | data (ms/step) | data/step, all | "
                  "data/step, after the first interval | goal < 5% |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for f in frac_rows:
            ok = "met" if f["fraction_after_first"] < 0.05 else "**missed**"
            lines.append(f"| {f['task']} | {f['preset']} | {f['batch']} | {f['workers']}{'*' if f['own'] else ''} | "
                         f"{f['steps']} | {f['step_ms']:.1f} | {f['data_ms']:.2f} | {f['fraction_all']:.2%} | "
                         f"{f['fraction_after_first']:.2%} | {ok} |")
    text = "\n".join(lines)
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
