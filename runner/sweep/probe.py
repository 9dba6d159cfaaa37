"""The training probe: every scalar name the runner logs for a config, from one CPU step of the real
Trainer (how validate.py checks a sweep's metric)."""
from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

from runner import keys
from runner.config import build_config, to_dict

@functools.lru_cache(maxsize=16)
def _logged_names(config_json: str) -> frozenset[str]:
    import torch
    from torch.utils.data import DataLoader, Subset

    from runner.build import make_optimizer
    from runner.callbacks import Callback, EarlyStopping
    from runner.engine import Trainer
    from runner.health.monitor import HealthMonitor
    from runner.tracking import NullTracker
    from runner.health.stats import CollapseStats
    from runner.tasks import build_task

    cfg = build_config(json.loads(config_json))
    task = build_task(cfg)
    device = torch.device("cpu")
    train = task.dataset("train")
    val = task.dataset("val")
    train_dl = DataLoader(Subset(train, range(min(2, len(train)))), batch_size=2)
    val_dl = DataLoader(Subset(val, range(min(2, len(val)))), batch_size=2)
    model, criterion = task.model(), task.criterion()
    optimizer = make_optimizer(model, cfg.optim, criterion, verbose=False)  # runner.train's; lr stays 0 here
    seen: set[str] = set()

    class Record(Callback):
        def on_log(self, trainer, step, values):
            seen.update(values)

        def on_epoch_end(self, trainer, epoch, metrics):
            seen.update(k for k in metrics if not k.startswith("_"))

    # ratios whose denominator is 0 on this batch (e.g. done recall without a done sample) are
    # dropped from the logged values; so also record the names the task hands the evaluation
    names: dict[str, set[str]] = {"terms": set(), "metrics": set(), "stats": set()}
    task_metrics, task_view = task.metrics, task.monitor_view

    def metrics(outputs, batch):
        out = task_metrics(outputs, batch)
        names["metrics"].update(out)
        return out

    def monitor_view(outputs, batch):
        view = task_view(outputs, batch)
        stats = CollapseStats()
        stats.update(view)
        names["stats"].update(stats.tensors())
        return view

    task.metrics, task.monitor_view = metrics, monitor_view
    # the health monitor measures class balance over whole splits at start (seconds at seed size);
    # it changes the monitor's judgement, not the names it logs
    task.describe_data = lambda split: {}
    criterion.register_forward_hook(lambda module, args, out: names["terms"].update(out))
    callbacks = [EarlyStopping("epoch/val_loss", enabled=False)]
    if cfg.monitor.enabled:  # as runner.train: the health monitor adds health/* to what is logged
        callbacks.append(HealthMonitor(cfg.monitor, NullTracker(Path(tempfile.gettempdir()), "probe"),
                                       val_dl.dataset, cfg.optim.warmup_steps, echo=lambda text: None))
    trainer = Trainer(task=task, model=model, criterion=criterion, optimizer=optimizer, lr_fn=lambda s: 0.0,
                      train_loader=train_dl, val_loader=val_dl, device=device, epochs=1, max_train_iters=1,
                      max_val_iters=1, log_every=1, grad_clip=0.0, amp=False, callbacks=[*callbacks, Record()],
                      progress=False)
    trainer.fit()
    seen.update(vk for k in names["terms"] if (vk := keys.val_key(k)))
    seen.update(keys.VAL + k for k in names["metrics"] | names["stats"])
    return frozenset(seen)


def logged_metric_names(cfg) -> set[str]:
    """Every scalar name the runner logs for this config (one CPU step of the real Trainer)."""
    return set(_logged_names(json.dumps(to_dict(cfg), sort_keys=True)))

