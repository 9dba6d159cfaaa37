"""Checkpoints: complete resume state, written atomically, loaded with weights_only=True.

Layout under <run_dir>/checkpoints/: latest.pt, best.pt and epoch_NNNN.pt (the last
`keep_periodic` of them). Contents: model, optimizer, scaler and loss-module state, RNG states,
step, epoch, best metric, callback states, the resolved config as a plain dict and the run id.
"""
from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from runner.errors import UserError

FORMAT_VERSION = 1


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under DDP and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), None))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(state: dict[str, Any], path: Path) -> Path:
    """torch.save to a temporary file in the same directory, fsync, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; any problem is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported object"
        raise UserError(f"checkpoint {str(path)!r} was refused: it holds objects that are not plain tensors or "
                        f"containers and could run code when loaded ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise UserError(f"checkpoint {str(path)!r} is truncated or corrupt: {str(e).splitlines()[0][:160]}") from None
    if not isinstance(state, dict) or "model" not in state or "format_version" not in state:
        raise UserError(f"checkpoint {str(path)!r} is not a runner checkpoint (no 'model'/'format_version' keys)")
    return state


def load_model_state(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strict load that names the keys and shapes that differ."""
    own = unwrap(model).state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}")
        if shapes:
            k = shapes[0]
            parts.append(f"shape of {k!r} is {tuple(state_dict[k].shape)} in the checkpoint but "
                         f"{tuple(own[k].shape)} in the model ({len(shapes)} such keys)")
        raise UserError(f"checkpoint {source!r} does not fit this model: " + "; ".join(parts))
    unwrap(model).load_state_dict(state_dict)


class CheckpointStore:
    """latest / best / periodic files of one run, with pruning of old periodic files."""

    def __init__(self, run_dir: Path, keep_periodic: int):
        self.dir = Path(run_dir) / "checkpoints"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep_periodic = keep_periodic
        for stale in self.dir.glob(".*.tmp-*"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)

    @property
    def latest(self) -> Path:
        return self.dir / "latest.pt"

    @property
    def best(self) -> Path:
        return self.dir / "best.pt"

    def periodic(self, epoch: int) -> Path:
        return self.dir / f"epoch_{epoch:04d}.pt"

    def save(self, state: dict[str, Any], *, periodic_epoch: int | None = None, best: bool = False) -> list[Path]:
        state = {"format_version": FORMAT_VERSION, **state}
        written = [save_atomic(state, self.latest)]
        if best:
            written.append(save_atomic(state, self.best))
        if periodic_epoch is not None:
            written.append(save_atomic(state, self.periodic(periodic_epoch)))
            self._prune()
        return written

    def _prune(self) -> None:
        files = sorted(self.dir.glob("epoch_*.pt"))
        for old in files[: max(0, len(files) - self.keep_periodic)]:
            old.unlink(missing_ok=True)
