"""What a W&B sweep distribution means: its keys, how W&B infers it, its range, its grid and one draw.

Definitions follow wandb/sweeps (fill_parameter, params.HyperParameter.ppf, grid_search); the
file validation (validate.py) and the searches (search.py) both ask this module.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from runner.errors import UserError

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



def sample(p: Param, rng: np.random.Generator) -> Any:
    """One draw of a W&B distribution (definitions of wandb/sweeps params.HyperParameter.ppf)."""
    d, s = p.distribution, p.spec
    q = s.get("q")
    if d == "constant":
        return s["value"]
    if d == "categorical":
        return s["values"][int(rng.integers(len(s["values"])))]
    if d == "categorical_w_probabilities":
        return s["values"][int(rng.choice(len(s["values"]), p=np.asarray(s["probabilities"]) / sum(s["probabilities"])))]
    if d == "int_uniform":
        return int(rng.integers(s["min"], s["max"] + 1))
    if d in ("uniform", "q_uniform"):
        x = rng.uniform(s["min"], s["max"])
    elif d in ("log_uniform", "q_log_uniform"):
        x = math.exp(rng.uniform(s["min"], s["max"]))
    elif d in ("log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values"):
        x = math.exp(rng.uniform(math.log(s["min"]), math.log(s["max"])))
    elif d == "inv_log_uniform":
        x = math.exp(-rng.uniform(s["min"], s["max"]))
    elif d in ("normal", "q_normal"):
        x = rng.normal(s["mu"], s["sigma"])
    elif d in ("log_normal", "q_log_normal"):
        x = math.exp(rng.normal(s["mu"], s["sigma"]))
    elif d in ("beta", "q_beta"):
        x = rng.beta(s["a"], s["b"])
    else:
        raise ValueError(d)
    return quantize(float(x), q) if d.startswith("q_") else float(x)

