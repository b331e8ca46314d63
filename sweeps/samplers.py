"""Samplers whose randomness depends on the trial, not on the worker that draws it.

Workers that share a study each build the configured sampler with the same seed (``${seed}``): their random
generators then draw the same sequence, and two workers asking at the same moment get the same parameters (the
TPE sampler's random start-up trials first of all). Optuna's own ``optimize(n_jobs=...)`` reseeds each thread
at random, which loses reproducibility. Here the sampler is built anew for every trial with ``seed + trial
number``: trial numbers are unique in the storage, so no two trials share a generator, and a sweep run by one
worker draws the same trials every time. What the samplers learn (TPE's model, CMA-ES's state, a grid's
visited points) they read from the storage, so a fresh instance per trial loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, QMCSampler
from optuna.trial import FrozenTrial, TrialState


class TrialSeededSampler(BaseSampler):
    """The sampler ``make(seed=...)`` builds, built for each trial with ``seed + trial.number``."""

    def __init__(self, make: Callable[..., BaseSampler], seed: int) -> None:
        self._make = make
        self._seed = int(seed)
        self._sampler = make(seed=self._seed)

    def __str__(self) -> str:
        return f"{self._sampler.__class__.__name__}(seed={self._seed} + trial number)"

    def before_trial(self, study: Any, trial: FrozenTrial) -> None:
        self._sampler = self._make(seed=self._seed + trial.number)
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: Any, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Any, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Any, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: Any, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()


def build_sampler(sampler: Any) -> BaseSampler | None:
    """``hydra.sweeper.sampler`` as instantiated by Hydra -> the study's sampler.

    The config makes it a partial (``_partial_: true``), so it can be built once per trial; its ``seed``
    (``null``: unseeded, every worker differs anyway) becomes the base of the trial seeds. A sampler instance
    is used as it is, and so is QMC, whose workers must share one seed to draw one low-discrepancy sequence
    between them.
    """
    if sampler is None or isinstance(sampler, BaseSampler):
        return sampler
    if not isinstance(sampler, partial):
        raise ValueError(f"hydra.sweeper.sampler: {sampler!r} is not an Optuna sampler (its _target_?).")
    seed = sampler.keywords.get("seed")
    if seed is None or isinstance(sampler.func, type) and issubclass(sampler.func, QMCSampler):
        return sampler()
    return TrialSeededSampler(sampler, int(seed))
