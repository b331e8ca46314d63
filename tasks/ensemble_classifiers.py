"""Soft voting (``task=ensemble``): the weighted mean of several classifier runs' class probabilities.

(Reader runs, whose predictions are ``{question id: answer}``, go to tasks/ensemble_readers.py instead;
regressor runs, whose records hold a ``prediction``, to tasks/ensemble_regression.py: the weighted mean of
the predictions.)

Each run contributes its ``predictions.json`` or ``test_predictions.json`` (records ``{id, label,
probabilities: {class: p}, gold?}``). An id is averaged over the runs that predicted it, so the K fold runs of
a K-fold sweep give, from their test predictions, one ensembled test prediction per record, and from their
held-out predictions, the out-of-fold predictions of the whole training file. With gold labels on every
record, the ensemble and each run are scored on the same records.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from core.errors import DataFormatError
from models.cls_metrics import classification_scores
from tasks.ensemble_runs import weighted_means

log = logging.getLogger(__name__)

def read_predictions(path: Path) -> list[dict[str, Any]]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataFormatError(path, f"line {error.lineno}", f"not valid JSON ({error.msg})", "re-run that job") from None
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and "id" in r and isinstance(r.get("probabilities"), dict) for r in records
    ):
        raise DataFormatError(
            path, None, "not a classifier's predictions (a list of {id, label, probabilities})",
            "ensemble runs of model=classifier (a reader's predictions.json has no class probabilities)",
        )
    return records


def soft_vote(
    runs: Sequence[Sequence[Mapping[str, Any]]], weights: Sequence[float], names: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Per id, the weighted mean probability of every class over the runs that predicted it."""
    labels = list(names or runs[0][0]["probabilities"])
    means, gold = weighted_means(runs, weights, lambda record: [record["probabilities"][name] for name in labels])
    out = []
    for key, probs in means.items():
        record = {
            "id": key,
            "label": labels[max(range(len(probs)), key=probs.__getitem__)],
            "probabilities": {name: round(p, 6) for name, p in zip(labels, probs, strict=True)},
        }
        if key in gold:
            record["gold"] = gold[key]
        out.append(record)
    return out


def score(records: Sequence[Mapping[str, Any]], labels: Sequence[str], no_relation: str | None) -> dict[str, float]:
    """Metrics of records that all carry gold labels (empty if some do not)."""
    if not records or any("gold" not in r for r in records):
        return {}
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted({r["gold"] for r in records} - set(index))
    if unknown:
        raise ValueError(f"ensemble: gold labels {unknown[:5]} are not among the runs' classes {list(labels)[:8]}.")
    probs = torch.tensor([[r["probabilities"][name] for name in labels] for r in records], dtype=torch.float64)
    target = torch.tensor([index[r["gold"]] for r in records])
    return classification_scores(probs, target, index.get(no_relation) if no_relation else None)


