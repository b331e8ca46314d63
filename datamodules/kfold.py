"""Stratified, seeded K-fold splits of a training file (``datamodule.n_folds``, ``datamodule.fold``).

Every fold run of a sweep computes the same assignment from the labels and ``fold_seed``, so the folds are
disjoint and together cover the file; each run writes the assignment to ``folds.json`` for the record.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold


def fold_assignment(labels: Sequence[str], n_folds: int, seed: int) -> list[int]:
    """The fold (0..n_folds-1) of every example: class proportions kept in each fold (scikit-learn's StratifiedKFold)."""
    if n_folds > len(labels):
        raise ValueError(f"datamodule.n_folds={n_folds} is more than the {len(labels)} training examples.")
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    if max(counts.values()) < n_folds:
        raise ValueError(
            f"datamodule.n_folds={n_folds}: no class has that many examples (largest: {max(counts.values())}); "
            "use fewer folds."
        )
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.empty(len(labels), dtype=np.int64)
    with warnings.catch_warnings():  # "the least populated class has only k members": rare classes are fine
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), np.asarray(labels))):
            folds[held_out] = k
    return folds.tolist()


def fold_report(fold_ids: Mapping[str, int], n_folds: int | None, fold: int, seed: int) -> dict[str, Any]:
    """``folds.json``: the settings, this run's held-out ids, and every id's fold."""
    return {
        "n_folds": n_folds,
        "fold": fold,
        "fold_seed": seed,
        "validation_ids": [i for i, k in fold_ids.items() if k == fold],
        "fold_of": dict(fold_ids),
    }
