"""Config and CLI: overrides in both forms, agent-style literals, typos, types, ranges, exit code 2."""
from __future__ import annotations

import pytest

from runner.config import build_config, load_config, parse_overrides, parse_value
from runner.errors import UserError
from runner.cli import build_parser
from tests.conftest import ROOT, run_cli

DEMO = str(ROOT / "configs" / "sequence_demo.yaml")


def test_both_override_forms_give_the_same_config():
    a = load_config(DEMO, parse_overrides(["--loss.threshold=0.05", "--optim.lr", "1e-4"]))
    b = load_config(DEMO, parse_overrides(["--loss.threshold", "0.05", "--optim.lr=1e-4"]))
    assert a == b
    assert a.loss.threshold == 0.05 and a.optim.lr == 1e-4


@pytest.mark.parametrize("text,expected", [
    ("True", True), ("False", False), ("true", True), ("on", True), ("0", 0), ("1e-4", 1e-4),
    ("[1, 2]", [1, 2]), ("None", None), ("cuda", "cuda"), ("-3", -3), ("0.1", 0.1),
])
def test_parse_value_reads_python_and_yaml_literals(text, expected):
    assert parse_value(text) == expected


def test_agent_style_values_parse_into_typed_fields():
    # what a W&B sweep agent writes: Python's str() of each value
    cfg = load_config(DEMO, parse_overrides(["--train.amp=True", "--optim.weight_decay=0",
                                             "--optim.betas=[0.8, 0.99]", "--wandb.tags=['a', 'b']"]))
    assert cfg.train.amp is True
    assert isinstance(cfg.optim.weight_decay, float) and cfg.optim.weight_decay == 0.0
    assert cfg.optim.betas == (0.8, 0.99)
    assert cfg.wandb.tags == ["a", "b"]


def test_typo_names_the_key_and_the_closest_valid_one():
    with pytest.raises(UserError, match=r"unknown config key 'loss\.treshold'; did you mean 'loss\.threshold'\?"):
        load_config(DEMO, {"loss.treshold": 0.1})


@pytest.mark.parametrize("key,value,fragment", [
    ("optim.lr", -1.0, "optim.lr"), ("train.batch_size", 0, "train.batch_size"),
    ("train.epochs", "many", "train.epochs"), ("train.device", "tpu", "train.device"),
    ("data.min_objects", 40, "min_objects"),
])
def test_bad_values_name_the_key(key, value, fragment):
    with pytest.raises(UserError, match=fragment):
        load_config(DEMO, {key: value})


def test_config_is_frozen():
    cfg = load_config(DEMO)
    with pytest.raises(Exception):
        cfg.optim.lr = 1.0


def test_unknown_task_lists_valid_ones():
    with pytest.raises(UserError, match="unknown task 'lanez'; valid tasks: .*sequence"):
        build_config({"task": "lanez"})


def test_parser_does_not_abbreviate():
    assert build_parser().allow_abbrev is False


@pytest.mark.parametrize("args,fragment", [
    (["--config", DEMO, "--loss.treshold=0.1"], "did you mean 'loss.threshold'"),
    (["--config", DEMO, "--optim.lr=-1"], "optim.lr"),
    (["--config", DEMO, "--train.batch_size", "0"], "train.batch_size"),
    (["--config", "configs/nope.yaml"], "does not exist"),
    (["--config", DEMO, "--device", "cuda"], "CUDA is not available"),
])
def test_cli_user_errors_are_one_line_and_exit_2(args, fragment, tmp_path):
    import torch
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    p = run_cli("runner.train", *args, f"--out_dir={tmp_path}", timeout=120)
    assert p.returncode == 2, p.stderr
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, p.stderr
    assert fragment in lines[0] and "Traceback" not in p.stderr


def test_malformed_yaml_names_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: sequence\nloss:\n  threshold: [0.1\n")
    with pytest.raises(UserError, match=r"bad\.yaml.*line \d+, column \d+"):
        load_config(bad)
