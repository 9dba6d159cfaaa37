"""Sequence task (seed 003): loss math, dataset statistics and determinism, overlay."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from runner.config import load_config
from runner.data.synthetic.sequence import SequenceDataset, SequenceSpec
from runner.losses.pointer import PointerLoss, funnel
from runner.tasks import build_task
from tests.conftest import ROOT


@pytest.mark.parametrize("t", [0.05, 0.1, 0.3])
def test_funnel_value_and_slope_on_both_sides_and_continuous_at_threshold(t):
    d = torch.tensor([t / 2, t * (1 - 1e-6), t, 2 * t], requires_grad=True)
    v = funnel(d, t)
    v.sum().backward()
    assert torch.allclose(v[0], torch.tensor((t / 2) ** 2))  # quadratic below
    assert torch.allclose(d.grad[0], torch.tensor(t))  # d/dd d^2 = 2d = t at d = t/2
    assert torch.allclose(v[3], torch.tensor(2 * t * 2 * t - t * t))  # linear above
    assert torch.allclose(d.grad[3], torch.tensor(2 * t))  # slope 2t above
    assert abs(v[1].item() - v[2].item()) < 1e-5  # continuous at t
    assert abs(d.grad[1].item() - d.grad[2].item()) < 1e-4  # and its slope too


def test_done_weighting_and_masking():
    outputs = {"xy": torch.tensor([[0.5, 0.5], [0.9, 0.9]]), "done_logit": torch.tensor([0.0, 0.0])}
    batch = {"target_xy": torch.tensor([[0.5, 0.6], [0.0, 0.0]]), "done": torch.tensor([0.0, 1.0])}
    one = PointerLoss(threshold=0.1, done_weight=1.0)(outputs, batch)
    three = PointerLoss(threshold=0.1, done_weight=3.0)(outputs, batch)
    # the done sample's xy (0.9 vs 0.0) must not enter the spatial term
    assert torch.allclose(one["loss_spatial"], torch.tensor(0.1 ** 2))
    assert torch.allclose(one["loss_done"], torch.tensor(np.log(2.0), dtype=torch.float32))
    assert torch.allclose(three["loss"] - one["loss"], 2 * one["loss_done"])
    assert torch.allclose(three["weighted/loss_done"], 3 * three["loss_done"])


def test_misspelt_weight_fails_at_construction():
    from runner.losses.weighting import WeightedSum
    with pytest.raises(ValueError, match="do not match"):
        WeightedSum({"loss_spatail": 1.0, "loss_done": 1.0}, ("loss_spatial", "loss_done"))


def test_dataset_statistics_match_the_seed():
    spec = SequenceSpec()  # seed-sized defaults: 384 px, N in [12, 30]
    ds = SequenceDataset(spec, "train", 3000)
    from runner.data.synthetic.sequence import scene
    ns = [len(scene(spec, "train", i)[0]) for i in range(1000)]
    assert 19.5 <= np.mean(ns) <= 22.5  # seed: ~21 objects per image
    rate = ds.done_rate(3000)
    assert 0.03 <= rate <= 0.065  # seed: 3% done in mixed mode; E[1/(N+1)] ~ 4.8%
    balanced = SequenceDataset(SequenceSpec(done_rate=0.5), "train", 2000).done_rate(2000)
    assert 0.45 <= balanced <= 0.55


def test_dataset_is_deterministic_and_targets_follow_the_order():
    spec = SequenceSpec(image_size=96, radius=3, min_objects=6, max_objects=14)
    a, b = SequenceDataset(spec, "val", 50), SequenceDataset(spec, "val", 50)
    for i in (0, 7, 49):
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["target_xy"], y["target_xy"])
    other = SequenceDataset(SequenceSpec(image_size=96, radius=3, min_objects=6, max_objects=14, seed=1), "val", 50)
    assert not torch.equal(a[0]["image"], other[0]["image"])
    from runner.data.synthetic.sequence import scene
    for i in range(50):
        centres, k = scene(spec, "val", i)
        s = a[i]
        assert s["image"].shape == (3, 96, 96) and s["image"].dtype == torch.float32
        if k < len(centres):  # the target is the leftmost unmarked object
            assert torch.allclose(s["target_xy"], torch.tensor(centres[k] / 96, dtype=torch.float32))
            assert (centres[:k, 0] <= centres[k, 0]).all()


def test_overlay_has_truth_prediction_and_error_colours():
    cfg = load_config(ROOT / "configs" / "sequence_demo.yaml")
    task = build_task(cfg)
    ds = task.dataset("val")
    samples = [ds[i] for i in range(8)]
    i = next(j for j, s in enumerate(samples) if s["done"] < 0.5)
    batch = torch.utils.data.default_collate(samples)
    with torch.no_grad():
        out = task.model().eval()(batch["image"])
    img = task.draw(batch, out, i)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    def has(color):
        return bool((np.abs(img.astype(int) - np.array(color)).sum(-1) < 30).any())
    from runner import viz
    assert has(viz.GREEN) and has(viz.RED) and has(viz.YELLOW)
