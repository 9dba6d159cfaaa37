"""A user's own task (docs/own-task.md): import paths, entry points, the contract's errors, and the
worked example in examples/keypoints trained from a directory outside the repository."""
from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap

import pytest
import torch

from runner import check_data, predict, train
from runner.config import build_config, load_yaml
from runner.health.__main__ import main as health_main
from runner.sweep.__main__ import main as sweep_main
from runner.errors import UserError
from runner.tasks import get_task_class
from runner.tasks.base import Task
from tests.conftest import ROOT, find_wandb_run, history, inspect_records, run_cli

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
EXAMPLE = ROOT / "examples" / "keypoints"
TINY = ["--data.image_size=16", "--data.train_size=64", "--data.val_size=32", "--train.batch_size=16",
        "--train.epochs=3", "--train.log_every=2", "--optim.warmup_steps=2", "--model.width=4",
        "--model.hidden=16", "--viz.n_samples=2", "--checkpoint.upload=false", "--no-progress"]

GOOD = '''
from runner.tasks.base import MonitorView, Task
from runner.config import Section
import torch
from torch import nn

class Data(Section):
    n: int = 8

class Mini(Task):
    DataConfig = Data
    def dataset(self, split):
        return [{"image": torch.full((2,), float(i)), "y": torch.tensor([float(i)])} for i in range(self.cfg.data.n)]
    def model(self):
        return nn.Linear(2, 1)
    def criterion(self):
        return lambda out, batch: ((out - batch["y"]) ** 2).mean()
    def monitor_view(self, outputs, batch):
        return MonitorView(pred=outputs, target=batch["y"])

class NoView(Task):
    def dataset(self, split): return []
    def model(self): return nn.Linear(2, 1)
    def criterion(self): return nn.MSELoss()

class NotATask:
    pass
'''


