"""The only module that imports wandb.

Tracker mirrors every logged scalar into `<run_dir>/metrics.jsonl` and every overlay into
`<run_dir>/media/`, so a run is readable without W&B; with W&B enabled it also logs to a W&B
run (offline by default) whose files live in `<run_dir>/wandb/`.
"""
from __future__ import annotations

import json
import sys
import secrets
import string
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

import wandb

# Epoch-level keys are plotted against `epoch`; step-level keys against the global step.
EPOCH_PREFIXES = ("epoch/*", "val/*")
SUMMARY_MIN = ("epoch/val_loss", "val/pixel_error", "val/center_error", "val/point_error")
SUMMARY_MAX = ("val/iou", "val/done_recall")


class Tracker:
    """W&B run plus local mirror. W&B trouble (no network, no key, a failing service) never stops
    training: init falls back to offline, later calls are dropped with one warning each kind."""

    def __init__(self, wandb_cfg, run_dir: Path, run_id: str, config: dict[str, Any], resume: bool = False):
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.media_dir = self.run_dir / "media"
        self.media_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        self.run = None
        self.summary: dict[str, Any] = {}
        self._warned: set[str] = set()
        self._config = config
        if wandb_cfg.enabled and wandb_cfg.mode != "disabled":
            kwargs = dict(project=wandb_cfg.project, entity=wandb_cfg.entity, name=wandb_cfg.run_name or run_id,
                          tags=list(wandb_cfg.tags), group=wandb_cfg.group, dir=str(self.run_dir), config=config,
                          id=run_id, resume="allow" if resume else None, job_type="train")
            # machine info is off: it probes cloud metadata addresses, which training servers may forbid
            settings = dict(init_timeout=wandb_cfg.init_timeout, x_disable_machine_info=True)
            try:
                self.run = wandb.init(mode=wandb_cfg.mode, settings=wandb.Settings(**settings), **kwargs)
            except Exception as e:  # noqa: BLE001 - any W&B failure must leave training running
                if wandb_cfg.mode == "offline":
                    self._warn("init", f"W&B could not start ({_short(e)}); logging to {self.run_dir} only")
                else:
                    self._warn("init", f"W&B online is unreachable ({_short(e)}); continuing offline, "
                                       f"upload later with `wandb sync`")
                    try:
                        wandb.teardown()  # the failed online attempt still holds the run id
                        self.run = wandb.init(mode="offline", settings=wandb.Settings(**settings), **kwargs)
                    except Exception as e2:  # noqa: BLE001
                        self._warn("init-offline", f"W&B offline failed too ({_short(e2)}); local files only")
            if self.run is not None:
                self._guard("define_metric", self._define_metrics)

    def _define_metrics(self) -> None:
        self.run.define_metric("epoch")
        for pattern in EPOCH_PREFIXES:
            self.run.define_metric(pattern, step_metric="epoch")
        for key in SUMMARY_MIN:
            self.run.define_metric(key, step_metric="epoch", summary="min")
        for key in SUMMARY_MAX:
            self.run.define_metric(key, step_metric="epoch", summary="max")

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            print(f"runner: warning: {message}", file=sys.stderr, flush=True)

    def _guard(self, kind: str, fn, *args, **kwargs):
        """Call a W&B function; on failure warn once for this kind and carry on."""
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            self._warn(kind, f"W&B {kind} failed ({_short(e)}); training continues, local files are kept")
            return None

    # -- location
    @property
    def wandb_dir(self) -> str | None:
        """The W&B run directory (the one `wandb sync` and `wandb leet inspect` take)."""
        if self.run is None:
            return None
        return str(Path(self.run.dir).parent)

    @property
    def enabled(self) -> bool:
        return self.run is not None

    def sweep_values(self) -> dict[str, Any]:
        """Values W&B put in this run's config beyond what the runner passed to `wandb.init`.

        Under `wandb agent` these are the sweep's parameters (keys as the sweep file names them,
        e.g. `loss.threshold`); {} without W&B or outside a sweep.
        """
        if self.run is None:
            return {}
        return {k: v for k, v in self.run.config.items() if k not in self._config or self._config[k] != v}

    # -- logging
    def log(self, metrics: dict[str, float], step: int) -> None:
        self._jsonl.write(json.dumps({"_step": step, "_time": time.time(), **metrics}) + "\n")
        if self.run is not None:
            self._guard("log", self.run.log, metrics, step=step)

    def log_image(self, key: str, rgb: np.ndarray, caption: str, step: int, epoch: int) -> Path:
        """Save the overlay as PNG in the run dir and log it. `rgb` must be HxWx3 uint8."""
        import cv2

        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"overlay must be HxWx3 uint8, got {rgb.dtype} {rgb.shape}")
        path = self.media_dir / f"{key.replace('/', '_')}_epoch{epoch:03d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if self.run is not None:
            self._guard("log", lambda: self.run.log({key: wandb.Image(rgb, caption=caption), "epoch": epoch},
                                                    step=step))
        return path

    def log_checkpoint(self, path: Path, aliases: list[str], metadata: dict[str, Any]) -> None:
        """Log a checkpoint file to the artifact collection `model-<run id>` (type model)."""
        if self.run is None:
            return

        def upload():
            art = wandb.Artifact(f"model-{self.run.id}", type="model", metadata=metadata)
            art.add_file(str(path), name="checkpoint.pt")
            self.run.log_artifact(art, aliases=aliases)

        self._guard("artifact upload", upload)

    def alert(self, title: str, text: str, level: str = "WARN") -> None:
        if self.run is None:
            return
        lvl = {"INFO": wandb.AlertLevel.INFO, "WARN": wandb.AlertLevel.WARN,
               "ERROR": wandb.AlertLevel.ERROR}[level]
        # W&B: titles under 64 characters; wait_duration=0 becomes one minute in the SDK, which would drop a
        # second alert with the same title inside it: 1 second (titles are distinct per detector and subject)
        self._guard("alert", self.run.alert, title=title[:63], text=text, level=lvl,
                    wait_duration=timedelta(seconds=1))

    def set_summary(self, values: dict[str, Any]) -> None:
        self.summary.update(values)
        if self.run is not None:
            def put():
                for k, v in values.items():
                    self.run.summary[k] = v
            self._guard("summary", put)

    def add_tags(self, tags: list[str]) -> None:
        if self.run is not None:
            self._guard("tags", lambda: setattr(self.run, "tags", tuple(sorted(set(self.run.tags or ()) | set(tags)))))

    def finish(self, exit_code: int = 0) -> None:
        (self.run_dir / "summary.json").write_text(json.dumps(self.summary, indent=2, default=str))
        self._jsonl.close()
        if self.run is not None:
            run, self.run = self.run, None
            self._guard("finish", run.finish, exit_code=exit_code)


class NullTracker(Tracker):
    """What ranks other than 0 get under torchrun: the same interface, no files, no W&B."""

    def __init__(self, run_dir: Path, run_id: str):  # noqa: D107 - deliberately skips Tracker.__init__
        self.run_dir, self.run_id, self.run, self.summary, self._warned = Path(run_dir), run_id, None, {}, set()

    def log(self, metrics, step):
        pass

    def log_image(self, key, rgb, caption, step, epoch):
        return None

    def finish(self, exit_code: int = 0) -> None:
        pass


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def new_run_id() -> str:
    """8 lowercase letters/digits, the shape W&B uses for run ids."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class RunSink(Tracker):
    """Alerts, summary keys and tags into a W&B run someone else started: the user's own `wandb.run`
    in a hand-written loop, or Lightning's `WandbLogger.experiment`. Same calls (and the same
    warn-once-and-carry-on guard) as Tracker; it logs nothing and never finishes the run."""

    def __init__(self, run):  # noqa: D107 - deliberately skips Tracker.__init__ (no run dir, no init)
        self.run, self.summary, self._warned = run, {}, set()

    def log(self, metrics, step):
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def active_run():
    """The W&B run of this process (`wandb.run`), or None when none is started."""
    return wandb.run
