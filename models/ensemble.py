"""Soft voting (``task=ensemble``): the weighted mean of several classifier runs' class probabilities.

(Reader runs, whose predictions are ``{question id: answer}``, go to models/reader_ensemble.py instead;
regressor runs, whose records hold a ``prediction``, to models/regression_ensemble.py: the weighted mean of
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
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from core.errors import DataFormatError
from core.files import write_json
from models.cls_metrics import classification_scores
from models.reader_ensemble import is_reader_predictions, run_reader_ensemble

log = logging.getLogger(__name__)

PREDICTION_FILES = ("test_predictions.json", "predictions.json")


def natural_key(path: Path) -> list[Any]:
    """Sweep job dirs in job order: ``2`` before ``10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_runs(paths: Sequence[str | Path], filename: str) -> list[Path]:
    """Run dirs holding ``filename``: each given dir itself, or else every dir below it that has one (a sweep)."""
    runs: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise FileNotFoundError(f"ensemble.runs: {path} is not a directory (give run dirs or a sweep dir).")
        if (path / filename).exists():
            runs.append(path)
        else:
            runs += sorted({f.parent for f in path.rglob(filename)}, key=natural_key)
    return list(dict.fromkeys(runs))


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


def weighted_means(
    runs: Sequence[Sequence[Mapping[str, Any]]], weights: Sequence[float],
    values: Callable[[Mapping[str, Any]], Sequence[float]],
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Per id (first-seen order), the weighted mean of ``values(record)`` over the runs that predicted it; and
    the gold of every id whose records carry one (the runs must agree on it)."""
    totals: dict[str, torch.Tensor] = {}
    mass: dict[str, float] = {}
    gold: dict[str, Any] = {}
    for records, weight in zip(runs, weights, strict=True):
        for record in records:
            vector = torch.tensor([float(v) for v in values(record)], dtype=torch.float64)
            key = str(record["id"])
            totals[key] = totals.get(key, torch.zeros_like(vector)) + weight * vector
            mass[key] = mass.get(key, 0.0) + weight
            if "gold" in record:
                if key in gold and gold[key] != record["gold"]:
                    raise ValueError(f"ensemble: runs disagree on the gold label of {key} ({gold[key]} vs {record['gold']}).")
                gold[key] = record["gold"]
    means = {key: (total / mass[key] if mass[key] > 0 else total).tolist() for key, total in totals.items()}
    return means, gold


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


def saved_model_setting(run: Path, key: str) -> Any:
    """``model.<key>`` of a run's saved config (Hydra's ``.hydra/config.yaml``), if any (e.g. no_relation_label)."""
    path = run / ".hydra" / "config.yaml"
    if not path.exists():
        return None
    try:
        return OmegaConf.select(OmegaConf.load(path), f"model.{key}", default=None)
    except Exception:  # an unresolvable interpolation: the run's own metrics.json still has its scores
        return None


def run_ensemble(settings: Mapping[str, Any], output_dir: Path, metric: str = "korquad") -> dict[str, Any]:
    """``ensemble.runs`` (run dirs or sweep dirs), ``weights``, ``predictions_file``, ``no_relation_label``.

    Runs whose predictions file is ``{question id: answer}`` are readers: models/reader_ensemble.py votes them
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
    # imported here: models/regression_ensemble.py imports this module
    from models.regression_ensemble import is_regression_predictions, run_regression_ensemble

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
