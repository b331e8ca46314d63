"""Stratified, seeded K-fold splits of a training file (``datamodule.n_folds``, ``datamodule.fold``).

Every fold run of a sweep computes the same assignment from the labels and ``fold_seed``, so the folds are
disjoint and together cover the file; each run writes the assignment to ``folds.json`` for the record.

``datamodule.fold_group`` names a key (the RE ``sentence``, an MRC ``document_id``): examples sharing its value
go to the same fold (scikit-learn's StratifiedGroupKFold), so validation never sees a training sentence or
passage. Without it, :func:`leaked` counts held-out examples whose text also occurs in training, for a warning.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

log = logging.getLogger(__name__)


def fold_assignment(
    labels: Sequence[str], n_folds: int, seed: int, groups: Sequence[str] | None = None
) -> list[int]:
    """The fold (0..n_folds-1) of every example: class proportions kept in each fold (scikit-learn's StratifiedKFold);
    with ``groups``, every group whole in one fold (StratifiedGroupKFold: proportions kept as far as groups allow)."""
    if n_folds > len(labels):
        raise ValueError(f"datamodule.n_folds={n_folds} is more than the {len(labels)} training examples.")
    if groups is not None:
        return grouped_fold_assignment(labels, groups, n_folds, seed)
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


def grouped_fold_assignment(labels: Sequence[str], groups: Sequence[str], n_folds: int, seed: int) -> list[int]:
    """Folds that never split a group (see :func:`fold_assignment`)."""
    distinct = len(set(groups))
    if distinct < n_folds:
        raise ValueError(f"datamodule.n_folds={n_folds}: datamodule.fold_group has only {distinct} distinct values; "
                         "use fewer folds or another fold_group.")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.empty(len(labels), dtype=np.int64)
    with warnings.catch_warnings():  # rare classes cannot be spread over every fold: fine
        warnings.simplefilter("ignore", UserWarning)
        split = splitter.split(np.zeros(len(labels)), np.asarray(labels), np.asarray(groups))
        for k, (_, held_out) in enumerate(split):
            folds[held_out] = k
    return folds.tolist()


def leaked(keys: Sequence[Any], folds: Sequence[int], fold: int) -> int:
    """How many examples of fold ``fold`` share their key (e.g. their text) with an example of another fold."""
    training = {key for key, k in zip(keys, folds, strict=True) if k != fold}
    return sum(1 for key, k in zip(keys, folds, strict=True) if k == fold and key in training)


def warn_leaks(keys: Sequence[Any], folds: Sequence[int], fold: int, what: str, example: str) -> int:
    """Warn when held-out examples share ``what`` with training ones (a random split of duplicates); the count."""
    count = leaked(keys, folds, fold)
    if count:
        held = sum(1 for k in folds if k == fold)
        log.warning("fold %d: %d of %d held-out examples share their %s with training examples, so validation "
                    "flatters the model: set datamodule.fold_group (e.g. %s) to keep them in one fold",
                    fold, count, held, what, example)
    return count


def fold_report(fold_ids: Mapping[str, int], n_folds: int | None, fold: int, seed: int) -> dict[str, Any]:
    """``folds.json``: the settings, this run's held-out ids, and every id's fold."""
    return {
        "n_folds": n_folds,
        "fold": fold,
        "fold_seed": seed,
        "validation_ids": [i for i, k in fold_ids.items() if k == fold],
        "fold_of": dict(fold_ids),
    }
