"""Device discipline of every task, shown without a GPU on PyTorch's `meta` device.

A meta tensor carries shape, dtype and device but no data: any host read (.item(), .tolist(),
float(t), bool(t), .cpu().numpy()) raises, and a tensor a task builds on the CPU (e.g.
torch.tensor(float(n))) shows up as a CPU tensor among meta ones. So running a task's forward,
criterion, monitor_view and metrics on a meta batch proves both halves of the contract in
runner/tasks/base.py: nothing reads the host, and every tensor handed back lives on the inputs'
device. The same test runs on any task: the four built-in ones and the worked example.
"""
from __future__ import annotations

import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import default_collate

from runner.config import load_config
from runner.tasks import build_task
from runner.tasks.base import MonitorView
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "keypoints"
TASKS = {
    "sequence": (ROOT / "configs" / "sequence_demo.yaml",
                 {"data.image_size": 48, "data.radius": 2, "model.width": 8, "data.train_size": 8,
                  "data.val_size": 8}),
    "lanes": (ROOT / "configs" / "lanes.yaml", {"data.train_size": 8, "data.val_size": 8, "model.width": 4,
                                                 "model.hidden": 16}),
    "puzzle": (ROOT / "configs" / "puzzle.yaml", {"data.train_size": 8, "data.val_size": 8, "model.width": 4,
                                                   "model.embed": 4, "data.puzzle_width": 96,
                                                   "data.puzzle_height": 64, "data.piece_size": 16,
                                                   "data.shapes": 10}),
    "occupancy": (ROOT / "configs" / "occupancy.yaml", {"data.train_size": 8, "data.val_size": 8,
                                                         "data.grid": [16, 16, 8]}),
    "example": (EXAMPLE / "config.yaml", {"data.image_size": 16, "data.train_size": 8, "data.val_size": 8,
                                          "model.width": 4, "model.hidden": 16}),
}
# the loss variants whose code paths differ (learnable weights, the seed's losses)
VARIANTS = {"lanes": [{"loss.kind": "uncertainty"}, {"loss.kind": "uncertainty_safe"}],
            "puzzle": [{"loss.kind": "giou"}, {"model.head": "regress"}],
            "sequence": [{"loss.kind": "mse"}]}
CASES = [(name, {}) for name in TASKS] + [(n, v) for n, vs in VARIANTS.items() for v in vs]


def tensors(tree, where=""):
    """(path, tensor) for every tensor in nested dicts, tuples, lists and MonitorViews."""
    if torch.is_tensor(tree):
        yield where, tree
    elif isinstance(tree, MonitorView):
        yield from tensors({"pred": tree.pred, "target": tree.target, "mask": tree.mask, "rates": tree.rates},
                           where)
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from tensors(v, f"{where}.{k}")
    elif isinstance(tree, (tuple, list)):
        for i, v in enumerate(tree):
            yield from tensors(v, f"{where}[{i}]")


def build(name, extra):
    path, overrides = TASKS[name]
    if name == "example" and str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    return build_task(load_config(path, {**overrides, **extra}))


@pytest.mark.parametrize("name,extra", CASES, ids=[f"{n}{'-' + '-'.join(map(str, v.values())) if v else ''}"
                                                   for n, v in CASES])
def test_task_runs_on_meta_device_without_host_reads(name, extra):
    task = build(name, extra)
    ds = task.dataset("val")
    batch = default_collate([ds[i] for i in range(2)])
    meta = torch.device("meta")
    batch = {k: v.to(meta) if torch.is_tensor(v) else v for k, v in batch.items()}
    model, criterion = task.model().to(meta), task.criterion().to(meta)
    outputs = task.forward(model, batch)
    losses = criterion(outputs, batch)
    view = task.monitor_view(outputs, batch)
    metrics = task.metrics(outputs, batch)
    handed = {"outputs": outputs, "losses": losses, "view": view, "metrics": metrics}
    found = list(tensors(handed))
    assert any(p.startswith(".losses") for p, _ in found) and any(p.startswith(".view") for p, _ in found)
    off = [(p, str(t.device)) for p, t in found if t.device != meta]
    assert not off, f"{name}: tensors off the inputs' device: {off}"
    if name in ("sequence", "lanes", "puzzle", "occupancy"):
        assert metrics, f"{name} reports metrics"


