"""`python -m tests.inject_nonfinite ARGS...`: runner.train's command line with one training sample
made non-finite (NaN image), so each epoch has one non-finite batch. Test helper, not a product knob."""
from __future__ import annotations

import sys

import torch

from runner.tasks.sequence import SequenceTask


class OneNaNSample(torch.utils.data.Dataset):
    def __init__(self, ds, bad: int = 0):
        self.ds, self.bad = ds, bad

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        item = self.ds[i]
        if i == self.bad:
            item = {**item, "image": torch.full_like(item["image"], float("nan"))}
        return item


_dataset = SequenceTask.dataset
SequenceTask.dataset = lambda self, split: (OneNaNSample(_dataset(self, split)) if split == "train"
                                            else _dataset(self, split))

if __name__ == "__main__":
    from runner.train import main
    sys.exit(main(sys.argv[1:]))
