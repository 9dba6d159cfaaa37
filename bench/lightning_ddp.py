"""HealthCallback under Lightning's DDP strategy, 2 CPU processes (gloo): statistics reduced across
ranks, rank 0 judges and reports, every rank stops at the same step.

    PYTHONPATH=$PWD python bench/lightning_ddp.py

Runs the tests' collapsing model (inputs zeroed) and the same model healthy, each on 2 ranks, and
checks: the collapse run gets a `collapse` finding on rank 0 only, both ranks stop at the same step
after trainer.save_checkpoint wrote health_stop.ckpt; the healthy run gets none and runs to the end.
Not in the test suite: two Lightning processes take about a minute on a loaded 2-core machine
(the single-process path is tests/test_lightning.py; the reduction arithmetic is
tests/test_loop.py::test_reduction_across_ranks_equals_one_big_batch).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rank_main(zero: bool, out: str) -> None:
    import lightning.pytorch as pl
    import torch

    sys.path.insert(0, str(ROOT))
    from runner.integrations.lightning import HealthCallback
    from tests.test_lightning import Regressor, loaders

    torch.manual_seed(0)
    cb = HealthCallback(patience=3, on_failure="stop")
    trainer = pl.Trainer(max_epochs=4, log_every_n_steps=5, logger=False, callbacks=[cb], default_root_dir=out,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         accelerator="cpu", devices=2, strategy="ddp", num_sanity_val_steps=0)
    trainer.fit(Regressor(zero), *loaders())
    Path(out, f"rank{trainer.global_rank}.json").write_text(json.dumps({
        "step": trainer.global_step, "findings": [f.to_dict() for f in cb.monitor.findings],
        "stopped": cb.stopped}))


def main() -> int:
    ok = True
    for zero in (True, False):
        out = tempfile.mkdtemp(prefix="health-ddp-")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--rank-main", "zero" if zero else "healthy", out],
                              capture_output=True, text=True, cwd=ROOT, timeout=600)
        dt = time.perf_counter() - t0
        if proc.returncode:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            return 1
        r0, r1 = (json.loads(Path(out, f"rank{r}.json").read_text()) for r in (0, 1))
        det0 = [f["detector"] for f in r0["findings"]]
        name = "collapsing" if zero else "healthy"
        print(f"{name}: rank0 step {r0['step']} findings {det0}; rank1 step {r1['step']} findings "
              f"{[f['detector'] for f in r1['findings']]}; stopped {bool(r0['stopped'])}/{bool(r1['stopped'])}; "
              f"health_stop.ckpt {Path(out, 'health_stop.ckpt').exists()}; {dt:.0f}s")
        same = r0["step"] == r1["step"]
        if zero:
            ok &= "collapse" in det0 and not r1["findings"] and bool(r0["stopped"]) and bool(r1["stopped"]) \
                and same and Path(out, "health_stop.ckpt").exists()
        else:
            ok &= not det0 and not r1["findings"] and same and r0["step"] == 52 and not r0["stopped"]
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--rank-main":
        rank_main(sys.argv[2] == "zero", sys.argv[3])
    else:
        raise SystemExit(main())
