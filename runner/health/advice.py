"""Causes and fixes, one table for every rule: the rules (runner/health/rules.py) and the monitor
(runner/health/monitor.py) read them from here, so a piece of advice is written once.

ADVICE[key] = Advice(causes, fixes). A few entries have {placeholders} that the rule fills with the
run's numbers (Advice.format).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Advice:
    causes: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)

    def format(self, **kw) -> "Advice":
        return Advice([c.format(**kw) for c in self.causes], [f.format(**kw) for f in self.fixes])


ADVICE: dict[str, Advice] = {
    "collapse": Advice(
        causes=[
            "the loss has a degenerate minimum at a constant prediction (seed 002: GIoU/SmoothL1 on x1y1x2y2 corners "
            "with a sigmoid head converged to one box for every input)",
            "a learning rate too high for a saturating (sigmoid/softmax) head",
            "learnable loss weights that let the model ignore the term (seed 000: identical lanes for every image)",
        ],
        fixes=[
            "fixed loss weights (config floats; no loss parameters in the optimizer)",
            "CIoU + SmoothL1 on a center+size parameterization instead of GIoU on corners (seed 002)",
            "lower the learning rate (optim.lr / 10)",
            "retrain from scratch: a collapsed checkpoint does not recover by fine-tuning (seed 000)",
        ]),
    "inputs_constant": Advice(
        causes=["the inputs themselves do not vary across samples (their spread across samples is ~0): "
                "a data-pipeline bug (constant, zeroed or blank inputs), not the model or the loss"],
        fixes=["look at the inputs the model gets: python -m runner.check_data --config ... and the overlay images",
               "check the dataset's __getitem__ and any transform/normalization for a constant or zeroed output"]),
    "inputs_ignored": Advice(
        causes=["the inputs vary (spread {spread} across the fixed val batch) but the outputs do not: the model "
                "ignores its inputs, a loss or optimization problem"]),
    "mean_target": Advice(
        causes=["every input gets about the average target (the mean prediction is {gap} target std from the "
                "targets' mean): the answer a loss gives when the inputs carry no information about the targets: "
                "inputs paired with the wrong targets (a shuffled or misaligned label list, an augmentation applied "
                "to the image but not to its labels), inputs that do not reach the model, or a model that has not started "
                "to use them (another loss term dominating the gradient: compare the grad/<head> norms)"],
        fixes=["check that each input's target belongs to it: python -m runner.check_data --config ... and the "
               "overlay images"]),
    "out_of_scale": Advice(
        causes=["the predictions do not reach the targets: their mean is {gap} target std from the targets' mean "
                "and all of them lie in [{lo}, {hi}], narrower than one target std ({std}): targets on another scale "
                "or in other units than the model's outputs (pixels vs [0, 1])"],
        fixes=["check the targets' scale against what the model predicts (e.g. pixels vs [0, 1]): "
               "python -m runner.check_data --config ..."]),
    "out_of_reach": Advice(
        causes=["the predictions do not reach the targets: their mean is {gap} target std from the targets' "
                "mean{span}: a head held at the edge of its range (a saturated sigmoid) or a constant the loss "
                "settled on away from the targets"]),
    "loss_weighting": Advice(
        causes=[
            "learnable (Kendall) uncertainty weights: each weight follows 1/L of its own term, so a term that "
            "is easy to drive to zero takes over and the others stop being learned (seed 000: val loss "
            "-2.47, identical lanes)"],
        fixes=[
            "fixed loss weights (seed 000: w_reg=1, w_exist=1, w_curv=0.1) and no loss parameters in the "
            "optimizer", "if learnable weights must stay: bound log sigma^2 (loss.kind: uncertainty_safe)",
            "retrain from scratch (seed 000: the collapsed model does not recover)"]),
    "stuck_loss": Advice(
        causes=["the term has no usable gradient at the current predictions (seed 002: GIoU of "
                "non-overlapping boxes stuck at 1.000)", "a saturated output (sigmoid at 0 or 1) or dead ReLUs"],
        fixes=["CIoU/DIoU + SmoothL1 instead of GIoU (seed 002: ~12x stronger gradients without overlap)",
               "center+size parameterization of boxes", "check the head's activation; change the learning rate"]),
    "sparse_collapse": Advice(
        causes=["predicting empty minimizes the loss on ~1% positives: weighted BCE (seed 004: pos_weight 10 "
                "was not enough for 99.2% empty voxels) or dice whose value vanishes when both are ~0"],
        fixes=["focal loss (alpha 0.99, gamma 2) + dice + mean-matching with weight 10 (seed 004)",
               "check the data for empty samples: python -m runner.check_data --config ..."]),
    "rare_class": Advice(
        causes=["only {rate} positives: an unweighted BCE learns to always say no "
                "(seed 003: 3% done, predictions always low)"],
        fixes=["sample the rare class more often (e.g. data.sampling: balanced)", "focal loss on the rare class"]),
    "rare_class_weight": Advice(
        fixes=["weight the {name} positives (BCE pos_weight, e.g. the sequence task's loss.done_pos_weight): "
               "about (1-p)/p = {weight:.0f} balances {rate} positives; a weight on the whole term does not "
               "(seed 003: done weight 1 -> 3)"]),
    "overfitting": Advice(
        causes=["the model memorizes the training set (seed 003: best val 0.606 at epoch 10, "
                "1.509 at epoch 55; train 0.10)"],
        fixes=["early stopping (early_stop.enabled: true, patience 5) and use the best checkpoint "
               "(epoch {best_epoch}: checkpoints/best.pt)", "more training data or augmentation",
               "weight decay or a smaller model"]),
    "nonfinite": Advice(
        causes=["learning rate too high", "log or division of zero in a loss", "fp16 overflow"],
        fixes=["lower the learning rate", "gradient clipping (train.grad_clip)", "bf16 instead of fp16"]),
    "explosion": Advice(
        causes=["learning rate too high", "no or weak gradient clipping"],
        fixes=["lower the learning rate (seed 003: 5e-5 -> 1e-5 when gradients explode)",
               "stronger clipping (train.grad_clip 0.5)"]),
    "vanishing_zero": Advice(
        causes=["no gradient reaches it: its loss term has weight 0, it is detached, or its ReLUs are dead",
                "learning rate too high (the head saturated)"],
        fixes=["give the head's loss term a non-zero weight", "lower the learning rate",
               "remove the saturating activation or initialise the head's bias sensibly"]),
    "vanishing": Advice(
        causes=["a saturated activation (sigmoid/softmax at 0 or 1) or dead ReLUs",
                "learning rate too high (the head saturated)"],
        fixes=["give the head's loss term a non-zero weight", "lower the learning rate",
               "remove the saturating activation or initialise the head's bias sensibly"]),
    "baseline": Advice(
        causes=["the outputs vary but do not follow the targets: inputs paired with the wrong targets (a shuffled "
                "or misaligned label list), targets on the wrong scale or in the wrong units, or a model that has "
                "not learned yet (too low a learning rate, too few steps)"],
        fixes=["check that each input's target belongs to it: python -m runner.check_data --config ... and the "
               "overlay images", "check the targets' scale against what the model predicts (e.g. pixels vs [0, 1])",
               "if the data is right: the learning rate (lower it if the training loss jumps or the outputs "
               "saturate; raise it, or train longer, if the training loss only creeps down)"]),
    "class_split": Advice(
        causes=["a labelling problem in the {split} split: the class is {rates} (class balance measured at "
                "start), so the splits do not come from one distribution; this is not class imbalance"],
        fixes=["check how the {split} split's {name} labels are made (a filter, a label map or a join that "
               "drops the class)", "rebuild the splits from one labelled pool"]),
    "mostly_empty": Advice(
        causes=["{fraction} of the {split} samples have no positive element: labels that came out empty (seed 004: "
                "most UAVScenes grids were empty after pose-only alignment); the loss learns to predict empty"],
        fixes=["check how the labels are made (alignment, voxelization, a filter): python -m runner.check_data "
               "--config ... counts the empty samples", "leave the empty samples out, or sample the others more often"]),
    "preprocessing": Advice(
        causes=["the train and val inputs go through different preprocessing (normalization, scaling to [0, 1] "
                "vs [0, 255], channel order, resizing)"],
        fixes=["apply one transform to both splits; compare the two datasets' __getitem__ outputs",
               "python -m runner.check_data --config ... prints each split's statistics"]),
    "not_training": Advice(
        causes=["the optimizer does not step (no optimizer.step(), or a step skipped every time)",
                "every parameter is frozen (requires_grad False) or not in the optimizer",
                "gradients are zero everywhere (the loss does not depend on the parameters)"],
        fixes=["check that the optimizer holds the model's parameters and that they require gradients",
               "check the loss depends on the model output (grad/total > 0)"]),
}
