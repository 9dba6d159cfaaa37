"""The training step never reads the device: host reads happen once per log interval."""
from __future__ import annotations

import pytest
import torch

from runner.build import make_loaders, make_optimizer
from runner.engine import Trainer
from runner.schedules import make_lr_fn
from tests.conftest import count_host_reads
from tests.test_task_contract import TASKS, build


@pytest.mark.parametrize("name", list(TASKS))
def test_host_reads_happen_once_per_log_interval(monkeypatch, name):
    """Every task (the four built-in ones and the worked example): its forward, loss, monitor view
    and metrics add no host read to the step."""
    task = build(name, {"data.train_size": 24 * 4 if name != "occupancy" else 24 * 2,
                        "train.batch_size": 4 if name != "occupancy" else 2, "data.val_size": 8})
    cfg = task.cfg
    train_dl, val_dl = make_loaders(cfg, task.dataset("train"), task.dataset("val"), torch.device("cpu"))
    model, criterion = task.model(), task.criterion()
    optimizer = make_optimizer(model, cfg.optim, criterion, verbose=False)
    trainer = Trainer(task=task, model=model, criterion=criterion, optimizer=optimizer,
                      lr_fn=make_lr_fn(cfg.optim, 24), train_loader=train_dl, val_loader=val_dl,
                      device=torch.device("cpu"), epochs=1, log_every=6, progress=False)
    batches = [b for b in train_dl]  # data loading (not the step) may build tensors from numpy
    trainer.train_loader, trainer.sampler = batches, None
    counts = count_host_reads(monkeypatch)
    logs = []
    trainer.callbacks = [type("Spy", (), {"on_log": lambda self, t, step, v: logs.append(step),
                                          **{h: (lambda self, *a: None) for h in
                                             ("on_fit_start", "on_epoch_end", "on_fit_end", "on_interrupt",
                                              "on_exception")}})()]
    trainer.train_epoch(1, bar=type("Bar", (), {"update": lambda s, n: None,
                                                "set_postfix_str": lambda s, t: None})())
    monkeypatch.undo()
    assert logs == [6, 12, 18, 24]
    # one tolist per log interval plus one at the end of the epoch; nothing else reads the device
    assert counts["tolist"] == len(logs) + 1, counts
    assert sum(v for k, v in counts.items() if k != "tolist") == 0, counts
