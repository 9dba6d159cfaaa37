"""What the runner costs over a hand-written loop, beside PyTorch Lightning + WandbLogger.

    python bench/overhead.py                 # default: batch 8 and 64, 4 rounds (~10 min on a loaded 2-core CPU)
    python bench/overhead.py --quick         # 2 rounds, fewer steps (~4 min)
    python bench/overhead.py --rounds 10     # tighter interquartile ranges
    python bench/overhead.py --profile-only  # only the in-process cost of each runner operation per step
    python bench/overhead.py --markdown bench/overhead.md   # also write the tables as Markdown

Three variants train the same model (the sequence task's PointerNet), on the same pre-generated
in-memory data, with the same optimizer (runner.build.make_optimizer: fused AdamW, decay groups),
learning-rate schedule, gradient clipping (1.0) and number of steps, validating once per epoch:

  bare       a plain PyTorch loop: no logging, no checkpoints, one host read per validation;
  runner     runner.train.fit itself (the callbacks train.py builds: early stopping, overlays, checkpoints
             with W&B artifacts, W&B offline tracking at the default log interval, the health monitor
             when this checkout has one); only the task's datasets are swapped for the in-memory ones;
  lightning  a LightningModule with the same loss, logging the same scalars (loss terms, grad norms per
             head, prediction/target statistics, lr, data/step time) every `log_every` steps through
             WandbLogger (WANDB_MODE=offline, log_model="all": checkpoints as artifacts each epoch).

Each round runs bare, runner, lightning one after another, each in its own process (so whole-process
wall time is measured too), with torch.set_num_threads(1). In every process the time at which each
step ends is recorded; per-step time is the median of the differences, loop time per step is the
epoch's training loop time divided by its steps (log intervals amortized; validation, overlays and
checkpoints excluded). Ratios are taken pair by pair within a round, and their median over rounds is
reported with the interquartile range. The load average of the machine is printed with each round.

--profile (on by default) then times, in one process, the runner's own per-step work apart from the
model: the extra operations in Trainer.train_step (per-head gradient norms, non-finite tracking), the
on-device meters and collapse statistics, and the host read + W&B log of a log interval.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from timing import load_text, quantiles  # noqa: E402  (bench/timing.py)

VARIANTS = ("bare", "runner", "lightning")
EXTRA_VARIANTS = ("bare_wandb",)  # --variants bare bare_wandb runner lightning: W&B's own share
IMAGE_SIZE, WIDTH, VAL_BATCHES = 64, 16, 2


# ---------------------------------------------------------------------------- shared pieces
def make_config(batch: int, steps: int, epochs: int, out_dir: str, log_every: int | None = None):
    from runner.config import build_config

    raw = {
        "task": "sequence", "seed": 0, "out_dir": out_dir,
        "data": {"image_size": IMAGE_SIZE, "min_objects": 6, "max_objects": 14, "radius": 3,
                 "train_size": steps * batch, "val_size": VAL_BATCHES * batch},
        "model": {"width": WIDTH},
        "train": {"epochs": epochs, "batch_size": batch, "device": "cpu", "num_workers": 0},
        "early_stop": {"patience": 100},  # every variant runs every epoch
        "wandb": {"enabled": True, "mode": "offline", "project": "runner-bench"},
    }
    if log_every:
        raw["train"]["log_every"] = log_every
    return build_config(raw)


def generate_data(path: Path, n_train: int, n_val: int) -> None:
    """Pre-generate the sequence task's samples once; every process loads the same tensors."""
    import torch
    from torch.utils.data import default_collate

    from runner.data.synthetic.sequence import SequenceDataset
    from runner.tasks.sequence import SequenceTask

    task = SequenceTask(make_config(8, 1, 1, "/tmp"))
    spec = task.spec()
    data = {split: default_collate([SequenceDataset(spec, split, n)[i] for i in range(n)])
            for split, n in (("train", n_train), ("val", n_val))}
    torch.save(data, path)


