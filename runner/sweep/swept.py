"""The run-time swept-value check: under `wandb agent`, runner.train stops a run whose resolved config
lost a value the sweep set (called after W&B starts, with tracking.Tracker.sweep_values)."""
from __future__ import annotations

import json
from typing import Any

from runner.config import get_dotted, to_dict, valid_keys
from runner.errors import UserError
from runner.sweep.validate import _close, check_value

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
