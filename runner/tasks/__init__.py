"""Task registry: the name in a config's `task:` -> a Task class (docs/own-task.md).

Three ways to name a task, tried in this order:
  - a built-in short name: sequence, lanes, puzzle, occupancy;
  - a name an installed package registers in the entry point group `runner.tasks`
    (`mytask = mypkg.keypoints:KeypointTask` in its packaging metadata);
  - an import path `pkg.module:ClassName`, imported as Python imports any module (the current
    directory, then PYTHONPATH).
Every failure is one UserError line naming the culprit.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys

from runner.errors import UserError

ENTRY_POINT_GROUP = "runner.tasks"
BUILTIN: dict[str, str] = {
    "sequence": "runner.tasks.sequence:SequenceTask",
    "lanes": "runner.tasks.lanes:LanesTask",
    "puzzle": "runner.tasks.puzzle:PuzzleTask",
    "occupancy": "runner.tasks.occupancy:OccupancyTask",
}
REQUIRED = ("dataset", "model", "criterion", "monitor_view")
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


def entry_points() -> dict[str, str]:
    """name -> 'module:Class' registered by installed packages; two packages naming one task is an error."""
    found: dict[str, tuple[str, str]] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep.dist, "name", None) or "?"
        if ep.name in found and found[ep.name][0] != ep.value:
            other_value, other_dist = found[ep.name]
            raise UserError(f"task {ep.name!r} is registered twice in entry point group {ENTRY_POINT_GROUP!r}: "
                            f"{other_value} (package {other_dist}) and {ep.value} (package {dist}); "
                            f"uninstall one, or name the task by its import path")
        found[ep.name] = (ep.value, dist)
    return {name: value for name, (value, _) in found.items()}


def available() -> list[str]:
    """Names usable as `task:` here: built-ins whose module is present, then registered ones."""
    names = [n for n, t in BUILTIN.items() if importlib.util.find_spec(t.split(":")[0]) is not None]
    try:
        names += sorted(n for n in entry_points() if n not in BUILTIN)
    except UserError:
        pass
    return names


def _import(target: str, what: str):
    module_name, _, attr = target.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:  # found from the current directory, as `python -m` does
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's module
        first = (str(e).strip().splitlines() or [""])[0]
        raise UserError(f"{what}: module {module_name!r} does not import: {type(e).__name__}: {first}") from None
    if not hasattr(module, attr):
        raise UserError(f"{what}: module {module_name!r} has no class {attr!r}")
    return getattr(module, attr)


def check_task_class(cls, what: str):
    """The contract every task keeps: a Task subclass with the four required methods."""
    from runner.tasks.base import Task

    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise UserError(f"{what} is not a subclass of runner.tasks.base.Task (got {cls!r})")
    missing = [m for m in REQUIRED if getattr(cls, m) is getattr(Task, m)]
    if missing:
        raise UserError(f"{what} does not define {', '.join(f'{m}()' for m in missing)}; a task needs "
                        f"{', '.join(f'{m}()' for m in REQUIRED)} (docs/own-task.md)")
    return cls


def get_task_class(name):
    if not isinstance(name, str) or not name:
        raise UserError(f"task must be a name or an import path module:Class, got {name!r}; "
                        f"valid names: {', '.join(available())}")
    if name in BUILTIN:
        if importlib.util.find_spec(BUILTIN[name].split(":")[0]) is None:
            raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(available())}")
        return check_task_class(_import(BUILTIN[name], f"task {name!r}"), f"task {name!r}")
    if ":" in name:
        if not IMPORT_PATH.match(name):
            raise UserError(f"task {name!r} is not an import path: write package.module:ClassName")
        return check_task_class(_import(name, f"task {name!r}"), f"task {name!r}")
    registered = entry_points()
    if name in registered:
        what = f"task {name!r} (entry point {registered[name]!r} in group {ENTRY_POINT_GROUP!r})"
        if not IMPORT_PATH.match(registered[name]):
            raise UserError(f"{what} fails to load: its value must be package.module:ClassName")
        return check_task_class(_import(registered[name], what), what)
    raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(available())}, "
                    f"or an import path package.module:ClassName")


def safe_name(name: str) -> str:
    """The task name as it appears in run directory names: no ':' (import paths), nothing a glob reads."""
    return re.sub(r"[^\w.-]", ".", name)


def build_task(cfg):
    return get_task_class(cfg.task)(cfg)
