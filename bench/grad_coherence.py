"""Does gradient coherence separate inputs paired with the wrong targets from healthy slow starters?

    python bench/grad_coherence.py [--out DIR] [--checks 8] [SCENARIO:SEED ...]

A measurement for the collapse rule's starting grace (docs/health.md, rule 1), not a product feature. Both kinds of
run predict about the average target with a spread of 1-3% of the targets' for several checks; the question is
whether their gradients differ. Over each log interval of K steps it measures, per head (top-level module) of the
model, the coherence ||sum of the K gradients|| / (sum of their norms): 1 when every step pushes the same way,
about 1/sqrt(K) for K independent noise vectors (nothing consistent to learn). Each run is the health suite's
(bench/health_suite.py, --scale small), with the trainer's gradient step wrapped in its own process from outside
the product, as bench/bugs.py applies its bugs. Prints, per run, the first checks' pred/std_ratio (from the run's
metrics.jsonl) beside each head's coherence.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DEFAULT = ["shuffled_targets_sequence:0", "shuffled_targets_sequence:1", "shuffled_targets_sequence:2",
           "healthy_low_lr:0", "healthy_low_lr:1", "healthy_rare_learned:1", "healthy_rare_learned:2",
           "healthy_batch4:1", "healthy_default:0"]


def child(out_file: str, argv: list[str]) -> int:
    """Run one training (argv: runner.train's or bench/bugs.py's) with the gradient step measured."""
    import torch

    import runner.engine as engine

    out, step = open(out_file, "w"), [0]
    sums: dict[str, list[torch.Tensor]] = {}
    norms: dict[str, float] = {}
    k = int(os.environ["COHERENCE_K"])
    original = engine.Trainer._grad_norms_and_clip

    def measured(self):
        for head, ps in list(self.heads.items()) + [("total", self.params)]:
            grads = [p.grad for p in ps if p.grad is not None]
            if not grads:
                continue
            if head not in sums:
                sums[head], norms[head] = [torch.zeros_like(g) for g in grads], 0.0
            torch._foreach_add_(sums[head], grads)
            norms[head] += float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
        step[0] += 1
        if step[0] % k == 0:
            row = {"step": step[0]}
            for head, s in sums.items():
                row[head] = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(s)))) / max(norms[head], 1e-30)
                torch._foreach_zero_(s)
                norms[head] = 0.0
            out.write(json.dumps(row) + "\n")
            out.flush()
        return original(self)

    engine.Trainer._grad_norms_and_clip = measured
    if argv[0] == "bugs":
        import bugs
        return bugs.main(argv[1:])
    import runner.train
    return runner.train.main(argv)


def run(job: str, out: Path, k: int) -> tuple[str, list[dict], dict[int, float]]:
    import health_suite
    name, seed = job.rsplit(":", 1)
    sc = next(s for s in health_suite.SCENARIOS if s.name == name)
    argv = health_suite.argv_for(sc, int(seed), out, "small")
    rest = (["bugs"] + argv[2:]) if sc.bug else argv[3:]  # drop the interpreter and bugs.py / -m runner.train
    probe = out / f"{name}_{seed}.coherence.jsonl"
    shutil.rmtree(out / name / f"seed{seed}", ignore_errors=True)  # one run's metrics.jsonl per job, not an older one
    env = {**os.environ, "WANDB_MODE": "offline", "COHERENCE_K": str(k)}
    with open(out / f"{name}_{seed}.log", "w") as log:
        subprocess.run([sys.executable, __file__, "--child", str(probe), "--", *rest], cwd=ROOT, env=env,
                       stdout=log, stderr=subprocess.STDOUT, check=True)
    rows = [json.loads(line) for line in open(probe)]
    run_dir = next((out / name / f"seed{seed}").rglob("metrics.jsonl")).parent
    checks, _ = health_suite.load_rows(str(run_dir))
    spread = {r["_step"]: r["pred/std_ratio"] for r in checks if "pred/std_ratio" in r}
    return job, rows, spread


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("jobs", nargs="*", default=DEFAULT, help="SCENARIO:SEED of bench/health_suite.py")
    p.add_argument("--out", default="/tmp/grad-coherence")
    p.add_argument("--checks", type=int, default=8, help="checks to print per run")
    p.add_argument("--log-every", type=int, default=8, help="K: the scenarios' train.log_every (sequence: 8)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"coherence = ||sum of {args.log_every} gradients|| / sum of their norms; "
          f"independent noise gives about {1 / args.log_every ** 0.5:.2f}")
    with ThreadPoolExecutor(2) as pool:
        for job, rows, spread in pool.map(lambda j: run(j, out, args.log_every), args.jobs):
            heads = [h for h in rows[0] if h != "step"] if rows else []
            print(f"\n{job}\n  step  pred/std_ratio  " + "  ".join(f"{h:>10}" for h in heads))
            for r in rows[:args.checks]:
                print(f"  {r['step']:4d}  {spread.get(r['step'], float('nan')):14.4f}  "
                      + "  ".join(f"{r[h]:10.2f}" for h in heads))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:  # one measured training: --child OUT_FILE -- ARGV...
        sys.exit(child(sys.argv[2], sys.argv[4:]))
    sys.exit(main())
