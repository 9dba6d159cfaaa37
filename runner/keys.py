"""The one owner of metric and loss-term key names: prefixes as constants, and the few functions that
classify a key. Every other module imports these instead of parsing prefixes by string.

What a criterion returns (runner/losses/*):

    loss                  the total (the optimised value)
    <term>                an unweighted term (e.g. done, loss_reg)
    weighted/<term>       the same term times its weight (detached)
    weight/<term>         the effective weight of a learnable term (detached)
    loss/<name>           a learnable loss parameter's diagnostic (e.g. loss/sigma_<term>): logged verbatim
    <group>/<term> ...    any other diagnostic group (e.g. position/<term>); total_loss: a detached copy

How the trainer logs them: train_key(k) at each log interval (train/<k>, loss/* verbatim) and
val_key(k) at each evaluation (val/<k>; loss parameters are not per-sample, so not logged there).
"""
from __future__ import annotations

import math
import re
from typing import Callable

TOTAL = "loss"
TRAIN = "train/"
VAL = "val/"
EPOCH = "epoch/"
WEIGHTED = "weighted/"
WEIGHT = "weight/"
LOSS_PARAM = "loss/"
GRAD = "grad/"
HEALTH = "health/"
LOSS_MEDIAN = HEALTH + "loss_median"  # the median of an interval's step losses (the explosion rule's)


def is_loss_param(key: str) -> bool:
    """A learnable loss-parameter diagnostic (loss/sigma_<term>, loss/weight_<term> ...)."""
    return key.startswith(LOSS_PARAM)


def is_term(key: str) -> bool:
    """The total or a top-level term of a criterion's output (no group prefix)."""
    return key == TOTAL or "/" not in key


def is_weighted(key: str) -> bool:
    """A weighted copy of a term, in a criterion's output (weighted/<term>) or logged (train/weighted/<term>)."""
    return key.startswith(WEIGHTED) or key.startswith(TRAIN + WEIGHTED) or key.startswith(VAL + WEIGHTED)


def train_key(key: str) -> str:
    """The name a criterion output is logged under at a log interval."""
    return key if is_loss_param(key) else TRAIN + key


def val_key(key: str) -> str | None:
    """The name a criterion output is logged under at an evaluation; None for keys not logged there."""
    return None if is_loss_param(key) else VAL + key


def weighted_terms(values: dict) -> list[str]:
    """The terms that have a logged weighted copy (train/weighted/<term>)."""
    prefix = TRAIN + WEIGHTED
    return [k[len(prefix):] for k in values if k.startswith(prefix)]


def is_headline_val(key: str) -> bool:
    """A top-level validation value (val/<name>, no group, not a weighted copy): the end-of-run report's."""
    return key.startswith(VAL) and key.count("/") == 1 and WEIGHTED.rstrip("/") not in key


# learnable loss weights: key pattern -> log(effective weight); a term's first matching key is used
WEIGHT_PATTERNS: list[tuple[re.Pattern, Callable[[float], float]]] = [
    (re.compile(rf"^{TRAIN}{WEIGHT}(.+)$"), lambda v: math.log(v) if v > 0 else -math.inf),
    (re.compile(rf"^{LOSS_PARAM}weight_(.+)$"), lambda v: math.log(v) if v > 0 else -math.inf),
    (re.compile(rf"^{LOSS_PARAM}sigma_(.+)$"), lambda v: -2 * math.log(v) if v > 0 else math.nan),  # w ~ 1/sigma^2
    (re.compile(rf"^{LOSS_PARAM}log_var_(.+)$"), lambda v: -v),  # w ~ exp(-s)
]


def term_key(values: dict, term: str) -> str | None:
    """The logged key of the term a learnable weight belongs to (train/<term>, train/loss_<term>, ...)."""
    for k in (f"{TRAIN}{term}", f"{TRAIN}loss_{term}", f"{TRAIN}{term}_loss"):
        if k in values:
            return k
    return None
