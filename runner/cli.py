"""The runner.train command line, shared by runner.train, runner.lr_find and the sweep code.

    --config FILE, --wandb and a few named flags (FLAG_KEYS), plus any config key as --a.b=v or --a.b v.
"""
from __future__ import annotations

import argparse

from runner.config import parse_overrides
from runner.errors import UserError

FLAG_KEYS = {"wandb_project": "wandb.project", "wandb_entity": "wandb.entity", "wandb_run_name": "wandb.run_name",
             "wandb_tags": "wandb.tags", "wandb_mode": "wandb.mode", "device": "train.device"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runner.train", allow_abbrev=False,
                                description="Train a task; any config key can be overridden as --section.key=value.")
    p.add_argument("--config", help="YAML config file (configs/*.yaml)")
    p.add_argument("--wandb", action="store_true", help="log to Weights & Biases (offline unless --wandb-mode online)")
    p.add_argument("--wandb-project")
    p.add_argument("--wandb-entity")
    p.add_argument("--wandb-run-name")
    p.add_argument("--wandb-tags", nargs="+")
    p.add_argument("--wandb-mode", choices=["online", "offline", "disabled"])
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument("--resume", help="checkpoint to continue from, or 'auto': the newest latest.pt under out_dir")
    p.add_argument("--force", action="store_true", help="resume even from a checkpoint whose model had collapsed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    return p


def cli_overrides(args, rest: list[str]) -> dict:
    """Config overrides from a parsed command line: `--a.b=v` tokens, then --wandb and the named flags."""
    overrides = parse_overrides(rest)
    if args.wandb:
        overrides["wandb.enabled"] = True
    overrides.update({key: getattr(args, flag) for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None})
    return overrides


def flag_key(token: str) -> str | None:
    """The config key a command-line token sets (`--device` -> train.device), or None."""
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
    parser = build_parser()
    parser.exit_on_error = False
    try:
        args, rest = parser.parse_known_args(tokens)
    except Exception as e:  # argparse.ArgumentError
        raise UserError(str(e)) from None
    return args, cli_overrides(args, rest)

