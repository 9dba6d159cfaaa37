"""Sweep files, the offline sweep runner and the swept-value check of the `wandb agent` path.

Real parts only: the sweep files in sweeps/, the runner.train CLI in subprocesses (with the argv
the W&B agent builds), offline W&B runs read back with `wandb leet inspect`.
"""
from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, find_wandb_run, inspect_records, inspect_summary, run_cli
from runner.config import get_dotted, valid_keys
from runner.errors import UserError
from runner.sweep.agent import agent_args, expand_command
from runner.sweep.distributions import fill_param, sample
from runner.sweep.search import BayesSearch, GridSearch, RandomSearch, hyperband_stops
from runner.sweep.trials import SweepRunner
from runner.sweep.validate import load_sweep

SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))
TINY = ["data.image_size=32", "data.train_size=48", "data.val_size=16", "model.width=4", "train.epochs=2",
        "train.batch_size=16", "train.log_every=1", "viz.n_samples=2", "checkpoint.upload=false"]


SHRINK = {
    "sequence": {"data.image_size": 32, "model.width": 4},
    "occupancy": {"data.grid": [16, 16, 8], "model.width": 4},
    "lanes": {"data.image_height": 32, "data.image_width": 64, "model.width": 4, "model.hidden": 16},
    "puzzle": {"data.puzzle_width": 64, "data.puzzle_height": 48, "model.width": 4},
}


