"""Data and code bugs for the health benchmark, as wrappers around an ordinary `runner.train` run.

    python bench/bugs.py BUG [runner.train arguments ...]

The bug is applied from outside the product: the task's datasets are wrapped (runner.tasks.build_task
is wrapped in this process only) or the trainer's optimizer is patched. BUG is one of BUGS.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

INPUTS = ("image", "bev")  # the model's input in a sample, per task
TARGETS = {"target_xy", "points", "box", "boxes", "center", "size"}  # regression targets to rescale


def input_key(sample: dict) -> str:
    return next(k for k in INPUTS if k in sample)


class Wrapped(torch.utils.data.Dataset):
    """A dataset whose samples pass through fn. forward=True passes other attributes (a generator's fast
    paths for statistics and baselines, e.g. lanes(i)) to the base: right for bugs that leave the targets
    as they are; bugs that change the targets or the class balance set forward=False."""

    def __init__(self, base, fn, length=None, index=None, forward=True):
        self.base, self.fn, self.index, self.forward = base, fn, index, forward
        self.n = length if length is not None else len(base)

    def __getattr__(self, name):
        if name in ("base", "fn", "index", "forward", "n") or not self.__dict__.get("forward"):
            raise AttributeError(name)
        return getattr(self.__dict__["base"], name)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        j = self.index[i] if self.index is not None else i
        return self.fn(j, dict(self.base[j]))


def constant_inputs(ds, split):
    first = ds[0]
    k = input_key(first)
    return Wrapped(ds, lambda i, s: {**s, k: first[k].clone()})


def zeroed_inputs(ds, split):
    k = input_key(ds[0])
    return Wrapped(ds, lambda i, s: {**s, k: torch.zeros_like(s[k])})


def shuffled_targets(ds, split):
    """Train inputs paired with another sample's targets (a misaligned label list); val is right."""
    if split != "train":
        return ds
    k = input_key(ds[0])
    g = torch.Generator().manual_seed(1234)
    perm = torch.randperm(len(ds), generator=g).tolist()
    return Wrapped(ds, lambda i, s: {**dict(ds[perm[i]]), k: s[k]})


def class_missing(ds, split):
    """The rare class (done) dropped from the training split only (a labelling filter)."""
    if split != "train":
        return ds
    keep = [i for i in range(len(ds)) if float(ds[i]["done"]) < 0.5]
    return Wrapped(ds, lambda i, s: s, length=len(keep), index=keep, forward=False)


def preprocessing_mismatch(ds, split):
    """Validation inputs on a 0..255 scale, training inputs on 0..1."""
    if split != "val":
        return ds
    k = input_key(ds[0])
    return Wrapped(ds, lambda i, s: {**s, k: s[k] * 255.0})


def target_scale(ds, split):
    """Regression targets in pixels instead of the [0, 1] the model's head produces (x 100)."""
    return Wrapped(ds, lambda i, s: {**s, **{t: s[t] * 100.0 for t in TARGETS if t in s}}, forward=False)


DATA_BUGS = {"constant_inputs": constant_inputs, "zeroed_inputs": zeroed_inputs, "shuffled_targets": shuffled_targets,
             "class_missing": class_missing, "preprocessing_mismatch": preprocessing_mismatch,
             "target_scale": target_scale}
CODE_BUGS = ("not_stepping", "frozen")
BUGS = tuple(DATA_BUGS) + CODE_BUGS


def install(bug: str) -> None:
    import runner.engine
    import runner.train

    if bug in DATA_BUGS:
        wrap, build = DATA_BUGS[bug], runner.train.build_task

        def build_task(cfg):
            task = build(cfg)
            original = task.dataset
            cache = {}

            def dataset(split):
                if split not in cache:
                    cache[split] = wrap(original(split), split)
                return cache[split]

            task.dataset = dataset
            return task

        runner.train.build_task = build_task
        return
    init = runner.engine.Trainer.__init__

    def patched(self, *a, **kw):
        init(self, *a, **kw)
        opt = self.optimizer
        step = opt.step
        if bug == "not_stepping":  # optimizer.step() forgotten
            opt.step = lambda closure=None: None
        else:  # every parameter frozen: no gradient ever reaches the optimizer
            def frozen_step(closure=None):
                for g in opt.param_groups:
                    for p in g["params"]:
                        p.grad = None
                return step(closure)
            opt.step = frozen_step

    runner.engine.Trainer.__init__ = patched


def main(argv: list[str]) -> int:
    bug, rest = argv[0], argv[1:]
    if bug not in BUGS:
        print(f"bench/bugs.py: unknown bug {bug!r}; one of {', '.join(BUGS)}", file=sys.stderr)
        return 2
    install(bug)
    import runner.train
    return runner.train.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