class MemoryDataset:
    """`length` samples cycling over pre-generated tensors (dict of [U, ...] tensors)."""

    def __init__(self, tensors: dict, length: int):
        self.tensors, self.length = tensors, length
        self.unique = next(iter(tensors.values())).shape[0]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(i)
        return {k: v[i % self.unique] for k, v in self.tensors.items()}


class TimedLoader:
    """Wraps a DataLoader; records the time (wall clock, and this thread's CPU time) of every request
    for a batch. The request for batch k+1 comes when the loop body of step k (logging included) is
    done, so consecutive marks bound a step."""

    def __init__(self, loader, marks: list[list[float]]):
        self.loader, self.marks = loader, marks

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        import time as _t

        epoch: list[float] = []
        self.marks.append(epoch)
        it = iter(self.loader)
        while True:
            epoch.append((_t.perf_counter(), _t.thread_time()))
            try:
                batch = next(it)
            except StopIteration:
                return
            yield batch


# ---------------------------------------------------------------------------- the three variants
def worker_common(args):
    import torch

    torch.set_num_threads(1)
    data = torch.load(args.data, weights_only=True)
    cfg = make_config(args.batch, args.steps, args.epochs, args.out_dir, args.log_every)
    train_ds = MemoryDataset(data["train"], args.steps * args.batch)
    val_ds = MemoryDataset(data["val"], VAL_BATCHES * args.batch)
    return cfg, train_ds, val_ds


def run_bare(args, with_wandb: bool = False) -> dict:
    """The hand-written loop; with_wandb adds only a W&B offline run (runner.tracking.Tracker) that
    gets the mean loss every log_every steps: the cost of having W&B in the process at all."""
    import torch

    from runner.build import make_optimizer, seed_everything
    from runner.schedules import make_lr_fn
    from runner.tasks.sequence import SequenceTask

    cfg, train_ds, val_ds = worker_common(args)
    seed_everything(cfg.seed)
    task = SequenceTask(cfg)
    model, criterion = task.model(), task.criterion()
    optimizer = make_optimizer(model, cfg.optim, criterion, verbose=False)
    lr_fn = make_lr_fn(cfg.optim, args.epochs * args.steps)
    marks: list[list[float]] = []
    train_dl = TimedLoader(torch.utils.data.DataLoader(train_ds, batch_size=args.batch, shuffle=True,
                                                       drop_last=True), marks)
    val_dl = torch.utils.data.DataLoader(val_ds, batch_size=args.batch)
    params = [p for p in model.parameters() if p.requires_grad]
    tracker = None
    if with_wandb:
        from runner.tracking import Tracker

        run_dir = Path(args.out_dir) / "bare-wandb"
        tracker = Tracker(cfg.wandb, run_dir, "barewandb", {})
        loss_sum = torch.zeros(())
    step = 0
    t0 = time.perf_counter()
    for _epoch in range(args.epochs):
        model.train()
        for batch in train_dl:
            for g in optimizer.param_groups:
                g["lr"] = lr_fn(step)
            loss = criterion(model(batch["image"]), batch)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            optimizer.step()
            step += 1
            if tracker is not None:
                loss_sum += loss.detach()
                if step % cfg.train.log_every == 0:
                    tracker.log({"train/loss": float(loss_sum) / cfg.train.log_every}, step=step)
                    loss_sum.zero_()
        model.eval()
        with torch.no_grad():
            total = sum(criterion(model(b["image"]), b)["loss"] * len(b["image"]) for b in val_dl)
        val_loss = float(total) / len(val_ds)  # the one host read of the epoch
    if tracker is not None:
        tracker.finish()
    return {"marks": marks, "fit_seconds": time.perf_counter() - t0, "val_loss": val_loss}


