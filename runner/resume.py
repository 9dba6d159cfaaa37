"""Resuming a run: find the checkpoint, check it may be resumed, put its state back, and the
command line that resumes. Beside runner.checkpoint (the file format and the store)."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from runner import checkpoint as ckpt
from runner.errors import UserError
from runner.tasks import safe_name


def find_resume(cfg, resume: str | None) -> Path | None:
    if resume != "auto":
        return Path(resume) if resume else None
    found = sorted(Path(cfg.out_dir).glob(f"{safe_name(cfg.task)}-*/checkpoints/latest.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        print(f"--resume auto: no checkpoint under {cfg.out_dir}/{safe_name(cfg.task)}-*; starting a new run")
        return None
    print(f"--resume auto: continuing from {found[-1]}")
    return found[-1]


def check_resumable(state: dict, cfg, source: Path, force: bool) -> None:
    if state["config"].get("task") != cfg.task:
        raise UserError(f"checkpoint {str(source)!r} is from task {state['config'].get('task')!r}, not {cfg.task!r}")
    health = state.get("health") or {}
    if health.get("status") == "failed" and not force:
        raise UserError(f"checkpoint {str(source)!r} was saved after the health monitor found "
                        f"{health.get('summary', 'a failure')}; retrain from scratch, or pass --force to resume anyway")


def resume_command(latest: Path) -> str:
    """This process's command line with --resume pointing at the checkpoint just saved."""
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--resume":
            skip = True
        elif not a.startswith("--resume="):
            args.append(a)
    return " ".join(["python -m runner.train", *map(shlex.quote, args), "--resume", shlex.quote(str(latest))])


def restore(trainer, state: dict, criterion) -> None:
    """Everything a checkpoint holds goes back in place; a missing piece is an error, not a skip."""
    try:
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scaler.load_state_dict(state["scaler"])
        criterion.load_state_dict(state["criterion"])
        ckpt.set_rng_state(state["rng"])
        trainer.state.load_state_dict(state["run_state"])
        for cb in trainer.callbacks:
            if cb.state_key:
                cb.load_state_dict(state["callbacks"][cb.state_key])
    except (KeyError, ValueError, RuntimeError) as e:
        raise UserError(f"checkpoint cannot restore the run state: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
