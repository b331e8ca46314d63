"""``task=ensemble``: vote several runs' predictions into one: classifiers (soft voting of class probabilities,
tasks/ensemble_classifiers.py), readers (hard or soft voting of answers and n-best spans, tasks/ensemble_readers.py)
and regressors (weighted mean, tasks/ensemble_regression.py); the kind is read from the runs' prediction files."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.files import write_json
from tasks.ensemble_classifiers import read_predictions, score, soft_vote
from tasks.ensemble_readers import is_reader_predictions, run_reader_ensemble
from tasks.ensemble_regression import is_regression_predictions, run_regression_ensemble
from tasks.ensemble_runs import PREDICTION_FILES, find_runs, saved_model_setting
from tasks.outputs import metric_name

log = logging.getLogger(__name__)


def task_ensemble(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Vote several classifier runs (soft: class probabilities) or reader runs (hard or soft: answers, n-best
    spans) from run dirs or a sweep dir into predictions.json; the kind is read from the runs' outputs."""
    return run_ensemble(OmegaConf.to_container(cfg.ensemble, resolve=True), output_dir, metric_name(cfg))


def run_ensemble(settings: Mapping[str, Any], output_dir: Path, metric: str = "korquad") -> dict[str, Any]:
    """``ensemble.runs`` (run dirs or sweep dirs), ``weights``, ``predictions_file``, ``no_relation_label``.

    Runs whose predictions file is ``{question id: answer}`` are readers: tasks/ensemble_readers.py votes them
    (``voting``, ``soft_score``, ``gold_file``) and scores them with ``metric``.
    """
    paths = settings.get("runs") or []
    paths = [paths] if isinstance(paths, str) else list(paths)
    if not paths:
        raise ValueError("task=ensemble needs ensemble.runs=[run_dir, ...] or ensemble.runs=<sweep dir>.")
    filename = settings.get("predictions_file")
    candidates = [filename] if filename else list(PREDICTION_FILES)
    runs: list[Path] = []
    for filename in candidates:
        runs = find_runs(paths, filename)
        if runs:
            break
    if len(runs) < 2:
        raise ValueError(f"task=ensemble: found {len(runs)} run(s) with {' or '.join(candidates)} under {paths}; "
                         "voting needs at least two.")
    weights = settings.get("weights")
    weights = [1.0] * len(runs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(runs) or any(w < 0 for w in weights) or sum(weights) <= 0:
        listed = "\n  ".join(str(r) for r in runs)
        raise ValueError(f"ensemble.weights: give {len(runs)} non-negative weights, one per run, in this order:\n  {listed}")
    if is_reader_predictions(runs[0] / filename):
        return run_reader_ensemble(settings, runs, filename, weights, metric, output_dir)
    if is_regression_predictions(runs[0] / filename):
        return run_regression_ensemble(runs, filename, weights, output_dir)
    predictions = [read_predictions(run / filename) for run in runs]
    labels = list(predictions[0][0]["probabilities"])
    for run, records in zip(runs, predictions, strict=True):
        for record in records:
            if set(record["probabilities"]) != set(labels):
                raise ValueError(f"ensemble: {run / filename} record {record['id']} has classes "
                                 f"{sorted(record['probabilities'])[:6]}..., the first run has {labels[:6]}...: "
                                 "runs must share one label map (datamodule.label_map=<first run>/label_map.json).")
    log.info("soft voting %d runs' %s with weights %s", len(runs), filename, weights)
    combined = soft_vote(predictions, weights, labels)
    write_json(output_dir / "predictions.json", combined)
    no_relation = settings.get("no_relation_label") or saved_model_setting(runs[0], "no_relation_label")
    metrics: dict[str, Any] = {"runs": [str(r) for r in runs], "weights": weights, "predictions_file": filename,
                               "examples": len(combined)}
    scores = score(combined, labels, no_relation)
    if scores:
        metrics.update(scores)
        ids = {r["id"] for r in combined}
        metrics["run_scores"] = [
            {"run": str(run), **score([r for r in records if str(r["id"]) in ids], labels, no_relation)}
            for run, records in zip(runs, predictions, strict=True)
        ]
    return metrics
