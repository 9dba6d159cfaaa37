"""Typed config tree: YAML sets values, `--a.b=v` overrides them, pydantic validates, then frozen.

The common sections (train, optim, early_stop, checkpoint, viz, monitor, wandb) live here;
each task contributes its own `data`, `model` and `loss` sections (see runner/tasks/base.py).
Every error is a UserError naming the key, the value and, for typos, the closest valid key.
"""
from __future__ import annotations

import ast
import difflib
import functools
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from runner.errors import UserError


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class TrainConfig(Section):
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(16, gt=0)
    max_train_iters: Optional[int] = Field(None, gt=0)  # cap on steps per epoch (seed 003: 3000)
    max_val_iters: Optional[int] = Field(None, gt=0)  # cap on val batches per epoch (seed 003: 500)
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"  # auto: cuda, then mps, then cpu
    amp: bool = True  # mixed precision; only ever active on CUDA
    amp_dtype: Literal["bf16", "fp16"] = "bf16"  # fp16 uses a grad scaler
    grad_clip: float = Field(1.0, ge=0)  # max grad norm; 0 disables clipping
    num_workers: int = Field(0, ge=0)  # DataLoader worker processes
    log_every: int = Field(25, gt=0)  # steps between host reads / W&B logs
    compile: bool = False  # torch.compile the model (CUDA)
    channels_last: bool = False  # NHWC memory format for 4D inputs (CUDA)
    # a non-finite step is skipped and counted (health/nonfinite_steps, health/nonfinite_streak); the run
    # stops (NonFiniteError) only after this many CONSECUTIVE skipped steps; isolated skips never stop it
    nonfinite_patience: int = Field(5, gt=0)


class OptimConfig(Section):
    lr: float = Field(1e-3, gt=0)  # peak learning rate
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(100, ge=0)  # linear warm-up from 0 to lr
    schedule: Literal["cosine", "constant"] = "cosine"  # after warm-up
    min_lr_ratio: float = Field(0.01, ge=0, le=1)  # cosine floor as a fraction of lr


class EarlyStopConfig(Section):
    enabled: bool = True
    monitor: str = "epoch/val_loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(5, gt=0)  # evaluations without improvement (seed 003: 5)
    min_delta: float = Field(0.0, ge=0)  # smallest change that counts as improvement


class CheckpointConfig(Section):
    save_every: int = Field(1, gt=0)  # epochs between periodic checkpoints
    keep_periodic: int = Field(2, ge=0)  # periodic checkpoints kept on disk besides best and latest
    upload: bool = True  # log checkpoints as W&B artifacts model-<run id>


class VizConfig(Section):
    n_samples: int = Field(8, ge=0)  # fixed val samples drawn each epoch into one grid image
    every: int = Field(1, gt=0)  # epochs between overlays


class MonitorConfig(Section):
    """Health monitor rules (runner/health/rules.py; docs/health.md explains each)."""

    enabled: bool = True
    on_failure: Literal["warn", "stop"] = "warn"  # stop: save a checkpoint marked with the failure, then stop
    warmup_steps: Optional[int] = Field(None, ge=0)  # steps before step-level rules judge; None: optim.warmup_steps
    patience: int = Field(3, gt=0)  # consecutive checks (log intervals) a step-level condition must hold
    # a check counts toward that patience once it spans this many steps: shorter log intervals (train.log_every
    # 1) are pooled, each of them holding the condition (every shipped config and benchmark preset logs less often)
    min_check_steps: int = Field(4, ge=0)
    eval_patience: int = Field(3, gt=0)  # consecutive evaluations for rare-class and overfitting rules
    clear_checks: int = Field(3, gt=0)  # clean checks that end an episode; the next episode alerts again
    collapse_ratio: float = Field(0.1, gt=0, lt=1)  # pred/std_ratio below this is collapse (seed 002: 0.005/0.3)
    identical_ratio: float = Field(0.01, gt=0, lt=1)  # fixed val inputs: pred spread / target spread below this
    fixed_samples: int = Field(8, ge=0)  # fixed val inputs for the identical-prediction check; 0 disables it
    growth: float = Field(1.5, gt=1)  # a statistic moving back by this factor per check (or evaluation) is recovering
    stuck_tol: float = Field(1e-3, gt=0)  # (max - min) / |mean| of a loss term over 2 x patience checks: flat
    sparse_ratio: float = Field(0.1, gt=0, lt=1)  # mean predicted probability below this x the target rate
    rare_recall: float = Field(0.05, ge=0, lt=1)  # validation recall at or below this: class never predicted
    overfit_margin: float = Field(0.05, gt=0)  # val loss this fraction above its best counts as worse
    explode_factor: float = Field(10.0, gt=1)  # grad norm or loss above this x its running median: explosion
    vanish_ratio: float = Field(1e-4, gt=0, lt=1)  # head grad norm below this x the largest head's: vanishing
    weight_drop: float = Field(0.1, gt=0, lt=1)  # learnable loss weight below this x its first value: runaway
    max_alerts: int = Field(20, ge=0)  # W&B alerts per run at most (and at most one per finding episode)


