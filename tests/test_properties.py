"""Property tests: any override or YAML text either parses or gives the one-line UserError."""
from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings, strategies as st

from runner.config import build_config, load_config, parse_overrides, parse_value
from runner.errors import UserError
from tests.conftest import ROOT

DEMO = ROOT / "configs" / "sequence_demo.yaml"
KEYS = ["loss.threshold", "loss.done_weight", "optim.lr", "train.batch_size", "train.amp", "data.sampling",
        "optim.betas", "wandb.tags", "train.device", "loss.treshold", "nope", "train", "data.image_size.x"]
texts = st.text(alphabet=string.printable, max_size=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS) | st.text(alphabet=string.ascii_letters + "._-", min_size=1,
                                                          max_size=12), texts), max_size=4))
def test_any_override_parses_or_is_a_user_error(pairs):
    tokens = [f"--{k}={v}" for k, v in pairs]
    try:
        cfg = load_config(DEMO, parse_overrides(tokens))
    except UserError as e:
        assert str(e) and "\n" not in str(e).strip()
    else:
        assert cfg.task == "sequence"


@settings(max_examples=300, deadline=None)
@given(texts)
def test_parse_value_never_raises(text):
    parse_value(text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=string.printable, max_size=120))
def test_any_yaml_text_loads_or_is_a_user_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("y") / "c.yaml"
    path.write_text("task: sequence\n" + text)
    try:
        load_config(path)
    except UserError as e:
        assert "c.yaml" in str(e) or "config key" in str(e) or "task" in str(e)


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.none(), st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=3)))
def test_any_task_value_is_a_user_error_or_valid(task):
    try:
        build_config({"task": task})
    except UserError as e:
        assert "task" in str(e)
