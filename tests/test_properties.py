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


# ---------------------------------------------------------------- loaders

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.text(alphabet=string.printable, max_size=80),
    st.builds(lambda lanes, hs, raw: __import__("json").dumps({"lanes": lanes, "h_samples": hs, "raw_file": raw}),
              st.lists(st.lists(st.integers(-3, 300), max_size=8), max_size=3),
              st.lists(st.integers(-5, 300), max_size=8), st.sampled_from(["img.png", "", "../x.png", 3]))))
def test_any_tusimple_label_line_loads_or_names_file_and_line(tmp_path_factory, line):
    import cv2
    import numpy as np
    from runner.data.formats.tusimple import read_labels

    root = tmp_path_factory.mktemp("tu")
    cv2.imwrite(str(root / "img.png"), np.zeros((64, 96, 3), np.uint8))
    (root / "labels.json").write_text(line + "\n")
    try:
        read_labels(root, ["labels.json"], on_bad="error")
    except UserError as e:
        assert "labels.json:1" in str(e) or "labels.json" in str(e)


def test_missing_data_directory_is_one_line_exit_2(tmp_path):
    from tests.conftest import run_cli
    nope = tmp_path / "nope"
    for task, args in (("lanes", ["--data.source=tusimple", f"--data.root={nope}"]),
                       ("occupancy", ["--data.source=occ3d", f"--data.train_root={nope}", f"--data.val_root={nope}"])):
        p = run_cli("runner.train", "--config", f"configs/{task}.yaml", *args, f"--out_dir={tmp_path}", timeout=300)
        lines = [l for l in p.stderr.splitlines() if l.strip()]
        assert p.returncode == 2 and len(lines) == 1 and "nope" in lines[0], (task, p.stderr[-800:])
