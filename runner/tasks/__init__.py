"""Task registry: name -> Task class, imported lazily. An unknown name lists the valid ones."""
from __future__ import annotations

import importlib.util

from runner.errors import UserError

TASKS: dict[str, str] = {
    "sequence": "runner.tasks.sequence:SequenceTask",
    "lanes": "runner.tasks.lanes:LanesTask",
    "puzzle": "runner.tasks.puzzle:PuzzleTask",
    "occupancy": "runner.tasks.occupancy:OccupancyTask",
}


def available() -> list[str]:
    """Names whose module is present in this checkout."""
    names = []
    for name, target in TASKS.items():
        if importlib.util.find_spec(target.split(":")[0]) is not None:
            names.append(name)
    return names


def get_task_class(name):
    if not isinstance(name, str) or name not in TASKS or name not in available():
        raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(available())}")
    module, attr = TASKS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def build_task(cfg):
    return get_task_class(cfg.task)(cfg)
