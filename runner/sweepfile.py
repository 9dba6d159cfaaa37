"""W&B sweep files: load, validate against the runner, and build the argv a W&B agent builds.

A sweep file is a W&B sweep config (https://docs.wandb.ai/guides/sweeps/sweep-config-keys):

    method: grid | random | bayes
    metric: {name: val/pixel_error, goal: minimize}
    parameters: {loss.threshold: {values: [0.05, 0.1, 0.2, 0.3]}}      # dotted config keys
    early_terminate: {type: hyperband, min_iter: 3}                      # optional
    command: [${env}, ${interpreter}, -m, runner.train, --config, configs/X.yaml, --wandb, ${args}]

Everything is checked before any run starts, and each problem is one UserError naming the file and
the entry: the method, every parameter (a real config key of the task the command's config names,
a distribution as W&B defines it, values the config accepts), the metric (one the runner really
logs, found by running the task's model, loss and metrics on one batch through the real Trainer),
early_terminate and the command (parsed by the real runner.train CLI).

The swept values travel as the agent sends them: `--<name>=<str(value)>` (wandb_agent.py:
`create_sweep_command_args`), and the agent also writes them to a YAML file read by `wandb.init`
(`WANDB_SWEEP_PARAM_PATH`), so they appear in the run's config. `check_swept_values` is called by
runner.train after W&B starts and stops a run whose config lost a swept value.
"""
from __future__ import annotations

import difflib
import functools
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from runner.config import (build_config, get_dotted, load_config, read_yaml_file, to_dict,
                           valid_keys)
from runner.errors import UserError

METHODS = ("grid", "random", "bayes")
GOALS = ("minimize", "maximize")
TOP_KEYS = {"apiVersion", "kind", "controller", "description", "program", "job", "image_uri", "entity", "project",
            "method", "command", "name", "run_cap", "metric", "metrics", "scheduler", "early_terminate",
            "parameters"}
METRIC_KEYS = {"name", "goal", "target", "impute", "impute_while_running"}
HYPERBAND_KEYS = {"type", "min_iter", "max_iter", "s", "eta", "strict"}
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
ENVVAR_RE = re.compile(r"\$\{envvar:([A-Z0-9_]*)\}")  # as wandb's create_sweep_command
ARGS_MACROS = ("${args}", "${args_no_equals}")
KNOWN_MACROS = {"${env}", "${interpreter}", *ARGS_MACROS}
# config keys the offline sweep runner sets per trial; sweeping them would break trial isolation
RUNNER_OWNED = ("out_dir", "wandb.group", "wandb.run_name", "wandb.enabled", "wandb.mode")