def run_runner(args) -> dict:
    """runner.train.fit, unchanged, with the task's datasets served from memory."""
    import runner.train as train_mod
    from runner.tasks.sequence import SequenceTask

    cfg, train_ds, val_ds = worker_common(args)
    marks: list[list[float]] = []

    class MemoryTask(SequenceTask):
        def dataset(self, split):
            return train_ds if split == "train" else val_ds

    real_make_loaders = train_mod.make_loaders

    def make_loaders(*a, **k):
        train, val = real_make_loaders(*a, **k)
        return TimedLoader(train, marks), val

    real_trainer, seen = train_mod.Trainer, {}

    def trainer(**kw):  # records which callbacks fit() assembled
        seen["callbacks"] = [type(cb).__name__ for cb in kw["callbacks"]]
        return real_trainer(**kw)

    train_mod.build_task, train_mod.make_loaders, train_mod.Trainer = MemoryTask, make_loaders, trainer
    t0 = time.perf_counter()
    summary = train_mod.fit(cfg, progress=False)
    fit_seconds = time.perf_counter() - t0
    history = [json.loads(line) for line in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    logged = sorted({k for h in history if "train/loss" in h for k in h if not k.startswith("_")})
    return {"marks": marks, "fit_seconds": fit_seconds, "exit_code": summary["exit_code"],
            "logged_keys": logged, "log_steps": [h["_step"] for h in history if "train/loss" in h],
            "val_loss": summary.get("best_metric"), "callbacks": seen.get("callbacks"), "wandb_dir": summary["wandb_dir"]}


def run_lightning(args) -> dict:
    import logging
    import warnings

    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import WandbLogger

    from runner.build import make_optimizer, seed_everything
    from runner.schedules import make_lr_fn
    from runner.tasks.sequence import SequenceTask

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    cfg, train_ds, val_ds = worker_common(args)
    seed_everything(cfg.seed)
    task = SequenceTask(cfg)
    lr_fn = make_lr_fn(cfg.optim, args.epochs * args.steps)
    batch_size = args.batch

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model, self.criterion = task.model(), task.criterion()
            self.t_last = None

        def training_step(self, batch, batch_idx):
            t0 = time.perf_counter()
            outputs = self.model(batch["image"])
            terms = self.criterion(outputs, batch)
            with torch.no_grad():  # the same scalars as the runner, per batch, on the device
                live = (batch["done"] < 0.5).float().unsqueeze(1)
                n = live.sum().clamp_min(1)
                xy, gt = outputs["xy"].detach(), batch["target_xy"]
                mean = (xy * live).sum(0) / n
                std = (((xy - mean) ** 2 * live).sum(0) / (n - 1).clamp_min(1)).sqrt().mean()
                gmean = (gt * live).sum(0) / n
                gstd = (((gt - gmean) ** 2 * live).sum(0) / (n - 1).clamp_min(1)).sqrt().mean()
                p = torch.sigmoid(outputs["done_logit"].detach())
                values = {("train/" + k if not k.startswith("loss/") else k): v.detach() for k, v in terms.items()}
                values.update({
                    "pred/mean": mean.mean(), "pred/std": std,
                    "pred/min": torch.where(live > 0, xy, torch.inf).amin(),
                    "pred/max": torch.where(live > 0, xy, -torch.inf).amax(),
                    "gt/std": gstd, "pred/std_ratio": std / gstd.clamp_min(1e-12),
                    "pred/done_mean": p.mean(), "pred/done_rate": (p > 0.5).float().mean(),
                    "pred/done_max": p.max(), "target/done_rate": batch["done"].float().mean(),
                })
            self.log_dict(values, on_step=True, on_epoch=False, batch_size=batch_size)
            if self.t_last is not None:
                self.log_dict({"train/data_time": t0 - self.t_last,
                               "train/step_time": time.perf_counter() - t0}, on_step=True, on_epoch=False,
                              batch_size=batch_size)
            return terms["loss"]

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.t_last = time.perf_counter()

        def on_before_optimizer_step(self, optimizer):
            heads: dict[str, list] = {}
            for name, p in self.model.named_parameters():
                if p.grad is not None:
                    heads.setdefault(name.split(".")[0], []).append(p.grad)
            norms = {f"grad/{h}": torch.linalg.vector_norm(torch.stack(torch._foreach_norm(g)))
                     for h, g in heads.items()}
            norms["grad/total"] = torch.linalg.vector_norm(torch.stack(list(norms.values())))
            self.log_dict(norms, on_step=True, on_epoch=False, batch_size=batch_size)

        def validation_step(self, batch, batch_idx):
            terms = self.criterion(self.model(batch["image"]), batch)
            self.log_dict({"val/" + k: v for k, v in terms.items()}, on_step=False, on_epoch=True,
                          batch_size=batch_size)

        def configure_optimizers(self):
            opt = make_optimizer(self.model, cfg.optim, self.criterion, verbose=False)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_fn(s) / cfg.optim.lr)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    marks: list[list[float]] = []

    class Marks(pl.Callback):
        """Time of each on_train_batch_start (after the fetch, before the step) and of the start of
        validation: consecutive marks bound one step with its logging; validation is left out."""

        def on_train_epoch_start(self, trainer, module):
            marks.append([])

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            marks[-1].append((time.perf_counter(), time.thread_time()))

        def on_validation_start(self, trainer, module):
            if not trainer.sanity_checking and marks:
                marks[-1].append((time.perf_counter(), time.thread_time()))

    module = Module()
    logger = WandbLogger(project="runner-bench", save_dir=args.out_dir, log_model="all")
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=args.epochs, log_every_n_steps=cfg.train.log_every,
                         gradient_clip_val=cfg.train.grad_clip, gradient_clip_algorithm="norm",
                         enable_progress_bar=False, num_sanity_val_steps=0, logger=logger,
                         default_root_dir=args.out_dir, callbacks=[LearningRateMonitor("step"), Marks()])
    train_dl = torch.utils.data.DataLoader(train_ds, batch_size=args.batch, shuffle=True, drop_last=True)
    val_dl = torch.utils.data.DataLoader(val_ds, batch_size=args.batch)
    t0 = time.perf_counter()
    trainer.fit(module, train_dl, val_dl)
    fit_seconds = time.perf_counter() - t0
    logger.experiment.finish()
    return {"marks": marks, "fit_seconds": fit_seconds,
            "val_loss": float(trainer.callback_metrics.get("val/loss", float("nan")))}