@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text("")
    (tmp_path / "userpkg" / "tasks.py").write_text(GOOD)
    (tmp_path / "userpkg" / "broken.py").write_text("import numpy\nraise RuntimeError('bad weights path\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def dist_info(root, name: str, entry_points: str):
    d = root / f"{name}-1.0.dist-info"
    d.mkdir()
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (d / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def test_import_path_task_with_its_own_sections_and_generic_defaults(user_pkg):
    cfg = build_config({"task": "userpkg.tasks:Mini", "data": {"n": 6}})
    assert cfg.data.n == 6
    with pytest.raises(UserError, match=r"unknown config key 'data\.nn'; did you mean 'data\.n'"):
        build_config({"task": "userpkg.tasks:Mini", "data": {"nn": 6}})
    task = get_task_class(cfg.task)(cfg)
    crit = task.criterion()
    assert isinstance(crit, torch.nn.Module)  # a plain function becomes a module that moves with .to()
    batch = torch.utils.data.default_collate(task.dataset("train")[:4])
    out = task.forward(task.model(), batch)
    terms = crit(out, batch)
    assert set(terms) == {"loss"} and terms["loss"].ndim == 0  # a tensor is the single term `loss`
    assert not task.has_overlay() and "draw(batch, outputs, i)" in task.overlay_note()
    assert task.draw(batch, out, 0) is None
    desc = task.describe_data("train")
    assert desc["samples"] == 6 and desc["target_std"] == pytest.approx(torch.arange(6.0).std().item(), rel=1e-5)
    base = task.baseline()  # the mean-target predictor on the targets 0..5: MAE 1.5
    assert base["mean_target_mae"] == pytest.approx(1.5)


@pytest.mark.parametrize("task, message", [
    ("nopkg.tasks:X", r"module 'nopkg.tasks' does not import: ModuleNotFoundError: No module named 'nopkg'"),
    ("userpkg.broken:X", r"module 'userpkg.broken' does not import: RuntimeError: bad weights path$"),
    ("userpkg.tasks:Missing", r"module 'userpkg.tasks' has no class 'Missing'"),
    ("userpkg.tasks:NotATask", r"is not a subclass of runner.tasks.base.Task"),
    ("userpkg.tasks:NoView", r"does not define monitor_view\(\); a task needs dataset\(\), model\(\), criterion\(\)"),
    ("no_such_task", r"unknown task 'no_such_task'; valid tasks: sequence, lanes, puzzle, occupancy"),
    ("a b:C", r"is not an import path"),
])
def test_bad_task_names_are_one_line_errors(user_pkg, task, message):
    with pytest.raises(UserError, match=message) as e:
        build_config({"task": task})
    assert "\n" not in str(e.value)


def test_entry_points_register_names(user_pkg, monkeypatch):
    eps = user_pkg / "eps"
    eps.mkdir()
    dist_info(eps, "usertasks", """\
        [runner.tasks]
        mini = userpkg.tasks:Mini
        gone = userpkg.nothere:Mini
        """)
    monkeypatch.syspath_prepend(str(eps))
    assert get_task_class("mini").__name__ == "Mini"
    assert build_config({"task": "mini", "data": {"n": 3}}).data.n == 3
    assert get_task_class("sequence").__name__ == "SequenceTask"  # the built-ins keep their short names
    with pytest.raises(UserError, match=r"task 'gone' \(entry point 'userpkg.nothere:Mini' in group "
                                        r"'runner.tasks'\): module 'userpkg.nothere' does not import"):
        get_task_class("gone")
    dist_info(eps, "othertasks", """\
        [runner.tasks]
        mini = userpkg.tasks:NoView
        """)
    with pytest.raises(UserError, match=r"task 'mini' is registered twice .*userpkg.tasks:Mini \(package "
                                        r"usertasks\) and userpkg.tasks:NoView \(package othertasks\)"):
        get_task_class("mini")


def test_cli_finds_entry_points_on_pythonpath_and_a_bad_task_exits_2(user_pkg):
    """One interpreter: a dist-info on PYTHONPATH registers `half`, whose class lacks monitor_view()."""
    eps = user_pkg / "eps"
    eps.mkdir()
    dist_info(eps, "usertasks", "[runner.tasks]\nhalf = userpkg.tasks:NoView\n")
    env = {"PYTHONPATH": f"{ROOT}:{user_pkg}:{eps}"}
    r = run_cli("runner.train", "--print-config", "--task=half", env=env, cwd=user_pkg)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert ("task 'half' (entry point 'userpkg.tasks:NoView' in group 'runner.tasks') does not define "
            "monitor_view()") in r.stderr


def test_builtin_tasks_keep_the_contract():
    for name in ("sequence", "lanes", "puzzle", "occupancy"):
        cls = get_task_class(name)
        assert issubclass(cls, Task) and cls.name == name and cls.has_overlay()


@pytest.fixture
def example(tmp_path):
    dst = tmp_path / "project"  # a user's checkout, outside the runner repository
    shutil.copytree(EXAMPLE, dst, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    assert not dst.resolve().is_relative_to(ROOT)
    return dst


def test_example_trains_outside_the_repository_and_a_broken_variant_collapses(example):
    r = run_cli("runner.train", "--config", "config.yaml", "--wandb", *TINY, cwd=example, env=ONE_THREAD)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    run = find_wandb_run(example / "runs")
    assert run.parent.parent.name.startswith("keypoints.task.KeypointTask-")  # no ':' in run directory names
    rows = history(inspect_records(run))
    keys = set().union(*rows)
    for key in ("pred/mean", "pred/std", "pred/min", "pred/max", "gt/std", "pred/std_ratio",
                "val/pred/std_ratio", "val/gt/std", "val/overlays.path", "train/loss_xy", "train/loss_radius", "val/loss_xy", "val/loss_radius",
                "val/center_error_px"):
        assert key in keys, (key, sorted(keys))
    summary = json.loads((run.parent.parent / "summary.json").read_text())
    assert summary["health/status"] == "healthy", summary.get("health/findings")
    assert summary["baseline/mean_target_mae"] > 0
    assert "overlays off" not in r.stdout  # the example defines draw()

    # the other tools on the same project, in-process from its folder (the task module found from the cwd)
    cwd, path = os.getcwd(), list(sys.path)
    os.chdir(example)
    sys.path.insert(0, str(example))
    try:
        assert predict.main(["--checkpoint", str(run.parent.parent / "checkpoints" / "latest.pt"), "--n", "2"]) == 0
        assert health_main([str(run.parent.parent)]) == 0
        assert check_data.main(["--config", "config.yaml", "--data.train_size=16", "--data.val_size=16"]) == 0
        assert sweep_main(["sweep.yaml", "--check"]) == 0
        # the broken variant: a learning rate that saturates the sigmoid head -> one prediction for
        # every input (trained in-process: one interpreter start less)
        (example / "broken.yaml").write_text((example / "config.yaml").read_text().replace("lr: 3.0e-3", "lr: 1.0"))
        assert train.main(["--config", "broken.yaml", *TINY, "--out_dir=broken_runs"]) == 0
    finally:
        os.chdir(cwd)
        sys.path[:] = path
        for name in [m for m in sys.modules if m == "keypoints" or m.startswith("keypoints.")]:
            del sys.modules[name]

    summary = json.loads(next((example / "broken_runs").glob("keypoints.task.KeypointTask-*/summary.json")).read_text())
    assert summary["health/status"] == "failed"
    assert ("collapse", "predictions") in {(f["detector"], f["subject"]) for f in summary["health/findings"]}


@pytest.mark.parametrize("name", ["sequence", "lanes", "puzzle", "occupancy"])
def test_builtin_references_measure_any_dataset(name, monkeypatch):
    """describe_data() and baseline() of each built-in task on a wrapped dataset (a Subset, which has
    none of the built-in datasets' shortcut methods) equal the same measures on the dataset itself."""
    from tests.test_task_contract import TASKS

    path, overrides = TASKS[name]
    cfg = build_config(load_yaml(path), overrides)
    plain = get_task_class(name)(cfg)
    wrapped = get_task_class(name)(cfg)
    own = type(plain).dataset
    monkeypatch.setattr(wrapped, "dataset", lambda split: torch.utils.data.Subset(own(wrapped, split), range(8)))
    for split in ("train", "val"):
        a, b = plain.describe_data(split), wrapped.describe_data(split)
        assert set(b) <= set(a) and set(a) - set(b) <= {"scene_occupancy_rate"}  # synthetic scenes only
        for k in b:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (k, a[k], b[k])
    a, b = plain.baseline(), wrapped.baseline()
    assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6) for k in a), (a, b)


def test_own_task_doc_holds_the_whole_example():
    doc = (ROOT / "docs" / "own-task.md").read_text()
    files = [p for p in EXAMPLE.rglob("*") if p.is_file() and p.suffix in (".py", ".yaml") and p.name != "__init__.py"]
    assert len(files) == 6
    for p in files:
        assert p.read_text().rstrip() in doc, f"docs/own-task.md is out of date with {p.relative_to(ROOT)}"
