"""Every piece of advice the runner prints names only config keys that exist.

The advice lives in the health table (runner/health/advice.py), the data check (runner/check_data.py)
and the end-of-run report (runner/report.py). Every `section.key` written in one of their strings
must be a key of the config schema of some task (the health rules and the data check are generic:
their advice applies to the task that owns the key); a key in a string that names its task
(e.g. "seed 003 ... loss.done_pos_weight") is checked against that task's schema.
"""
from __future__ import annotations

import ast
import re

import pytest

from runner.config import COMMON_SECTIONS, config_class, valid_keys
from runner.health.advice import ADVICE
from runner.tasks import BUILTIN, get_task_class
from tests.conftest import ROOT

SECTIONS = ("data", "model", "loss", *COMMON_SECTIONS)
KEY = re.compile(r"(?<![\w./])(" + "|".join(SECTIONS) + r")\.([a-z_][a-z0-9_]*)\b")
SOURCES = [ROOT / "runner" / "check_data.py", ROOT / "runner" / "report.py"]


def schema_keys() -> set[str]:
    keys = set()
    for name in BUILTIN:
        keys |= set(valid_keys(config_class(get_task_class(name))))
    return keys


def advice_strings() -> list[tuple[str, str]]:
    """(where, text) for every advice string: the health table's causes and fixes, and every string
    literal (f-strings included) of the data check and the report."""
    out = [(f"ADVICE[{k!r}]", s) for k, a in ADVICE.items() for s in (*a.causes, *a.fixes)]
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.append((f"{path.name}:{node.lineno}", node.value))
    return out


def named_keys(text: str) -> list[str]:
    # file names (config.yaml), metric names (loss.item) and python attributes are not keys: keep
    # only dotted names whose section is a config section and whose key part is a word
    return [f"{s}.{k}" for s, k in KEY.findall(text) if not text[text.find(f"{s}.{k}"):].startswith(f"{s}.{k}(")]


def test_advice_names_only_existing_config_keys():
    keys = schema_keys()
    found = [(where, key) for where, text in advice_strings() for key in named_keys(text)]
    assert len(found) >= 5, found  # the scan sees the keys the advice does name
    missing = sorted({(w, k) for w, k in found if k not in keys})
    assert not missing, f"advice names config keys that do not exist: {missing}"
    # advice that names its task ("the sequence task's loss.done_pos_weight") is checked against that task
    for where, text in advice_strings():
        for task in BUILTIN:
            if f"the {task} task" in text:
                own = set(valid_keys(config_class(get_task_class(task))))
                assert set(named_keys(text)) <= own, (where, task, named_keys(text))


def test_the_scan_catches_a_key_that_does_not_exist():
    keys = schema_keys()
    assert named_keys("raise loss.done_weight or set data.sampling: balanced") == ["loss.done_weight",
                                                                                "data.sampling"]
    assert "loss.done_pos_weigth" not in keys and "loss.done_pos_weight" in keys


@pytest.mark.parametrize("p", [0.03])
def test_rare_done_advice_names_the_pos_weight_knob(p):
    """check_data's rare-class advice names loss.done_pos_weight, which is the BCE pos_weight."""
    import numpy as np
    import torch

    from runner.check_data import Field, warnings_for
    from runner.losses.pointer import PointerLoss
    f = Field()
    f.add(torch.from_numpy((np.arange(1000) < 1000 * p).astype(np.float32))[:, None])
    text = " ".join(warnings_for("train", "done", f, {"done_weight": 3.0, "done_pos_weight": 1.0}))
    assert "loss.done_pos_weight" in text and "(1-p)/p = 32" in text, text
    # the knob is a real pos_weight: it scales the positive samples' BCE only
    logit, done = torch.zeros(4), torch.tensor([1.0, 0, 0, 0])
    out = {"xy": torch.zeros(4, 2), "done_logit": logit}
    batch = {"target_xy": torch.zeros(4, 2), "done": done}
    base = PointerLoss(done_weight=1.0)(out, batch)["loss_done"]
    weighted = PointerLoss(done_weight=1.0, done_pos_weight=5.0)(out, batch)["loss_done"]
    torch.testing.assert_close(weighted, base * (5 + 3) / 4)