class WandbConfig(Section):
    enabled: bool = False  # --wandb
    project: str = "runner"
    entity: Optional[str] = None
    run_name: Optional[str] = None
    tags: list[str] = []
    mode: Literal["offline", "online", "disabled"] = "offline"
    group: Optional[str] = None  # W&B run group (sweeps group their trials under one name)
    init_timeout: float = Field(60.0, gt=0)  # seconds to reach W&B online before falling back to offline


COMMON_SECTIONS: dict[str, type[Section]] = {
    "train": TrainConfig,
    "optim": OptimConfig,
    "early_stop": EarlyStopConfig,
    "checkpoint": CheckpointConfig,
    "viz": VizConfig,
    "monitor": MonitorConfig,
    "wandb": WandbConfig,
}


@functools.cache
def config_class(task_cls) -> type[Section]:
    """The full config model for one task: common sections plus the task's data/model/loss."""
    fields: dict[str, Any] = {
        "task": (str, ...),
        "seed": (int, 0),
        "out_dir": (str, "runs"),  # run directories are created under it
        "data": (task_cls.DataConfig, task_cls.DataConfig()),
        "model": (task_cls.ModelConfig, task_cls.ModelConfig()),
        "loss": (task_cls.LossConfig, task_cls.LossConfig()),
    }
    for name, cls in COMMON_SECTIONS.items():
        fields[name] = (cls, cls())
    return create_model(f"{task_cls.__name__}Config", __base__=Section, **fields)


# ---------------------------------------------------------------- parsing

def parse_value(text: str) -> Any:
    """A value as a sweep agent or a person writes it: Python literals first, then YAML.

    `True`, `0`, `1e-4`, `[1, 2]`, `None` parse as Python does; `true`, `on`, `null` as YAML
    does; anything else stays a string (pydantic decides whether that is valid).
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        pass
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if isinstance(value, dict) else value


def parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """`--a.b=v` and `--a.b v` tokens -> {"a.b": value}."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or len(tok) == 2:
            raise UserError(f"unexpected argument {tok!r}: config overrides look like --section.key=value")
        key, eq, value = tok[2:].partition("=")
        if not eq:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise UserError(f"override --{key} has no value: write --{key}=VALUE")
            value = tokens[i + 1]
            i += 1
        out[key] = parse_value(value)
        i += 1
    return out


def read_yaml_file(path: str | Path, what: str) -> Any:
    """yaml.safe_load a file; a missing or malformed file is a UserError naming it (and line, column)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise UserError(f"{what} {str(path)!r} is not valid YAML at {where}: {e.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {str(path)!r} is not valid YAML: {e}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    data = read_yaml_file(path, "config file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"config file {str(path)!r} must hold a mapping of sections, not {type(data).__name__}")
    return data


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise UserError(f"config key {dotted!r}: {p!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def valid_keys(model_cls: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key a config model accepts, sections included."""
    keys = []
    for name, field in model_cls.model_fields.items():
        dotted = prefix + name
        keys.append(dotted)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(valid_keys(ann, dotted + "."))
    return keys


def _explain(err: ValidationError, model_cls: type[BaseModel]) -> str:
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, valid_keys(model_cls), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown config key {key!r}{hint}"
    if e["type"] == "missing":
        return f"config key {key!r} is required"
    return f"config key {key!r}: {e['msg']} (got {e.get('input')!r})"


def build_config(raw: dict[str, Any], overrides: dict[str, Any] | None = None):
    """Raw YAML tree + dotted overrides -> the task's frozen, validated Config."""
    from runner.tasks import get_task_class

    tree = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for key, value in (overrides or {}).items():
        _set_dotted(tree, key, value)
    if "task" not in tree:
        raise UserError("config has no 'task' key: set task: sequence|lanes|puzzle|occupancy, "
                        "a registered name or an import path package.module:ClassName")
    task_cls = get_task_class(tree["task"])
    cls = config_class(task_cls)
    try:
        return cls.model_validate(tree)
    except ValidationError as err:
        raise UserError(_explain(err, cls)) from None


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None):
    raw = load_yaml(path) if path else {}
    return build_config(raw, overrides)


def to_dict(cfg: BaseModel) -> dict[str, Any]:
    """The resolved config as plain JSON-able data (for W&B, checkpoints and config.yaml)."""
    return cfg.model_dump(mode="json")


def get_dotted(cfg: BaseModel | dict, dotted: str) -> Any:
    node: Any = to_dict(cfg) if isinstance(cfg, BaseModel) else cfg
    for p in dotted.split("."):
        node = node[p]
    return node
