"""The end-of-run report printed to the terminal: where the run is, how to look at it, how it did."""
from __future__ import annotations

from pathlib import Path

from runner import keys

DATA_SHARE_WARN = 0.10  # the training loop waiting for data this much of the time is worth a line


def print_run_report(run_dir: Path, wandb_dir: str | None, summary: dict, last_val: dict) -> None:
    lines = ["", "=" * 72, f"run directory : {run_dir}"]
    if wandb_dir:
        lines += [f"W&B run       : {wandb_dir}",
                  f"  watch       : wandb leet {wandb_dir}",
                  f"  inspect     : wandb leet inspect --summary {wandb_dir}",
                  f"  upload      : wandb sync {wandb_dir}"]
    lines.append(f"stopped       : {summary.get('stop_reason')}; best epoch {summary.get('best_epoch')} "
                 f"({summary.get('best_metric')})")
    for key in sorted(k for k in last_val if keys.is_headline_val(k)):
        base = summary.get("baseline/" + key[4:])
        extra = f"   (mean-target baseline {base:.4g})" if isinstance(base, (int, float)) else ""
        lines.append(f"  {key:<24} {last_val[key]:.4g}{extra}")
    share = summary.get("perf/data_share")
    if isinstance(share, float) and share > DATA_SHARE_WARN:
        lines.append(f"data loading  : {share:.0%} of the training loop waited for batches "
                     f"(train.num_workers={summary.get('perf/num_workers')}); more DataLoader workers would hide it")
    health = summary.get("health/table")
    if health:
        lines += ["health:", health]
    lines.append("=" * 72)
    print("\n".join(lines), flush=True)