# W&B distributions: name -> (required keys, optional keys with defaults)
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "constant": (("value",), {}),
    "categorical": (("values",), {}),
    "categorical_w_probabilities": (("values", "probabilities"), {}),
    "int_uniform": (("min", "max"), {}),
    "uniform": (("min", "max"), {}),
    "q_uniform": (("min", "max"), {"q": 1.0}),
    "log_uniform": (("min", "max"), {}),  # exp(X), X ~ U(min, max): min/max are natural logs
    "log_uniform_values": (("min", "max"), {}),  # log X ~ U(log min, log max)
    "q_log_uniform": (("min", "max"), {"q": 1.0}),
    "q_log_uniform_values": (("min", "max"), {"q": 1.0}),
    "inv_log_uniform": (("min", "max"), {}),  # ln(1/X) ~ U(min, max)
    "inv_log_uniform_values": (("min", "max"), {}),  # ln(1/X) ~ U(ln(1/max), ln(1/min))
    "normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_normal": ((), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "log_normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_log_normal": ((), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "beta": ((), {"a": 1.0, "b": 1.0}),
    "q_beta": ((), {"a": 1.0, "b": 1.0, "q": 1.0}),
}
GRID_OK = ("constant", "categorical", "int_uniform", "q_uniform")  # as wandb/sweeps grid_search
BAYES_OK = ("constant", "categorical", "categorical_w_probabilities", "int_uniform", "uniform", "q_uniform",
            "log_uniform", "log_uniform_values", "q_log_uniform", "q_log_uniform_values", "inv_log_uniform",
            "inv_log_uniform_values")  # bounded ranges: what the offline bayes search (optuna) can model


@dataclass(frozen=True)
class Param:
    """One swept parameter: its dotted config key, W&B distribution and filled-in spec."""

    name: str
    distribution: str
    spec: dict[str, Any]

    def bounds(self) -> list[Any]:
        """Values to check against the config: every categorical value, or a range's extremes."""
        d, s = self.distribution, self.spec
        if d == "constant":
            return [s["value"]]
        if d.startswith("categorical"):
            return list(s["values"])
        if d in ("int_uniform", "uniform", "log_uniform_values", "inv_log_uniform_values"):
            return [s["min"], s["max"]]
        if d == "q_uniform":
            return [quantize(s["min"], s["q"]), quantize(s["max"], s["q"])]
        if d == "q_log_uniform_values":
            return [quantize(s["min"], s["q"]), quantize(s["max"], s["q"])]
        if d == "log_uniform":
            return [math.exp(s["min"]), math.exp(s["max"])]
        if d == "q_log_uniform":
            return [quantize(math.exp(s["min"]), s["q"]), quantize(math.exp(s["max"]), s["q"])]
        if d == "inv_log_uniform":
            return [math.exp(-s["max"]), math.exp(-s["min"])]
        if d in ("beta", "q_beta"):
            return [0.0, 1.0] if d == "beta" else [0.0, quantize(1.0, s["q"])]
        return [s["mu"]] if d in ("normal", "q_normal") else [math.exp(s["mu"])]

    def grid_values(self) -> list[Any]:
        """The values a W&B grid search enumerates for this parameter (wandb/sweeps grid_search)."""
        d, s = self.distribution, self.spec
        if d == "constant":
            return [s["value"]]
        if d == "categorical":
            return list(s["values"])
        if d == "int_uniform":
            return list(range(s["min"], s["max"] + 1))
        if d == "q_uniform":  # np.arange(min, max, q): max itself excluded, as in W&B
            n = max(0, math.ceil((s["max"] - s["min"]) / s["q"] - 1e-12))
            return [py(s["min"] + i * s["q"]) for i in range(n)]
        raise ValueError(f"{d} has no grid")


def quantize(x: float, q: float | int) -> float | int:
    """round(x / q) * q, an int when q is an int (W&B's q_* distributions)."""
    v = round(x / q) * q
    return int(v) if isinstance(q, int) else float(v)


def py(v: Any) -> Any:
    """Plain Python scalars (numpy floats print as `np.float64(...)` in some contexts)."""
    if hasattr(v, "item") and not isinstance(v, (list, tuple, dict, str)):
        return v.item()
    return float(v) if isinstance(v, float) else v


@dataclass
class SweepFile:
    path: Path
    raw: dict[str, Any]
    name: str
    method: str
    metric: str
    goal: str
    target: float | None
    params: dict[str, Param]  # sorted by name, as W&B orders them
    early_terminate: dict[str, Any] | None
    bands: list[int]
    run_cap: int | None
    command: list[str]  # the template, envvar macros substituted
    cfg: Any  # resolved config of the command (without swept values, with --set values)
    task: str
    logged: set[str] = field(default_factory=set)

    @property
    def minimize(self) -> bool:
        return self.goal == "minimize"


# ---------------------------------------------------------------- agent argv

def agent_args(values: dict[str, Any]) -> dict[str, list[str]]:
    """The argument lists a W&B agent substitutes for ${args} and ${args_no_equals}.

    Mirrors wandb_agent -> sweeps.utils.create_sweep_command_args: `f"--{param}={value}"`.
    """
    flags, no_equals = [], []
    for param, value in values.items():
        flags.append(f"--{param}={value}")
        no_equals += [f"--{param}", str(value)]
    return {"args": flags, "args_no_equals": no_equals}


def expand_command(command: list[str], values: dict[str, Any], interpreter: str | None = None) -> list[str]:
    """The argv a W&B agent runs for one set of swept values (wandb_agent._command_run).

    ${env} is /usr/bin/env (not on Windows), ${interpreter} is `python` for the agent; here it
    is this Python unless `interpreter` says otherwise.
    """
    macros: dict[str, list[str]] = {"interpreter": [interpreter or sys.executable], **agent_args(values)}
    if sys.platform != "win32":
        macros["env"] = ["/usr/bin/env"]
    out: list[str] = []
    for c in command:
        c = str(c)
        if c.startswith("${") and c.endswith("}"):
            out += macros.get(c[2:-1]) or []
        else:
            out.append(c)
    return out


def substitute_envvars(command: list[Any]) -> list[str]:
    """${envvar:NAME} -> $NAME (left as NAME when unset), as wandb's create_sweep_command."""
    out = []
    for chunk in command:
        chunk = str(chunk)
        for m in reversed(list(ENVVAR_RE.finditer(chunk))):
            chunk = chunk[:m.start()] + os.environ.get(m.group(1), m.group(1)) + chunk[m.end():]
        out.append(chunk)
    return out


def train_tokens(command: list[str]) -> list[str]:
    """The arguments after `-m runner.train`, macros removed."""
    i = command.index("runner.train")
    return [c for c in command[i + 1:] if c not in KNOWN_MACROS]


def flag_key(token: str) -> str | None:
    """The config key a command-line token sets (`--device` -> train.device), or None."""
    from runner.train import FLAG_KEYS

    if not token.startswith("--") or len(token) == 2:
        return None
    name = token[2:].partition("=")[0]
    flags = {f.replace("_", "-"): key for f, key in FLAG_KEYS.items()}
    if name in flags:
        return flags[name]
    if name in ("config", "wandb", "resume", "no-progress", "print-config"):
        return None
    return name


def strip_keys(tokens: list[str], keys: set[str]) -> list[str]:
    """Drop the tokens (and their separate values) that set any of `keys`."""
    out, i = [], 0
    while i < len(tokens):
        tok = tokens[i]
        key = flag_key(tok)
        if key in keys:
            takes_value = "=" not in tok and i + 1 < len(tokens) and not tokens[i + 1].startswith("--")
            i += 2 if takes_value else 1
            continue
        out.append(tok)
        i += 1
    return out


def resolve_cli(tokens: list[str]):
    """(args, overrides) exactly as runner.train.main reads an argv."""
    from runner.train import build_parser, cli_overrides

    parser = build_parser()
    parser.exit_on_error = False
    try:
        args, rest = parser.parse_known_args(tokens)
    except Exception as e:  # argparse.ArgumentError
        raise UserError(str(e)) from None
    return args, cli_overrides(args, rest)


# ---------------------------------------------------------------- metric names

@functools.lru_cache(maxsize=16)
def _logged_names(config_json: str) -> frozenset[str]:
    import torch
    from torch.utils.data import DataLoader, Subset

    from runner.build import make_optimizer
    from runner.callbacks import Callback, EarlyStopping
    from runner.engine import Trainer
    from runner.health.monitor import HealthMonitor
    from runner.tracking import NullTracker
    from runner.health.stats import CollapseStats
    from runner.tasks import build_task

    cfg = build_config(json.loads(config_json))
    task = build_task(cfg)
    device = torch.device("cpu")
    train = task.dataset("train")
    val = task.dataset("val")
    train_dl = DataLoader(Subset(train, range(min(2, len(train)))), batch_size=2)
    val_dl = DataLoader(Subset(val, range(min(2, len(val)))), batch_size=2)
    model, criterion = task.model(), task.criterion()
    optimizer = make_optimizer(model, cfg.optim, criterion, verbose=False)  # runner.train's; lr stays 0 here
    seen: set[str] = set()

    class Record(Callback):
        def on_log(self, trainer, step, values):
            seen.update(values)

        def on_epoch_end(self, trainer, epoch, metrics):
            seen.update(k for k in metrics if not k.startswith("_"))

    # ratios whose denominator is 0 on this batch (e.g. done recall without a done sample) are
    # dropped from the logged values; so also record the names the task hands the evaluation
    names: dict[str, set[str]] = {"terms": set(), "metrics": set(), "stats": set()}
    task_metrics, task_view = task.metrics, task.monitor_view

    def metrics(outputs, batch):
        out = task_metrics(outputs, batch)
        names["metrics"].update(out)
        return out

    def monitor_view(outputs, batch):
        view = task_view(outputs, batch)
        stats = CollapseStats()
        stats.update(view)
        names["stats"].update(stats.tensors())
        return view

    task.metrics, task.monitor_view = metrics, monitor_view
    # the health monitor measures class balance over whole splits at start (seconds at seed size);
    # it changes the monitor's judgement, not the names it logs
    task.describe_data = lambda split: {}
    criterion.register_forward_hook(lambda module, args, out: names["terms"].update(out))
    callbacks = [EarlyStopping("epoch/val_loss", enabled=False)]
    if cfg.monitor.enabled:  # as runner.train: the health monitor adds health/* to what is logged
        callbacks.append(HealthMonitor(cfg.monitor, NullTracker(Path(tempfile.gettempdir()), "probe"),
                                       val_dl.dataset, cfg.optim.warmup_steps, echo=lambda text: None))
    trainer = Trainer(task=task, model=model, criterion=criterion, optimizer=optimizer, lr_fn=lambda s: 0.0,
                      train_loader=train_dl, val_loader=val_dl, device=device, epochs=1, max_train_iters=1,
                      max_val_iters=1, log_every=1, grad_clip=0.0, amp=False, callbacks=[*callbacks, Record()],
                      progress=False)
    trainer.fit()
    seen.update("val/" + k for k in names["terms"] if not k.startswith("loss/"))
    seen.update("val/" + k for k in names["metrics"] | names["stats"])
    return frozenset(seen)


def logged_metric_names(cfg) -> set[str]:
    """Every scalar name the runner logs for this config (one CPU step of the real Trainer)."""
    return set(_logged_names(json.dumps(to_dict(cfg), sort_keys=True)))


# ---------------------------------------------------------------- validation

def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fill_param(name: str, spec: Any, where: str) -> Param:
    """Infer and check a W&B distribution (the inference order of wandb/sweeps fill_parameter)."""
    if not isinstance(spec, dict):
        raise UserError(f"{where}: parameter {name!r} must be a mapping like {{values: [...]}} or "
                        f"{{min: .., max: ..}}, not {spec!r}")
    if "parameters" in spec:
        raise UserError(f"{where}: parameter {name!r} nests parameters; name each swept key with its dotted "
                        f"config path instead (e.g. {name}.<key>)")
    dist = spec.get("distribution")
    if dist is None:
        if "value" in spec:
            dist = "constant"
        elif "values" in spec:
            dist = "categorical_w_probabilities" if "probabilities" in spec else "categorical"
        elif "min" in spec and "max" in spec:
            ints = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max"))
            dist = "int_uniform" if ints else "uniform"
        else:
            raise UserError(f"{where}: parameter {name!r} needs `values`, `value`, `min`/`max` or a "
                            f"`distribution`; got keys {sorted(spec)}")
    if dist not in DISTRIBUTIONS:
        close = difflib.get_close_matches(str(dist), DISTRIBUTIONS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; W&B distributions: {', '.join(DISTRIBUTIONS)}"
        raise UserError(f"{where}: parameter {name!r} has unknown distribution {dist!r}{hint}")
    required, optional = DISTRIBUTIONS[dist]
    missing = [k for k in required if k not in spec]
    if missing:
        raise UserError(f"{where}: parameter {name!r} ({dist}) is missing {', '.join(missing)}")
    extra = sorted(set(spec) - set(required) - set(optional) - {"distribution"})
    if extra:
        raise UserError(f"{where}: parameter {name!r} ({dist}) does not take {', '.join(extra)}")
    filled = {**optional, **{k: v for k, v in spec.items() if k != "distribution"}}
    for k, v in filled.items():
        if k in ("value",):
            continue
        if k in ("values",):
            if not isinstance(v, list) or not v:
                raise UserError(f"{where}: parameter {name!r}: `values` must be a non-empty list, got {v!r}")
            continue
        if k == "probabilities":
            if (not isinstance(v, list) or len(v) != len(filled["values"]) or not all(_num(p) and p >= 0 for p in v)
                    or not math.isclose(sum(v), 1.0, rel_tol=1e-6)):
                raise UserError(f"{where}: parameter {name!r}: `probabilities` must be {len(filled['values'])} "
                                f"numbers >= 0 summing to 1, got {v!r}")
            continue
        if not _num(v):
            raise UserError(f"{where}: parameter {name!r}: {k} must be a number, got {v!r}")
    if dist == "int_uniform" and not all(isinstance(filled[k], int) for k in ("min", "max")):
        raise UserError(f"{where}: parameter {name!r} (int_uniform): min and max must be integers")
    if "min" in filled:
        if filled["min"] > filled["max"] or (filled["min"] == filled["max"] and dist != "int_uniform"):
            raise UserError(f"{where}: parameter {name!r}: min ({filled['min']}) must be below max ({filled['max']})")
        if dist.endswith("_values") and filled["min"] <= 0:
            raise UserError(f"{where}: parameter {name!r} ({dist}): min must be > 0, got {filled['min']}")
    for k in ("q", "sigma"):
        if k in filled and filled[k] <= 0:
            raise UserError(f"{where}: parameter {name!r}: {k} must be > 0, got {filled[k]}")
    return Param(name, dist, filled)


def _close(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _hyperband(et: Any, where: str) -> tuple[dict[str, Any], list[int]]:
    """Check early_terminate and compute its bands (wandb/sweeps hyperband_stopping)."""
    if not isinstance(et, dict) or et.get("type") != "hyperband":
        got = et.get("type") if isinstance(et, dict) else et
        raise UserError(f"{where}: early_terminate: type must be 'hyperband' (the one W&B has), got {got!r}")
    extra = sorted(set(et) - HYPERBAND_KEYS)
    if extra:
        raise UserError(f"{where}: early_terminate: unknown keys {', '.join(extra)}; "
                        f"hyperband takes {', '.join(sorted(HYPERBAND_KEYS - {'type'}))}")
    et = {"eta": 3, "strict": True, **et}
    if not _num(et["eta"]) or et["eta"] <= 1:
        raise UserError(f"{where}: early_terminate: eta must be a number > 1, got {et['eta']!r}")
    if "max_iter" in et:
        if "s" not in et:
            raise UserError(f"{where}: early_terminate: max_iter needs s (how many bands below max_iter)")
        if not isinstance(et["max_iter"], int) or not _num(et["s"]) or et["s"] < 1:
            raise UserError(f"{where}: early_terminate: max_iter must be an integer and s a number >= 1")
        band, bands = float(et["max_iter"]), []
        for _ in range(int(et["s"])):
            band /= et["eta"]
            if band < 1:
                break
            bands.append(int(band))
        bands.sort()
    elif "min_iter" in et:
        if not isinstance(et["min_iter"], int) or et["min_iter"] < 1:
            raise UserError(f"{where}: early_terminate: min_iter must be an integer >= 1, got {et['min_iter']!r}")
        bands, band = [], float(et["min_iter"])
        while band < 1e6:
            bands.append(int(band))
            band *= et["eta"]
    else:
        raise UserError(f"{where}: early_terminate: hyperband needs min_iter, or max_iter and s")
    if not bands:
        raise UserError(f"{where}: early_terminate: no hyperband bands (increase max_iter or s, or lower eta)")
    return et, bands


def check_value(cfg, key: str, value: Any):
    """The value `key` takes when `value` is applied to `cfg` (pydantic coercion); UserError if invalid."""
    if isinstance(value, str):
        from runner.config import parse_value

        value = parse_value(value)
    return get_dotted(build_config(to_dict(cfg), {key: value}), key)


def load_sweep(path: str | Path, sets: dict[str, Any] | None = None, check_metric: bool = True) -> SweepFile:
    """Read and validate a sweep file; `sets` are extra config overrides (--set) applied to every run."""
    path = Path(path)
    where = f"sweep file {str(path)!r}"
    raw = read_yaml_file(path, "sweep file")
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{where} must hold a mapping (method, metric, parameters, command)")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}{_close(unknown[0], TOP_KEYS)}")

    # -- method
    method = raw.get("method")
    if method not in METHODS:
        hint = _close(str(method), METHODS) or f"; valid methods: {', '.join(METHODS)}"
        if method == "custom":
            hint = "; 'custom' needs a W&B scheduler; use grid, random or bayes"
        raise UserError(f"{where}: unknown method {method!r}{hint}")

    # -- metric
    if "metrics" in raw:
        raise UserError(f"{where}: `metrics` (multi-objective) needs method 'custom'; give one `metric`")
    metric = raw.get("metric")
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        raise UserError(f"{where}: needs metric: {{name: <logged metric>, goal: minimize|maximize}}")
    extra = sorted(set(metric) - METRIC_KEYS)
    if extra:
        raise UserError(f"{where}: metric: unknown key {extra[0]!r}{_close(extra[0], METRIC_KEYS)}")
    goal = metric.get("goal", "minimize")
    if goal not in GOALS:
        raise UserError(f"{where}: metric {metric['name']!r}: goal must be minimize or maximize, got {goal!r}")
    target = metric.get("target")
    if target is not None and not _num(target):
        raise UserError(f"{where}: metric {metric['name']!r}: target must be a number, got {target!r}")

    # -- command
    command = raw.get("command")
    if not isinstance(command, list) or not command:
        raise UserError(f"{where}: needs a command, e.g. [${{env}}, ${{interpreter}}, -m, runner.train, "
                        f"--config, configs/X.yaml, --wandb, ${{args}}]")
    command = substitute_envvars(command)
    macros = [c for c in command if c.startswith("${") and c.endswith("}")]
    bad = [c for c in macros if c not in KNOWN_MACROS]
    if bad:
        raise UserError(f"{where}: command: macro {bad[0]} is not supported; use ${{env}} ${{interpreter}} "
                        f"-m runner.train ... ${{args}}")
    if sum(c in ARGS_MACROS for c in command) != 1:
        raise UserError(f"{where}: command must contain ${{args}} exactly once, or the swept values never "
                        f"reach runner.train")
    if "runner.train" not in command or command.index("runner.train") == 0 or \
            command[command.index("runner.train") - 1] != "-m":
        raise UserError(f"{where}: command must run `-m runner.train`, got {' '.join(command)}")
    args_pos = next(i for i, c in enumerate(command) if c in ARGS_MACROS)
    if args_pos < command.index("runner.train"):
        raise UserError(f"{where}: command: ${{args}} must come after `-m runner.train`")
    tokens = train_tokens(command)
    try:
        args, overrides = resolve_cli(tokens)
    except UserError as e:
        raise UserError(f"{where}: command: {e}") from None
    if not args.config:
        raise UserError(f"{where}: command has no --config (the task's config file)")
    if not args.wandb:
        raise UserError(f"{where}: command lacks --wandb: the agent's runs would not report to W&B")
    if args.resume or args.print_config:
        raise UserError(f"{where}: command must not pass --resume or --print-config")
    try:
        cfg = load_config(args.config, {**overrides, **(sets or {})})
    except UserError as e:
        raise UserError(f"{where}: command: {e}") from None
    task = cfg.task

    # -- parameters
    params_raw = raw.get("parameters")
    if not isinstance(params_raw, dict) or not params_raw:
        raise UserError(f"{where}: needs parameters: {{<dotted.config.key>: {{values: [...]}}}}")
    keys = valid_keys(type(cfg))
    sections = {k for k in keys if any(o.startswith(k + ".") for o in keys)}
    params: dict[str, Param] = {}
    for name in sorted(params_raw, key=str):
        spec = params_raw[name]
        pwhere = f"{where}: parameters"
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise UserError(f"{pwhere}: {name!r} is not a valid W&B parameter name")
        if isinstance(spec, dict) and "parameters" in spec:
            raise UserError(f"{pwhere}: {name!r} nests parameters; name each swept key by its dotted config "
                            f"path instead (e.g. {name}.<key>)")
        if name in sections:
            inside = sorted(k for k in keys if k.startswith(name + ".") and k not in sections)
            raise UserError(f"{pwhere}: {name!r} is a section, not a value; sweep keys inside it "
                            f"({', '.join(inside[:6])}{' ...' if len(inside) > 6 else ''})")
        if name not in keys:
            raise UserError(f"{pwhere}: {name!r} is not a config key of task {task!r}"
                            f"{_close(name, set(keys) - sections)}")
        if name in RUNNER_OWNED:
            raise UserError(f"{pwhere}: {name!r} is set per run by the sweep runner and cannot be swept")
        if sets and name in sets:
            raise UserError(f"{pwhere}: {name!r} is swept and also fixed with --set; drop one")
        p = fill_param(name, spec, pwhere)
        if method == "grid" and p.distribution not in GRID_OK:
            raise UserError(f"{pwhere}: {name!r} ({p.distribution}) cannot be gridded; grid takes values, value, "
                            f"int_uniform or q_uniform")
        if method == "bayes" and p.distribution not in BAYES_OK:
            raise UserError(f"{pwhere}: {name!r} ({p.distribution}) is unbounded; the bayes search needs "
                            f"values or a min/max range")
        for v in p.bounds():
            try:
                check_value(cfg, name, str(v))  # as the agent passes it: --name=str(value)
            except UserError as e:
                raise UserError(f"{pwhere}: {name!r} value {v!r} is rejected: {e}") from None
        params[name] = p

    # -- early_terminate, run_cap
    et, bands = (None, [])
    if raw.get("early_terminate") is not None:
        et, bands = _hyperband(raw["early_terminate"], where)
    run_cap = raw.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or run_cap < 1):
        raise UserError(f"{where}: run_cap must be a positive integer, got {run_cap!r}")

    sweep = SweepFile(path=path, raw=raw, name=str(raw.get("name") or path.stem), method=method,
                      metric=metric["name"], goal=goal, target=target, params=params, early_terminate=et,
                      bands=bands, run_cap=run_cap, command=command, cfg=cfg, task=task)
    if check_metric:
        try:
            sweep.logged = logged_metric_names(cfg)
        except UserError as e:
            raise UserError(f"{where}: command: {e}") from None
        if sweep.metric not in sweep.logged:
            val_names = sorted(n for n in sweep.logged if n.startswith(("val/", "epoch/")))
            raise UserError(f"{where}: metric {sweep.metric!r} is never logged by task {task!r}"
                            f"{_close(sweep.metric, sweep.logged)} (epoch-level names: {', '.join(val_names)})")
    return sweep


# ---------------------------------------------------------------- the agent path

def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def swept_value_problem(cfg, swept: dict[str, Any]) -> str | None:
    """check_swept_values' message, or None when every swept value reached the config."""
    try:
        check_swept_values(cfg, swept)
    except UserError as e:
        return str(e)
    return None


def check_swept_values(cfg, swept: dict[str, Any]) -> None:
    """Stop a run whose resolved config lost a value W&B's sweep set for it.

    `swept` is what W&B put in the run's config beyond what the runner passed (tracking.Tracker.
    sweep_values): under `wandb agent`, the sweep's parameters. Each must name a config key, and
    the resolved config must hold the same value (after the config's own type coercion).
    """
    if not swept:
        return
    flat: dict[str, Any] = {}
    for k, v in swept.items():
        _flatten(k, v, flat)
    keys = set(valid_keys(type(cfg)))
    resolved = to_dict(cfg)
    for key, value in flat.items():
        if key not in keys:
            raise UserError(f"swept parameter {key!r} (from the W&B sweep) is not a config key of task "
                            f"{cfg.task!r}{_close(key, keys)}; name sweep parameters by their dotted config path")
        try:
            want = json.dumps(check_value(cfg, key, value))
        except UserError as e:
            raise UserError(f"swept parameter {key!r}={value!r} (from the W&B sweep) is invalid: {e}") from None
        have = json.dumps(get_dotted(resolved, key))
        if want != have:
            raise UserError(f"swept value {key}={value!r} (from the W&B sweep) did not reach the resolved config, "
                            f"which has {key}={get_dotted(resolved, key)!r}: the sweep's command must pass "
                            f"${{args}} to runner.train, after any fixed --{key}")