def write_sweep(path: Path, **over) -> Path:
    """A small sweep file over the demo config (tiny sizes come from --set or the command)."""
    body = {
        "name": "tiny", "method": "grid",
        "metric": {"name": "val/pixel_error", "goal": "minimize"},
        "parameters": {"loss.threshold": {"values": [0.05, 0.3]}},
        "command": ["${env}", "${interpreter}", "-m", "runner.train", "--config", "configs/sequence_demo.yaml",
                    "--wandb", "--no-progress", "${args}"],
    }
    body.update(over)
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def popen_all(argvs: list[list[str]], env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """Run several commands at once (no shell), as the agent runs one."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT), **(env or {})}
    procs = [subprocess.Popen(a, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for a in argvs]
    out = []
    for a, p in zip(argvs, procs):
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(a, p.returncode, stdout, stderr))
    return out


# ---------------------------------------------------------------- the sweep files in sweeps/

def test_sweep_files_exist():
    names = {p.name for p in SWEEP_FILES}
    assert {"threshold.yaml", "done_weight.yaml", "lr.yaml"} <= names


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_sweep_file_validates(path):
    """As W&B reads it (its own loader), and against the runner: keys, metric, command."""
    from wandb.sdk.launch.sweeps.utils import load_sweep_config

    as_wandb = load_sweep_config(str(path))
    assert as_wandb["method"] in ("grid", "random", "bayes")
    assert "${args}" in as_wandb["command"]
    task = load_sweep(path, check_metric=False).task
    # the logged names depend on the task and its loss, not on data or model sizes: shrink those so
    # the one CPU step that lists them stays cheap (seed-size occupancy takes ~10 s of CPU)
    sweep = load_sweep(path, SHRINK.get(task))
    assert sweep.raw == as_wandb
    keys = set(valid_keys(type(sweep.cfg)))
    for name in sweep.params:
        assert name in keys
        get_dotted(sweep.cfg, name)  # resolves to a value of the resolved config
    assert sweep.metric in sweep.logged
    assert sweep.cfg.train.device == "cuda"  # the sweeps run on CUDA machines
    assert sweep.cfg.wandb.enabled


def test_sequence_sweeps_cover_the_seeds_hand_tuning():
    by_name = {p.stem: load_sweep(p, check_metric=False) for p in SWEEP_FILES}
    thr = by_name["threshold"].params["loss.threshold"].grid_values()
    assert 0.1 in thr and 0.3 in thr  # seed 003: 0.3 -> 0.1
    dw = by_name["done_weight"].params["loss.done_weight"].grid_values()
    assert {1.0, 3.0, 5.0} <= set(dw)  # seed 003: 1x -> 3x -> 5x
    lr = by_name["lr"].params["optim.lr"]
    assert lr.spec["min"] <= 1e-3 and lr.spec["max"] >= 1e-2 and by_name["lr"].method == "bayes"
    assert by_name["lr"].early_terminate["type"] == "hyperband"


def first_trial_argv(path: Path) -> tuple[list[str], dict]:
    """The argv a W&B agent runs for the file's first suggestion (${args} expanded as it does)."""
    sweep = load_sweep(path, check_metric=False)
    runner = SweepRunner(sweep, [], count=1, workers=1, seed=0, name=None, out=None)
    values = runner.search.ask()
    values = values[0] if isinstance(values, tuple) else values
    argv = expand_command(sweep.command, values)
    assert argv[0] == "/usr/bin/env" and argv[2:4] == ["-m", "runner.train"]
    return argv, values


def check_resolved(resolved: dict, values: dict) -> None:
    for key, value in values.items():
        assert get_dotted(resolved, key) == pytest.approx(value), key
    assert resolved["train"]["device"] == "cuda" and resolved["wandb"]["enabled"] is True


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_sweep_command_is_accepted_by_the_cli(path, capsys):
    """runner.train's own main() on the agent's argv (after `-m runner.train`), + --print-config."""
    from runner.train import main

    argv, values = first_trial_argv(path)
    assert main(argv[4:] + ["--print-config"]) == 0
    check_resolved(yaml.safe_load(capsys.readouterr().out), values)


def test_sweep_command_runs_as_a_subprocess():
    """The same argv, run as the agent runs it: a subprocess, no shell."""
    argv, values = first_trial_argv(ROOT / "sweeps" / "threshold.yaml")
    res = popen_all([argv + ["--print-config"]])[0]
    assert res.returncode == 0, res.stderr
    check_resolved(yaml.safe_load(res.stdout), values)


# ---------------------------------------------------------------- the agent's argv

def test_agent_args_are_built_as_wandb_builds_them():
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    values = {"loss.threshold": 0.1, "optim.lr": 1e-05, "train.batch_size": 16, "loss.kind": "mse",
              "train.amp": False, "optim.betas": [0.9, 0.99], "train.max_train_iters": None}
    theirs = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    ours = agent_args(values)
    assert ours["args"] == theirs["args"]
    assert ours["args_no_equals"] == theirs["args_no_equals"]
    cmd = ["${env}", "${interpreter}", "-m", "runner.train", "--config", "c.yaml", "${args}"]
    assert expand_command(cmd, values, interpreter="python") == [
        "/usr/bin/env", "python", "-m", "runner.train", "--config", "c.yaml", *theirs["args"]]


def test_agent_style_values_parse_to_the_same_config():
    """Every form the agent writes (str(value)) comes back as the value through the runner's parser."""
    from runner.cli import resolve_cli

    values = {"optim.lr": 1e-05, "train.amp": False, "optim.betas": [0.9, 0.99], "train.max_train_iters": None,
              "loss.kind": "mse", "train.batch_size": 16}
    _, overrides = resolve_cli(["--config", "configs/sequence_demo.yaml", *agent_args(values)["args"]])
    from runner.config import load_config, to_dict

    resolved = to_dict(load_config("configs/sequence_demo.yaml", overrides))
    for key, value in values.items():
        assert get_dotted(resolved, key) == value


# ---------------------------------------------------------------- invalid sweep files

BAD_FILES = {
    "unknown method": ({"method": "grdi"}, "unknown method 'grdi'; did you mean 'grid'?"),
    "unknown parameter": ({"parameters": {"loss.treshold": {"values": [0.1]}}},
                          "'loss.treshold' is not a config key of task 'sequence'; did you mean 'loss.threshold'?"),
    "unknown metric": ({"metric": {"name": "val/pixel_err", "goal": "minimize"}},
                       "metric 'val/pixel_err' is never logged by task 'sequence'; did you mean 'val/pixel_error'?"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_invalid_sweep_files_fail_before_any_run(tmp_path, capsys, case):
    """Through runner.sweep's CLI: one line naming the file and the entry, exit 2, no run started."""
    from runner.sweep.__main__ import main

    over, msg = BAD_FILES[case]
    path = write_sweep(tmp_path / "bad.yaml", **over)
    with pytest.raises(SystemExit) as exit_:
        main([str(path), "--out", str(tmp_path / "runs")])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"runner.sweep: error: sweep file {str(path)!r}")
    assert msg in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()


def test_invalid_sweep_file_as_a_subprocess(tmp_path):
    path = write_sweep(tmp_path / "bad.yaml", **BAD_FILES["unknown metric"][0])
    res = run_cli("runner.sweep", str(path), "--out", str(tmp_path / "runs"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"runner.sweep: error: sweep file {str(path)!r}: metric")
    assert BAD_FILES["unknown metric"][1] in lines[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("over, msg", [
    ({"parameters": {"loss.threshold": {"distribution": "uniform", "min": 0.05, "max": 0.3}}},
     "'loss.threshold' (uniform) cannot be gridded"),
    ({"parameters": {"loss.threshold": {"distribution": "log_unifrom_values", "min": 0.01, "max": 0.3}}},
     "unknown distribution 'log_unifrom_values'; did you mean 'log_uniform_values'?"),
    ({"parameters": {"loss.threshold": {"values": [0.1, -1.0]}}}, "'loss.threshold' value -1.0 is rejected"),
    ({"parameters": {"loss": {"values": [1]}}}, "'loss' is a section, not a value"),
    ({"parameters": {"loss": {"parameters": {"threshold": {"values": [0.1]}}}}}, "nests parameters"),
    ({"parameters": {"out_dir": {"values": ["a"]}}}, "'out_dir' is set per run by the sweep runner"),
    ({"command": ["${env}", "${interpreter}", "-m", "runner.train", "--config", "configs/sequence_demo.yaml",
                  "--wandb"]}, "must contain ${args}"),
    ({"command": ["python", "train.py", "${args}"]}, "must run `-m runner.train`"),
    ({"command": ["${env}", "${interpreter}", "-m", "runner.train", "--config", "configs/sequence_demo.yaml",
                  "${args}"]}, "command lacks --wandb"),
    ({"command": ["${env}", "${interpreter}", "-m", "runner.train", "--config", "configs/nope.yaml", "--wandb",
                  "${args}"]}, "command: config file 'configs/nope.yaml' does not exist"),
    ({"method": "bayes", "parameters": {"optim.lr": {"distribution": "normal", "mu": 0.001, "sigma": 0.01}}},
     "'optim.lr' (normal) is unbounded"),
    ({"early_terminate": {"type": "hyperband"}}, "hyperband needs min_iter, or max_iter and s"),
    ({"early_termiante": {"type": "hyperband"}}, "unknown key 'early_termiante'; did you mean 'early_terminate'?"),
    ({"metric": {"name": "val/pixel_error", "goal": "lowest"}}, "goal must be minimize or maximize"),
])
def test_invalid_sweep_entries_name_the_file_and_entry(tmp_path, over, msg):
    path = write_sweep(tmp_path / "bad.yaml", **over)
    with pytest.raises(UserError) as err:
        load_sweep(path, check_metric=False)
    text = str(err.value)
    assert text.startswith(f"sweep file {str(path)!r}") and msg in text, text


# ---------------------------------------------------------------- search semantics

def test_grid_order_and_values_follow_wandb():
    params = {n: fill_param(n, s, "t") for n, s in {
        "b": {"values": ["x", "y"]}, "a": {"min": 1, "max": 3}, "c": {"value": 7},
        "d": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25}}.items()}
    assert params["a"].distribution == "int_uniform"
    assert params["d"].grid_values() == [0.0, 0.25, 0.5, 0.75]  # np.arange(min, max, q): max excluded
    grid = GridSearch(params)
    combos = [grid.ask() for _ in range(len(grid))]
    assert grid.ask() is None and len(combos) == 3 * 2 * 4
    assert combos[0] == {"a": 1, "b": "x", "c": 7, "d": 0.0}
    assert combos[1] == {"a": 1, "b": "x", "c": 7, "d": 0.25}  # names sorted, the last varies fastest
    assert combos[-1] == {"a": 3, "b": "y", "c": 7, "d": 0.75}


def test_random_samples_follow_wandb_distributions():
    rng = np.random.default_rng(0)
    lu = fill_param("lr", {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1}, "t")
    draws = np.array([sample(lu, rng) for _ in range(4000)])
    assert draws.min() >= 1e-5 and draws.max() <= 1e-1
    assert np.median(np.log10(draws)) == pytest.approx(-3.0, abs=0.15)  # uniform in log space
    ln = fill_param("x", {"distribution": "log_uniform", "min": -2.0, "max": 0.0}, "t")  # exponents
    x = np.array([sample(ln, rng) for _ in range(500)])
    assert x.min() >= np.exp(-2.0) and x.max() <= 1.0
    q = fill_param("n", {"distribution": "q_uniform", "min": 0, "max": 10, "q": 2}, "t")
    assert {sample(q, rng) for _ in range(300)} <= {0, 2, 4, 6, 8, 10}
    cat = fill_param("k", {"values": ["a", "b"], "probabilities": [0.9, 0.1]}, "t")
    share = np.mean([sample(cat, rng) == "a" for _ in range(2000)])
    assert share == pytest.approx(0.9, abs=0.03)
    rs = RandomSearch({"lr": lu}, seed=1)
    assert 1e-5 <= rs.ask()["lr"] <= 1e-1


def test_bayes_search_concentrates_near_the_optimum():
    """optuna TPE over a log range: later proposals sit nearer the optimum (1e-3) than the early random ones."""
    lu = fill_param("optim.lr", {"distribution": "log_uniform_values", "min": 1e-6, "max": 1.0}, "t")
    search = BayesSearch({"optim.lr": lu}, minimize=True, seed=0, count=30, workers=1)
    dist = []
    for _ in range(30):
        values, token = search.ask()
        lr = values["optim.lr"]
        assert 1e-6 <= lr <= 1.0
        d = abs(np.log10(lr) + 3.0)
        dist.append(d)
        search.tell(token, d, failed=False)
    assert np.median(dist[-10:]) < np.median(dist[:10]) and min(dist) < 0.3


def test_hyperband_stops_as_wandb_does():
    """The example of wandb/sweeps hyperband_stopping: max_iter 5, eta 2, s 2 -> bands [1, 2]."""
    from runner.sweep.validate import _hyperband

    et, bands = _hyperband({"type": "hyperband", "max_iter": 5, "eta": 2, "s": 2}, "t")
    assert bands == [1, 2]
    hist = {1: [10, 9], 2: [10, 10], 3: [10, 8, 8], 4: [10, 7, 7], 5: [10, 6, 6]}  # 1 and 5 have finished
    stops = hyperband_stops(hist, [2, 3, 4], bands, et["eta"], minimize=True)
    assert stops == {2: (1, 10.0, 8.0), 3: (2, 8.0, 7.0)}  # b fails band 1, c passes 1 but not 2, d goes on
    maxi = hyperband_stops({k: [-v for v in h] for k, h in hist.items()}, [2, 3, 4], bands, 2, minimize=False)
    assert set(maxi) == {2, 3}
    assert _hyperband({"type": "hyperband", "min_iter": 3}, "t")[1][:3] == [3, 9, 27]


# ---------------------------------------------------------------- an offline sweep, end to end

def test_offline_grid_sweep_runs_trials_and_writes_the_leaderboard(tmp_path):
    """2 thresholds x 2 devices on CPU, 2 at a time: `mps` trials crash (no MPS here) and are recorded
    as failed while the sweep goes on; each finished trial is its own offline W&B run in the group,
    with its swept values in its config."""
    path = write_sweep(tmp_path / "tiny.yaml", parameters={"loss.threshold": {"values": [0.05, 0.3]},
                                                           "train.device": {"values": ["cpu", "mps"]}})
    sets = [a for kv in TINY for a in ("--set", kv)]
    res = run_cli("runner.sweep", str(path), "--workers", "2", "--out", str(tmp_path / "runs"), *sets,
                  env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    sweep_dir = next((tmp_path / "runs").glob("sweep-tiny-*"))
    group = sweep_dir.name.removeprefix("sweep-")
    rows = list(csv.DictReader(open(sweep_dir / "leaderboard.csv")))
    assert (sweep_dir / "leaderboard.md").read_text().count("\n| ") == 5  # header + 4 trials
    assert len(rows) == 4
    ok = [r for r in rows if r["status"] == "finished"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert {r["train.device"] for r in ok} == {"cpu"} and {r["train.device"] for r in failed} == {"mps"}
    assert rows[:2] == ok  # best first: finished trials ranked by metric, failed ones last
    best = [float(r["val/pixel_error (min)"]) for r in ok]
    assert best == sorted(best)
    assert all("MPS" in r["note"] for r in failed)
    assert {r["health"] for r in ok} <= {"healthy", "warning", "failed"}  # health/status of summary.json
    assert {r["health"] for r in failed} == {"n/a"}  # crashed before the run directory existed
    winner = ok[0]
    assert f"winner: loss.threshold={winner['loss.threshold']}, train.device=cpu" in res.stdout
    run_dirs = [Path(r["run_dir"]) for r in ok]
    assert len(set(run_dirs)) == 2 and len({d.parent for d in run_dirs}) == 2  # own out_dir per trial
    ckpts = [sorted((d / "checkpoints").glob("*.pt")) for d in run_dirs]
    assert all(ckpts) and not set(ckpts[0]) & set(ckpts[1])
    for row, run_dir in zip(ok, run_dirs):
        wrun = find_wandb_run(run_dir)
        summary = inspect_summary(wrun)
        value = float(row["loss.threshold"])
        assert summary["config"]["loss.threshold"] == value  # as W&B shows a swept parameter
        assert summary["config"]["loss"]["threshold"] == value  # and in the resolved config
        assert summary["config"]["train.device"] == "cpu"
        assert summary["state"] == "finished"
        run_rec = next(r for r in inspect_records(wrun) if r.get("type") == "run")
        assert run_rec["run"]["run_group"] == group
        assert summary["summary"]["val/pixel_error"]["min"] == pytest.approx(float(row["val/pixel_error (min)"]),
                                                                             rel=1e-5)


# ---------------------------------------------------------------- the wandb agent path

def test_swept_value_lost_by_the_command_stops_the_run(tmp_path):
    """Under the agent, wandb.init reads the swept values (WANDB_SWEEP_PARAM_PATH); a command that
    never passes them to the runner must stop with the key named, not train with the default."""
    from runner.sweep.agent import write_sweep_params

    params = tmp_path / "sweep-params.yaml"
    write_sweep_params(params, {"loss.threshold": 0.3})
    common = ["--config", "configs/sequence_demo.yaml", "--wandb", "--no-progress", "--device=cpu",
              f"--out_dir={tmp_path / 'runs'}", *[f"--{kv}" for kv in TINY], "--train.epochs=1"]
    res = run_cli("runner.train", *common, env={"WANDB_SWEEP_PARAM_PATH": str(params)})
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "error" in ln]
    assert lines == [
        "runner.train: error: swept value loss.threshold=0.3 (from the W&B sweep) did not reach the resolved "
        "config, which has loss.threshold=0.1: the sweep's command must pass ${args} to runner.train, after any "
        "fixed --loss.threshold"]
    wrun = find_wandb_run(tmp_path / "runs")
    assert inspect_summary(wrun)["exit_code"] == 2


@pytest.mark.parametrize("device_tokens", [["--device=cuda"], ["--device", "cuda"], ["--train.device=cuda"]])
def test_set_replaces_the_commands_own_setting(tmp_path, capsys, device_tokens):
    """--set train.device=cpu must win over the command's --device=cuda, which runner.train would
    otherwise apply after every --a.b=v override."""
    from runner.train import main

    cmd = ["${env}", "${interpreter}", "-m", "runner.train", "--config", "configs/sequence_demo.yaml", "--wandb",
           *device_tokens, "${args}"]
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", command=cmd), {"train.device": "cpu"}, check_metric=False)
    assert sweep.cfg.train.device == "cpu"
    runner = SweepRunner(sweep, [("train.device", "cpu")], count=None, workers=2, seed=0, name="t", out=str(tmp_path))
    trials = [runner.make_trial() for _ in range(2)]
    assert len({t.dir for t in trials}) == 2
    for t in trials:
        assert "cuda" not in t.argv and f"--out_dir={t.dir}" in t.argv
        assert main(t.argv[4:] + ["--print-config"]) == 0
        resolved = yaml.safe_load(capsys.readouterr().out)
        assert resolved["train"]["device"] == "cpu" and resolved["out_dir"] == str(t.dir)
        assert resolved["loss"]["threshold"] == t.values["loss.threshold"]
        assert resolved["wandb"]["group"] == runner.group
