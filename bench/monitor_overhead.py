"""What runner.health.Monitor costs per step in a hand-written loop, against the same loop without it.

    python bench/monitor_overhead.py                 # batch 8 and 64, 8 interleaved rounds (~3 min, 2 cores)
    python bench/monitor_overhead.py --rounds 3 --steps 20   # a quick look

One process, torch.set_num_threads(1), the sequence task's model (PointerNet, 64 px, width 16) and loss
on pre-generated in-memory batches, fused AdamW (runner.build.make_optimizer), gradient clipping 1.0.
Two variants of the same loop:

  bare     forward, loss, backward, clip, step; nothing else;
  monitor  the same, plus what docs/health.md shows a user adding: `monitor.step(pred, target, mask=...,
           rates={"done": ...}, losses=<the criterion's terms>, grads={"total": <clip's norm>})` every step
           and `monitor.log(step, epoch, {"lr": lr})` every --log-every steps (its one host read), so the
           log interval's cost is amortized over the steps as in a real run.

Each round runs, for batch 8 then 64, bare and monitor one after the other (which goes first alternates
by round), each over --steps steps after --warmup steps that are not timed; the step time of a run is its
timed loop's wall time / steps. Reported: the median step time of each variant over rounds, and the
median (with the interquartile range) of the pair-by-pair ratio monitor / bare within a round.

Because two loops of ~10-100 ms steps on a shared CPU differ by more than 1% from noise alone, the
monitor's own work is also timed directly, in the same process: the median of --reps calls of
monitor.step() on one step's tensors, and of monitor.log() after --log-every steps; their per-step
sum over the bare step time is the fraction the goal (<= 1% of step time) is about.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from timing import load_text, quantiles  # noqa: E402  (bench/timing.py)

import torch  # noqa: E402
from torch.utils.data import default_collate  # noqa: E402

from runner.build import make_optimizer, seed_everything  # noqa: E402
from runner.config import build_config  # noqa: E402
from runner.health import Monitor  # noqa: E402
from runner.tasks.sequence import SequenceTask  # noqa: E402

IMAGE_SIZE, WIDTH, UNIQUE = 64, 16, 8  # UNIQUE batches cycled through


class Setup:
    """Model, optimizer, loss and pre-generated batches of one batch size (the same for both variants)."""

    def __init__(self, batch: int):
        from runner.data.synthetic.sequence import SequenceDataset

        self.cfg = build_config({"task": "sequence", "seed": 0,
                                 "data": {"image_size": IMAGE_SIZE, "min_objects": 6, "max_objects": 14,
                                          "radius": 3, "train_size": UNIQUE * batch, "val_size": batch},
                                 "model": {"width": WIDTH},
                                 "train": {"batch_size": batch, "device": "cpu", "num_workers": 0}})
        seed_everything(0)
        self.task = SequenceTask(self.cfg)
        ds = SequenceDataset(self.task.spec(), "train", UNIQUE * batch)
        self.batches = [default_collate([ds[i * batch + j] for j in range(batch)]) for i in range(UNIQUE)]
        self.model, self.criterion = self.task.model(), self.task.criterion()
        self.optimizer = make_optimizer(self.model, self.cfg.optim, self.criterion, verbose=False)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.step_no = 0

    def train_step(self, monitor: Monitor | None, log_every: int) -> None:
        batch = self.batches[self.step_no % UNIQUE]
        self.step_no += 1
        outputs = self.task.forward(self.model, batch)
        terms = self.criterion(outputs, batch)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        if monitor is not None:
            view = self.task.monitor_view(outputs, batch)
            monitor.step(view.pred, view.target, mask=view.mask, rates=view.rates, losses=terms,
                         grads={"total": norm})
            if self.step_no % log_every == 0:
                monitor.log(self.step_no, 0.0, {"lr": self.optimizer.param_groups[0]["lr"]})


def timed_run(setup: Setup, with_monitor: bool, steps: int, warmup: int, log_every: int) -> float:
    """Seconds per step of `steps` steps (after `warmup` untimed ones)."""
    monitor = Monitor(run=None, echo=None) if with_monitor else None
    for _ in range(warmup):
        setup.train_step(monitor, log_every)
    t0 = time.perf_counter()
    for _ in range(steps):
        setup.train_step(monitor, log_every)
    return (time.perf_counter() - t0) / steps


def direct_cost(setup: Setup, reps: int, log_every: int) -> tuple[float, float]:
    """(median seconds of one monitor.step call, median seconds of one monitor.log call after log_every
    steps), on the tensors of one real training step."""
    batch = setup.batches[0]
    outputs = setup.task.forward(setup.model, batch)
    terms = setup.criterion(outputs, batch)
    terms["loss"].backward()
    norm = torch.nn.utils.clip_grad_norm_(setup.params, 1.0)
    setup.optimizer.zero_grad(set_to_none=True)
    view = setup.task.monitor_view(outputs, batch)
    monitor = Monitor(run=None, echo=None)
    step_t, log_t = [], []
    for r in range(reps):
        for _ in range(log_every):
            t0 = time.perf_counter()
            monitor.step(view.pred, view.target, mask=view.mask, rates=view.rates, losses=terms,
                         grads={"total": norm})
            step_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        monitor.log((r + 1) * log_every, 0.0, {"lr": 1e-3})
        log_t.append(time.perf_counter() - t0)
    return statistics.median(step_t), statistics.median(log_t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per variant per round")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--log-every", type=int, default=25, help="steps between monitor.log calls (runner default)")
    ap.add_argument("--reps", type=int, default=20, help="log intervals timed by the direct measurement")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"# monitor overhead: {args.rounds} rounds x {args.steps} steps per variant, log every "
          f"{args.log_every}; torch {torch.__version__}, 1 thread; {load_text()}", flush=True)
    setups = {b: Setup(b) for b in args.batches}
    times: dict[int, dict[str, list[float]]] = {b: {"bare": [], "monitor": []} for b in args.batches}
    for r in range(args.rounds):
        for b in args.batches:
            order = ("bare", "monitor") if r % 2 == 0 else ("monitor", "bare")
            for v in order:
                times[b][v].append(timed_run(setups[b], v == "monitor", args.steps, args.warmup, args.log_every))
            print(f"round {r + 1} batch {b}: bare {times[b]['bare'][-1] * 1e3:.2f} ms, monitor "
                  f"{times[b]['monitor'][-1] * 1e3:.2f} ms per step ({load_text()})", flush=True)
    print()
    print("| batch | bare ms/step (median) | monitor ms/step (median) | monitor / bare, pair by pair: median "
          "[IQR] | monitor.step() us | monitor.log() us | direct cost per step / bare step |")
    print("|---|---|---|---|---|---|---|")
    for b in args.batches:
        bare, mon = times[b]["bare"], times[b]["monitor"]
        q1, med, q3 = quantiles([m / s for m, s in zip(mon, bare)])
        st, lg = direct_cost(setups[b], args.reps, args.log_every)
        per_step = st + lg / args.log_every
        print(f"| {b} | {statistics.median(bare) * 1e3:.2f} | {statistics.median(mon) * 1e3:.2f} | "
              f"{med:.4f} [{q1:.4f}, {q3:.4f}] | {st * 1e6:.0f} | {lg * 1e6:.0f} | "
              f"{per_step / statistics.median(bare) * 100:.2f}% |", flush=True)
    print(f"\n{load_text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
