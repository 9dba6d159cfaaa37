"""Sweep file validation: load a W&B sweep file and check it against the runner before any run starts.

A sweep file is a W&B sweep config (https://docs.wandb.ai/guides/sweeps/sweep-config-keys):

    method: grid | random | bayes
    metric: {name: val/pixel_error, goal: minimize}
    parameters: {loss.threshold: {values: [0.05, 0.1, 0.2, 0.3]}}      # dotted config keys
    early_terminate: {type: hyperband, min_iter: 3}                      # optional
    command: [${env}, ${interpreter}, -m, runner.train, --config, configs/X.yaml, --wandb, ${args}]

Each problem is one UserError naming the file and the entry: the method, every parameter (a real
config key of the task the command's config names, a distribution as W&B defines it, values the
config accepts), the metric (one the runner really logs: probe.py), early_terminate and the
command (parsed by the real runner.train command line, runner.cli).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.cli import resolve_cli
from runner.config import build_config, get_dotted, load_config, read_yaml_file, to_dict, valid_keys
from runner.errors import UserError
from runner.sweep.agent import ARGS_MACROS, KNOWN_MACROS, substitute_envvars, train_tokens
from runner.sweep.distributions import BAYES_OK, GRID_OK, Param, _num, fill_param
from runner.sweep.probe import logged_metric_names

METHODS = ("grid", "random", "bayes")
GOALS = ("minimize", "maximize")
TOP_KEYS = {"apiVersion", "kind", "controller", "description", "program", "job", "image_uri", "entity", "project",
            "method", "command", "name", "run_cap", "metric", "metrics", "scheduler", "early_terminate",
            "parameters"}
METRIC_KEYS = {"name", "goal", "target", "impute", "impute_while_running"}
HYPERBAND_KEYS = {"type", "min_iter", "max_iter", "s", "eta", "strict"}
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# config keys the offline sweep runner sets per trial; sweeping them would break trial isolation
RUNNER_OWNED = ("out_dir", "wandb.group", "wandb.run_name", "wandb.enabled", "wandb.mode")


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