def worker(args) -> None:
    t0 = time.perf_counter()
    result = {"bare": run_bare, "runner": run_runner, "lightning": run_lightning,
              "bare_wandb": lambda a: run_bare(a, with_wandb=True)}[args.worker](args)
    result["main_seconds"] = time.perf_counter() - t0
    Path(args.result).write_text(json.dumps(result))


# ---------------------------------------------------------------------------- the parent
def step_figures(marks: list[list[list[float]]]) -> dict:
    """Per-step figures from per-epoch (wall, thread CPU) marks: median step and mean loop time per
    step, in wall-clock seconds and in CPU seconds of the training thread."""
    out = {}
    for i, name in ((0, ""), (1, "cpu_")):
        diffs = [b[i] - a[i] for epoch in marks for a, b in zip(epoch, epoch[1:])]
        spans = sum(epoch[-1][i] - epoch[0][i] for epoch in marks if len(epoch) > 1)
        out[name + "step_median"], out[name + "loop_mean"], out["steps_timed"] = \
            statistics.median(diffs), spans / len(diffs), len(diffs)
    return out


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's waited-for children and their descendants."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_round(args, data_path: Path, batch: int, steps: int, tmp: Path, log) -> dict:
    out = {}
    for variant in args.variants:
        res_path = tmp / f"{variant}-{batch}.json"
        run_dir = tmp / f"runs-{variant}-{batch}"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--batch", str(batch),
               "--steps", str(steps), "--epochs", str(args.epochs), "--data", str(data_path),
               "--out-dir", str(run_dir), "--result", str(res_path)]
        if args.log_every:
            cmd += ["--log-every", str(args.log_every)]
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
        t0, c0 = time.perf_counter(), children_cpu()
        proc = subprocess.run(cmd, env=env, cwd=str(tmp), capture_output=True, text=True)
        wall, cpu = time.perf_counter() - t0, children_cpu() - c0
        if proc.returncode != 0:
            log(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit(f"overhead: the {variant} process at batch {batch} failed (exit {proc.returncode})")
        res = json.loads(res_path.read_text())
        out[variant] = {**step_figures(res["marks"]), "wall": wall, "process_cpu": cpu,
                        "fit_seconds": res["fit_seconds"], "val_loss": res.get("val_loss"),
                        "extra": {k: res[k] for k in ("logged_keys", "log_steps", "callbacks") if k in res}}
    return out


def summarize(rounds: list[dict], batch: int, variants: list[str]) -> dict:
    rs = [r[batch] for r in rounds]
    s: dict = {}
    for v in variants:
        s[v] = {key: quantiles([r[v][key] for r in rs]) for key in
                ("step_median", "loop_mean", "cpu_step_median", "wall", "process_cpu", "fit_seconds")}
    for v in variants[1:]:
        s[f"{v}/bare"] = {key: quantiles([r[v][key] / r["bare"][key] for r in rs])
                         for key in ("step_median", "loop_mean", "cpu_step_median", "wall", "process_cpu")}
    return s


def fmt_q(q, scale=1.0, digits=1) -> str:
    lo, med, hi = (x * scale for x in q)
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def tables(summaries: dict, args, loads: list[str], header: str) -> str:
    variants = args.variants
    lines = [header, "",
             "Per variant: median over rounds (interquartile range in brackets).", "",
             "| batch | variant | step time, median (ms) | loop time per step, mean (ms) | "
             "step CPU of the training thread, median (ms) | process wall (s) | process CPU (s) | fit (s) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for batch, s in summaries.items():
        for v in variants:
            lines.append(f"| {batch} | {v} | {fmt_q(s[v]['step_median'], 1e3)} | {fmt_q(s[v]['loop_mean'], 1e3)} | "
                         f"{fmt_q(s[v]['cpu_step_median'], 1e3)} | {fmt_q(s[v]['wall'], 1, 2)} | "
                         f"{fmt_q(s[v]['process_cpu'], 1, 2)} | {fmt_q(s[v]['fit_seconds'], 1, 2)} |")
    lines += ["", "Ratios to bare, computed pair by pair within each round: median over rounds (IQR).", "",
              "| batch | ratio | step time (median) | loop time per step (mean) | step CPU (median) | "
              "process wall | process CPU |", "|---:|---|---:|---:|---:|---:|---:|"]
    for batch, s in summaries.items():
        for v in variants[1:]:
            r = s[f"{v}/bare"]
            lines.append(f"| {batch} | {v}/bare | {fmt_q(r['step_median'], 1, 3)} | {fmt_q(r['loop_mean'], 1, 3)} | "
                         f"{fmt_q(r['cpu_step_median'], 1, 3)} | {fmt_q(r['wall'], 1, 2)} | {fmt_q(r['process_cpu'], 1, 2)} |")
    lines += ["", "Step CPU is the CPU time of the training thread between step ends (time.thread_time): "
              "what the loop itself costs, whatever else the machine runs. Process CPU is the CPU time of "
              "the whole process and its children (the W&B service included), from getrusage."]
    lines += ["", "Machine load during the rounds:", ""] + [f"- {x}" for x in loads]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- in-process profile
def profile(args, data_path: Path, batch: int, reps: int, log) -> str:
    """Per-step cost of each runner operation beside the model's own step, timed in one process."""
    import torch
    from torch.utils.data import default_collate

    from runner.build import make_optimizer, seed_everything
    from runner.engine import Trainer, batch_size_of, move
    from runner.health.stats import CollapseStats
    from runner.meters import Meter
    from runner.schedules import make_lr_fn
    from runner.tasks.sequence import SequenceTask

    torch.set_num_threads(1)
    data = torch.load(data_path, weights_only=True)
    cfg = make_config(batch, 25, 1, tempfile.mkdtemp(prefix="runner-bench-"))
    ds = MemoryDataset(data["train"], batch * 4)
    batches = [default_collate([ds[i * batch + j] for j in range(batch)]) for i in range(4)]
    seed_everything(0)
    task = SequenceTask(cfg)
    model, criterion = task.model(), task.criterion()
    optimizer = make_optimizer(model, cfg.optim, criterion, verbose=False)
    lr_fn = make_lr_fn(cfg.optim, 10_000)
    trainer = Trainer(task=task, model=model, criterion=criterion, optimizer=optimizer, lr_fn=lr_fn,
                      train_loader=batches, val_loader=batches, device=torch.device("cpu"), epochs=1,
                      progress=False)
    params = trainer.params
    cpu = torch.device("cpu")

    def bare_step(b):
        for g in optimizer.param_groups:
            g["lr"] = lr_fn(0)
        loss = criterion(model(b["image"]), b)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    # prepared state for the isolated pieces
    b0 = batches[0]
    outputs = model(b0["image"])
    terms = criterion(outputs, b0)
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    total = torch.nn.utils.clip_grad_norm_(params, 1.0)
    outputs = {k: v.detach() for k, v in outputs.items()}
    terms = {k: v.detach() for k, v in terms.items()}
    meter, stats, epoch_meter = Meter(), CollapseStats(), Meter()

    norms = trainer._grad_norms_and_clip()[0]

    def runner_clip():  # grad/<head>, grad/total and clipping, as Trainer.train_step does them
        trainer._grad_norms_and_clip()

    def bare_clip():
        torch.nn.utils.clip_grad_norm_(params, 1.0)

    def nonfinite():
        bad = ~torch.isfinite(total)
        trainer._track_nonfinite(bad, terms)
        optimizer.found_inf = bad.float()

    def meters():  # the lines of Trainer.train_epoch after train_step
        n = batch_size_of(b0)
        meter.update_means({(k if k.startswith("loss/") else "train/" + k): v for k, v in terms.items()}, n)
        epoch_meter.update_means({"loss": terms["loss"]}, n)
        meter.update_means(norms, 1)

    def collapse():
        stats.update(task.monitor_view(outputs, b0))

    def move_batch():
        batch_size_of(move(b0, cpu))

    def log_read():
        trainer._read(meter, stats, extra={"_max_consec": trainer._max_consec, "_first_bad": trainer._first_bad(),
                                           "_n_bad": trainer._n_bad})

    def timed(fn, n):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return quantiles(ts)

    def paired(fa, fb, n):
        """Quantiles of fa's time minus fb's, called alternately (ABBA)."""
        ds = []
        for i in range(n):
            ts = {}
            for f in ((fa, fb) if i % 2 == 0 else (fb, fa)):
                t0 = time.perf_counter()
                f()
                ts[f] = time.perf_counter() - t0
            ds.append(ts[fa] - ts[fb])
        return quantiles(ds)

    # model step: bare vs runner's train_step, alternating so both see the same load
    for b in batches:
        bare_step(b)
        trainer.train_step(b)
    bare_ts, runner_ts = [], []
    for i in range(reps):  # ABBA order: neither variant always runs second
        b = batches[i % len(batches)]
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            bare_step(b) if which == 0 else trainer.train_step(b)
            (bare_ts if which == 0 else runner_ts).append(time.perf_counter() - t0)
    clip_runner, clip_bare = timed(runner_clip, 400), timed(bare_clip, 400)
    pieces = {
        "gradient norms per head + clip, minus the bare loop's clip_grad_norm_ (paired)":
            paired(runner_clip, bare_clip, 400),
        "non-finite tracking (train_step)": timed(nonfinite, 400),
        "meters: loss terms, grad norms, epoch loss": timed(meters, 400),
        "collapse statistics (monitor_view + update)": timed(collapse, 400),
        "move + batch_size_of": timed(move_batch, 400),
    }
    meter.reset()
    stats.reset()
    for _ in range(25):
        meters()
        collapse()
    read = timed(log_read, 50)
    # the interval's W&B log of the logged scalars, through the real Tracker (offline)
    from runner.tracking import Tracker

    tracker = Tracker(cfg.wandb, Path(cfg.out_dir), "benchprof", {})
    values = trainer._read(meter, stats)
    values.update({"lr": 1e-3, "train/data_time": 0.01, "train/step_time": 0.1})
    step = [0]

    def wlog():
        step[0] += 1
        tracker.log(values, step=step[0])
    wandb_log = timed(wlog, 50)
    tracker.finish()
    bq, rq = quantiles(bare_ts), quantiles(runner_ts)
    diffs = quantiles([r - b for r, b in zip(runner_ts, bare_ts)])
    per_step = sum(p[1] for p in pieces.values()) + (read[1] + wandb_log[1]) / cfg.train.log_every
    lines = [f"### In-process cost of the runner's own work per step, batch {batch}", "",
             f"{reps} pairs of steps (ABBA order); median (IQR) in microseconds; {load_text()}.", "",
             "| what | time per call (us) | per step (us) | share of the bare step |", "|---|---:|---:|---:|",
             f"| bare step (forward, loss, backward, clip, AdamW) | {fmt_q(bq, 1e6, 0)} | {bq[1] * 1e6:.0f} | 100% |",
             f"| Trainer.train_step | {fmt_q(rq, 1e6, 0)} | {rq[1] * 1e6:.0f} | {rq[1] / bq[1]:.1%} |",
             f"| train_step minus bare step, pair by pair | {fmt_q(diffs, 1e6, 0)} | {diffs[1] * 1e6:.0f} | "
             f"{diffs[1] / bq[1]:.2%} |"]
    lines.append(f"| runner's norms + clip ({fmt_q(clip_runner, 1e6, 0)}) vs clip_grad_norm_ ({fmt_q(clip_bare, 1e6, 0)}) "
                 f"| | | |")
    for name, q in pieces.items():
        lines.append(f"| {name} | {fmt_q(q, 1e6, 0)} | {q[1] * 1e6:.0f} | {q[1] / bq[1]:.2%} |")
    for name, q in (("host read of an interval (one stack + tolist)", read),
                    (f"Tracker.log of {len(values)} scalars (W&B offline + JSONL)", wandb_log)):
        lines.append(f"| {name} | {fmt_q(q, 1e6, 0)} | {q[1] * 1e6 / cfg.train.log_every:.0f} "
                     f"(every {cfg.train.log_every}) | {q[1] / cfg.train.log_every / bq[1]:.2%} |")
    lines.append(f"| **runner's own work per step (sum of the rows above)** | | **{per_step * 1e6:.0f}** | "
                 f"**{per_step / bq[1]:.2%}** |")
    text = "\n".join(lines)
    log(text)
    return text


# ---------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--rounds", type=int, default=4, help="rounds of bare, runner, lightning per batch size "
                   "(4: ~10 min on a loaded 2-core CPU; more rounds narrow the interquartile ranges)")
    p.add_argument("--batches", type=int, nargs="+", default=[8, 64])
    p.add_argument("--steps", type=int, nargs="+", default=None,
                   help="steps per epoch for each batch size (default: 60 at batch <= 16, else 20; quick: 30, 10)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--log-every", type=int, default=None, help="default: the runner's default (train.log_every)")
    p.add_argument("--quick", action="store_true", help="2 rounds, fewer steps")
    p.add_argument("--no-profile", action="store_true", help="skip the in-process cost of each runner operation")
    p.add_argument("--profile-only", action="store_true")
    p.add_argument("--json", type=Path, help="write every round's figures here")
    p.add_argument("--markdown", type=Path, help="write the tables here")
    # worker mode (one variant in this process)
    p.add_argument("--variants", nargs="+", choices=VARIANTS + EXTRA_VARIANTS, default=list(VARIANTS),
                   help="run in this order each round (bare first: ratios are to it); bare_wandb = bare loop + a "
                        "W&B offline run logging the loss each interval")
    p.add_argument("--worker", choices=VARIANTS + EXTRA_VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--out-dir", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.variants[0] != "bare":
        p.error("--variants must start with bare (the ratios are to it)")
    if args.worker:
        args.steps = args.steps[0]
        worker(args)
        return 0

    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.quick:
        args.rounds = min(args.rounds, 2)
    steps = args.steps or [(30 if args.quick else 60) if b <= 16 else (10 if args.quick else 20)
                           for b in args.batches]
    if len(steps) != len(args.batches):
        p.error("--steps needs one value per --batches value")
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="runner-bench-overhead-"))
    data_path = tmp / "data.pt"
    log(f"overhead: PointerNet width {WIDTH} on {IMAGE_SIZE}x{IMAGE_SIZE} images, torch {torch.__version__}, "
        f"1 thread, {args.epochs} epochs of {dict(zip(args.batches, steps))} (batch: steps), "
        f"{VAL_BATCHES} val batches per epoch; {load_text()}")
    generate_data(data_path, n_train=256, n_val=VAL_BATCHES * max(args.batches))
    md: list[str] = []
    if not args.profile_only:
        rounds: list[dict] = []
        loads: list[str] = []
        t_start = time.time()
        for r in range(args.rounds):
            rnd = {}
            for batch, n_steps in zip(args.batches, steps):
                rnd[batch] = run_round(args, data_path, batch, n_steps, tmp, log)
                parts = ", ".join(f"{v} {rnd[batch][v]['step_median'] * 1e3:.1f} ms/step "
                                  f"({rnd[batch][v]['wall']:.1f} s)" for v in args.variants)
                ratios = ", ".join(f"{v}/bare {rnd[batch][v]['step_median'] / rnd[batch]['bare']['step_median']:.3f}"
                                   f" (CPU {rnd[batch][v]['cpu_step_median'] / rnd[batch]['bare']['cpu_step_median']:.3f})"
                                   for v in args.variants[1:])
                log(f"round {r + 1}/{args.rounds} batch {batch}: {parts}; {ratios}")
            loads.append(f"round {r + 1}: {load_text()}")
            log(loads[-1])
            rounds.append(rnd)
        if rounds and "runner" in args.variants:
            extra = rounds[0][args.batches[0]]["runner"]["extra"]
            log(f"runner logged at steps {extra.get('log_steps')}: {len(extra.get('logged_keys', []))} keys "
                f"{extra.get('logged_keys')}")
        summaries = {b: summarize(rounds, b, args.variants) for b in args.batches}
        header = (f"## Runner overhead: `python bench/overhead.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n\n"
                  f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(t_start))}, CPU ({os.cpu_count()} cores, shared), "
                  f"torch {torch.__version__}, 1 thread; PointerNet width {WIDTH}, {IMAGE_SIZE} px; "
                  f"{args.rounds} rounds x {args.epochs} epochs x {dict(zip(args.batches, steps))} steps (batch: steps); "
                  f"{time.time() - t_start:.0f} s.")
        text = tables(summaries, args, loads, header)
        log("\n" + text)
        md.append(text)
        if args.json:
            args.json.write_text(json.dumps({"rounds": [{str(b): v for b, v in r.items()} for r in rounds],
                                             "loads": loads}, indent=1))
    if not args.no_profile:
        for batch in args.batches:
            md.append(profile(args, data_path, batch, 30 if args.quick else (60 if batch > 16 else 200), log))
    if args.markdown:
        args.markdown.write_text("\n\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