# aten ops that make a CUDA step wait for the host: reads (item, nonzero, masked_select, unique), a tensor built
# from Python data inside the step (lift_fresh: torch.tensor(...), a blocking host-to-device copy on a GPU), and
# prod, whose backward on CUDA asks the host whether a factor is 0 (found by bench/cuda_check.py on an H200:
# 24 syncs in 24 puzzle steps from the CIoU loss's wh.prod(1)). The meta-device test above cannot see the last
# two: they run on meta.
SYNCING_OPS = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.unique", "aten._unique",
               "aten.lift_fresh", "aten.prod")


class RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.add(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", list(TASKS))
def test_training_step_uses_no_op_that_makes_a_gpu_wait(name):
    """Forward, loss, backward and the monitor's view of one step (what runs at every step on a GPU)."""
    task = build(name, {})
    ds = task.dataset("train")
    batch = default_collate([ds[i] for i in range(2)])
    model, criterion = task.model(), task.criterion()
    with RecordOps() as ops:
        outputs = task.forward(model, batch)
        losses = criterion(outputs, batch)
        losses["loss"].backward()
        task.monitor_view(outputs, batch)
    bad = sorted(op for op in ops.seen if op.startswith(SYNCING_OPS))
    assert not bad, f"{name}: {bad}"


def test_the_op_recorder_sees_what_the_step_test_forbids():
    """The test above can fail: prod with a gradient, a tensor built from Python data and a host read are seen."""
    x = torch.rand(4, 2, requires_grad=True)
    with RecordOps() as ops:
        (x.prod(1).sum() * torch.tensor(2.0)).backward()
        x.sum().item()
    assert {"aten.prod.dim_int", "aten.lift_fresh.default", "aten._local_scalar_dense.default"} <= ops.seen


def test_meta_device_catches_host_reads_and_cpu_tensors():
    """The test above can fail: a host read on meta raises, a CPU-built denominator is seen."""
    t = torch.ones(3, device="meta")
    with pytest.raises((RuntimeError, NotImplementedError)):
        t.sum().item()
    with pytest.raises((RuntimeError, NotImplementedError)):
        float(t.sum())
    bad = {"metrics": {"acc": (t.sum(), torch.tensor(float(t.numel())))}}
    assert [p for p, x in tensors(bad) if x.device != t.device] == [".metrics.acc[1]"]


def test_box_losses_match_torchvision():
    """The puzzle losses' CIoU/GIoU (torchvision's formulas without the boolean-mask assignment that
    reads the host on a GPU) give torchvision's values and gradients, overlapping or not."""
    from torchvision import ops

    from runner.losses.box import complete_box_iou_loss, generalized_box_iou_loss
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(64, 2, generator=g)
    a = torch.cat([xy, xy + 0.05 + torch.rand(64, 2, generator=g) * 0.5], 1).requires_grad_()
    xy = torch.rand(64, 2, generator=g)
    b = torch.cat([xy, xy + 0.05 + torch.rand(64, 2, generator=g) * 0.5], 1)
    for ours, theirs in ((complete_box_iou_loss, ops.complete_box_iou_loss),
                         (generalized_box_iou_loss, ops.generalized_box_iou_loss)):
        mine = ours(a, b)
        (ga,) = torch.autograd.grad(mine, a)
        ref = theirs(a, b, reduction="mean")
        (gr,) = torch.autograd.grad(ref, a)
        torch.testing.assert_close(mine, ref)
        torch.testing.assert_close(ga, gr)
