"""Ensembles of regressor runs (``task=ensemble`` over ``model=regressor`` runs): the weighted mean prediction.

Each run contributes its ``predictions.json`` or ``test_predictions.json`` (records ``{id, prediction, gold}``,
``gold`` null where the file had no score). As for classifiers (tasks/ensemble_classifiers.py), an id is averaged over
the runs that predicted it, so the held-out predictions of a K-fold sweep give out-of-fold predictions of the
whole training file and their test predictions one ensembled prediction per record. When every record has
a gold score, the ensemble and each run are scored (``pearson``, ``spearman``, ``mse``, ``f1`` at the runs'
``model.binary_threshold``) on the same records.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from core.errors import DataFormatError
from core.files import write_json
from models.regression_metrics import regression_scores
from tasks.ensemble_runs import saved_model_setting, weighted_means

log = logging.getLogger(__name__)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_regression_predictions(path: Path) -> bool:
    """A regressor's predictions file is a list of records holding a numeric ``prediction``."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(document, list) and bool(document) and isinstance(document[0], dict) \
        and is_number(document[0].get("prediction"))


def read_regression_predictions(path: Path) -> list[dict[str, Any]]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataFormatError(path, f"line {error.lineno}", f"not valid JSON ({error.msg})", "re-run that job") from None
    fix = "ensemble runs of one kind: model=regressor runs (records {id, prediction, gold})"
    if not isinstance(records, list):
        raise DataFormatError(path, None, "not a regressor's predictions (a list of {id, prediction, gold})", fix)
    for index, record in enumerate(records):
        if not isinstance(record, dict) or "id" not in record or not is_number(record.get("prediction")):
            raise DataFormatError(path, f"#{index}", "not a regressor's prediction (no id, or no numeric prediction)",
                                  fix)
        if record.get("gold") is not None and not is_number(record["gold"]):
            raise DataFormatError(path, record["id"], f"gold={record['gold']!r} is not a number", "re-run that job")
    return records


def mean_vote(runs: Sequence[Sequence[Mapping[str, Any]]], weights: Sequence[float]) -> list[dict[str, Any]]:
    """Per id, the weighted mean prediction over the runs that predicted it, with its gold (null: none)."""
    means, gold = weighted_means(runs, weights, lambda record: [record["prediction"]])
    return [{"id": key, "prediction": mean, "gold": gold.get(key)} for key, (mean,) in means.items()]


def score(records: Sequence[Mapping[str, Any]], binary_threshold: float | None) -> dict[str, float]:
    """Metrics of records that all carry a gold score (empty if some do not)."""
    if not records or any(r.get("gold") is None for r in records):
        return {}
    prediction = torch.tensor([float(r["prediction"]) for r in records], dtype=torch.float64)
    gold = torch.tensor([float(r["gold"]) for r in records], dtype=torch.float64)
    return regression_scores(prediction, gold, binary_threshold)


def run_regression_ensemble(runs: Sequence[Path], filename: str, weights: Sequence[float],
                            output_dir: Path) -> dict[str, Any]:
    """Average the runs' predictions into ``predictions.json``; score the ensemble and every run with gold."""
    predictions = [read_regression_predictions(run / filename) for run in runs]
    log.info("averaging %d regressor runs' %s with weights %s", len(runs), filename, list(weights))
    combined = mean_vote(predictions, weights)
    write_json(output_dir / "predictions.json", combined)
    threshold = saved_model_setting(runs[0], "binary_threshold")
    metrics: dict[str, Any] = {"kind": "regressor", "runs": [str(r) for r in runs], "weights": list(weights),
                               "predictions_file": filename, "examples": len(combined)}
    scores = score(combined, threshold)
    if scores:
        metrics.update(scores)
        ids = {r["id"] for r in combined}
        metrics["run_scores"] = [
            {"run": str(run), **score([r for r in records if str(r["id"]) in ids], threshold)}
            for run, records in zip(runs, predictions, strict=True)
        ]
    return metrics
