"""Fixed-weight sum of named loss terms; weights are config floats, never parameters."""
from __future__ import annotations

from torch import Tensor, nn


class WeightedSum(nn.Module):
    """total = sum(w[k] * term[k]); returns {"loss", "<term>" (unweighted), "weighted/<term>", diagnostics}.

    The weight keys must equal the loss's term names, checked at construction, so a misspelt
    weight fails instead of silently dropping a term.
    """

    def __init__(self, weights: dict[str, float], terms: tuple[str, ...]):
        super().__init__()
        if set(weights) != set(terms):
            raise ValueError(f"loss weights {sorted(weights)} do not match loss terms {sorted(terms)}")
        bad = {k: w for k, w in weights.items() if w < 0}
        if bad:
            raise ValueError(f"loss weights must be >= 0 so the total cannot be driven negative: {bad}")
        self.weights = dict(weights)

    def forward(self, terms: dict[str, Tensor], diagnostics: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        total = sum(self.weights[k] * terms[k] for k in self.weights)
        out = {"loss": total, **terms}
        out.update({f"weighted/{k}": (self.weights[k] * terms[k]).detach() for k in self.weights})
        out.update({k: v.detach() for k, v in (diagnostics or {}).items()})
        return out
