"""What `wandb agent` does with a sweep file: the argv it runs and the parameter file it writes.

The swept values travel as the agent sends them: `--<name>=<str(value)>` (wandb_agent.py:
`create_sweep_command_args`), and the agent also writes them to a YAML file read by `wandb.init`
(`WANDB_SWEEP_PARAM_PATH`), so they appear in the run's config.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ENVVAR_RE = re.compile(r"\$\{envvar:([A-Z0-9_]*)\}")  # as wandb's create_sweep_command
ARGS_MACROS = ("${args}", "${args_no_equals}")
KNOWN_MACROS = {"${env}", "${interpreter}", *ARGS_MACROS}


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


def write_sweep_params(path: Path, values: dict[str, Any]) -> None:
    """The file `wandb agent` writes for wandb.init (config_util.save_config_file_from_dict)."""
    body = yaml.dump({k: {"value": v} for k, v in values.items()}, Dumper=yaml.SafeDumper,
                     default_flow_style=False, allow_unicode=True, sort_keys=False)
    path.write_text("wandb_version: 1\n\n" + body)

