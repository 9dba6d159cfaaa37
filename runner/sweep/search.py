"""Search methods over a sweep's parameters, as W&B defines them (wandb/sweeps): grid, random, bayes
(optuna's TPE), and hyperband's early-stopping verdicts."""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from runner.sweep.distributions import Param, py, quantize, sample

class GridSearch:
    """All combinations, parameters sorted by name, last varying fastest (wandb/sweeps grid_search)."""

    def __init__(self, params: dict[str, Param]):
        names = sorted(params)
        self.combos = [dict(zip(names, c)) for c in itertools.product(*(params[n].grid_values() for n in names))]
        self.i = 0

    def __len__(self) -> int:
        return len(self.combos)

    def ask(self) -> dict[str, Any] | None:
        if self.i >= len(self.combos):
            return None
        self.i += 1
        return dict(self.combos[self.i - 1])

    def tell(self, token, value: float | None, failed: bool) -> None: ...



class RandomSearch:
    def __init__(self, params: dict[str, Param], seed: int | None):
        self.params, self.rng = params, np.random.default_rng(seed)

    def ask(self) -> dict[str, Any]:
        return {n: py(sample(self.params[n], self.rng)) for n in sorted(self.params)}

    def tell(self, token, value: float | None, failed: bool) -> None: ...


class BayesSearch:
    """Model-based search with optuna's TPE sampler over the sweep's bounded distributions.

    Ranges map to optuna distributions in the space W&B samples them (log for log_uniform*);
    q_* values are quantized after the draw, as W&B does; categorical values go by index.
    Failed trials are told as FAIL (TPE leaves them out; W&B imputes them as the worst value).
    """

    def __init__(self, params: dict[str, Param], minimize: bool, seed: int | None, count: int, workers: int):
        import warnings

        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self.optuna, self.params = optuna, params
        self.dists = {n: self._dist(p) for n, p in params.items() if p.distribution != "constant"}
        startup = max(2, min(10, count // 3))  # random trials before TPE models the results
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True,
                                             constant_liar=workers > 1)
        self.study = optuna.create_study(direction="minimize" if minimize else "maximize", sampler=sampler)

    def _dist(self, p: Param):
        D, s, d = self.optuna.distributions, p.spec, p.distribution
        if d.startswith("categorical"):
            return D.CategoricalDistribution(list(range(len(s["values"]))))
        if d == "int_uniform":
            return D.IntDistribution(s["min"], s["max"])
        if d in ("uniform", "q_uniform"):
            return D.FloatDistribution(s["min"], s["max"])
        if d in ("log_uniform", "q_log_uniform"):
            return D.FloatDistribution(math.exp(s["min"]), math.exp(s["max"]), log=True)
        if d == "inv_log_uniform":
            return D.FloatDistribution(math.exp(-s["max"]), math.exp(-s["min"]), log=True)
        return D.FloatDistribution(s["min"], s["max"], log=True)  # *_log_uniform_values

    def ask(self):
        trial = self.study.ask(self.dists)
        values = {}
        for n in sorted(self.params):
            p = self.params[n]
            if p.distribution == "constant":
                values[n] = p.spec["value"]
            elif p.distribution.startswith("categorical"):
                values[n] = p.spec["values"][trial.params[n]]
            elif p.distribution.startswith("q_"):
                values[n] = quantize(trial.params[n], p.spec["q"])
            else:
                values[n] = py(trial.params[n])
        return values, trial

    def tell(self, trial, value: float | None, failed: bool) -> None:
        if failed or value is None:
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, value)



def hyperband_stops(histories: dict[int, list[float]], running: list[int], bands: list[int], eta: float,
                    minimize: bool) -> dict[int, tuple[int, float, float]]:
    """Which running trials hyperband stops: {trial: (band, its value there, the band's threshold)}.

    As wandb/sweeps hyperband_stopping: a band b is the b-th logged value (0-based) of the metric;
    its threshold is the value at rank int(n / eta) among all n trials (running or not) that
    logged more than b values; a running trial is stopped when its value at the latest band it
    has passed is worse than that band's threshold.
    """
    sign = 1.0 if minimize else -1.0
    hist = {k: [sign * v for v in h] for k, h in histories.items()}
    thresholds = []
    for band in bands:
        vals = sorted(h[band] for h in hist.values() if len(h) > band)
        thresholds.append(vals[int(len(vals) / eta)] if vals else math.inf)
    out = {}
    for k in running:
        h = hist.get(k, [])
        passed = [(b, th) for b, th in zip(bands, thresholds) if b < len(h)]
        if passed and h[passed[-1][0]] > passed[-1][1]:
            band, th = passed[-1]
            out[k] = (band, sign * h[band], sign * th)
    return out


