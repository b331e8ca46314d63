"""Ensembles of extractive readers (``task=ensemble`` over reader or ``task=odqa`` runs).

Each run contributes ``predictions.json`` (``{question id: answer}``) and, for soft voting or tie-breaking,
``nbest_predictions.json`` (``{question id: [{text, probability, score, ...}]}``), as ``task=fit``, ``validate``,
``predict`` and ``odqa`` write them. Per question, over the runs that answered it:

* ``voting: hard``: the answer given by the largest total weight of runs; a tie goes to the answer with the
  larger summed n-best probability (a run's probability of a text is the sum over its n-best entries with that
  text), then to the earlier run's answer.
* ``voting: soft``, ``soft_score: probability``: the text with the largest weighted mean of those probabilities
  (a text absent from a run's n-best has probability 0 there).
* ``voting: soft``, ``soft_score: logit``: the text with the largest weighted mean span score (start + end
  logit; for ``odqa`` runs the combined score). A run's score of a text is its best entry's; a text absent from
  a run's n-best takes that run's lowest n-best score for the question (it ranked below everything listed).

Texts are compared exactly, as the runs wrote them. With gold answers (``ensemble.gold_file``, else the file
the first run answered, from its saved config) ``metrics.json`` has ``metric=``'s scores for the ensemble and for
each run, on the questions the ensemble answered.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.errors import DataFormatError
from core.files import write_json
from tasks.ensemble_runs import saved_setting

log = logging.getLogger(__name__)

VOTINGS = ("hard", "soft")
SOFT_SCORES = ("probability", "logit")

Nbest = Mapping[str, Sequence[Mapping[str, Any]]]


def is_reader_predictions(path: Path) -> bool:
    """A reader's predictions file is one JSON object of answers; a classifier's is a list of records."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(document, dict)


def read_answers(path: Path) -> dict[str, str]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataFormatError(path, f"line {error.lineno}", f"not valid JSON ({error.msg})", "re-run that job") from None
    if not isinstance(document, dict) or not all(isinstance(v, str) for v in document.values()):
        raise DataFormatError(path, None, "not a reader's predictions ({question id: answer text})",
                              "ensemble runs of one kind: all readers (model=reader, task=odqa) or all classifiers")
    return document


def read_nbest(path: Path) -> dict[str, list[dict[str, Any]]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataFormatError(path, f"line {error.lineno}", f"not valid JSON ({error.msg})", "re-run that job") from None
    bad = not isinstance(document, dict) or any(
        not isinstance(entries, list) or any(not isinstance(e, dict) or "text" not in e for e in entries)
        for entries in document.values()
    )
    if bad:
        raise DataFormatError(path, None, "not a reader's n-best file ({question id: [{text, probability, score}]})",
                              "give the nbest_predictions.json the run wrote")
    return document


def text_values(entries: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    """One run's value of each text of one question: summed probability, or best score (``key='score'``)."""
    out: dict[str, float] = {}
    for entry in entries:
        value = entry.get(key)
        if value is None:
            raise ValueError(f"an n-best entry of {entry.get('text')!r} has no {key!r}, which this voting needs")
        text = str(entry["text"])
        if key == "probability":
            out[text] = out.get(text, 0.0) + float(value)
        else:
            out[text] = max(out.get(text, float("-inf")), float(value))
    return out


def vote(
    answers: Sequence[Mapping[str, str]],
    nbests: Sequence[Nbest | None],
    weights: Sequence[float],
    voting: str = "soft",
    soft_score: str = "probability",
) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]]]:
    """Combined answer and ranked candidates (``{text, value, votes}``) per question id."""
    if voting not in VOTINGS:
        raise ValueError(f"ensemble.voting={voting!r} is unknown: choose one of {', '.join(VOTINGS)}.")
    if soft_score not in SOFT_SCORES:
        raise ValueError(f"ensemble.soft_score={soft_score!r} is unknown: choose one of {', '.join(SOFT_SCORES)}.")
    ids = list(dict.fromkeys(qid for run in answers for qid in run))
    predictions: dict[str, str] = {}
    ranked: dict[str, list[dict[str, Any]]] = {}
    key = "score" if voting == "soft" and soft_score == "logit" else "probability"
    for qid in ids:
        votes: dict[str, float] = {}
        values: dict[str, float] = {}
        mass = 0.0
        order: list[str] = []
        per_run: list[tuple[float, dict[str, float]]] = []
        for run, nbest, weight in zip(answers, nbests, weights, strict=True):
            if qid not in run:
                continue
            mass += weight
            votes[run[qid]] = votes.get(run[qid], 0.0) + weight
            order.append(run[qid])
            entries = (nbest or {}).get(qid, [])
            per_run.append((weight, text_values(entries, key) if entries else {run[qid]: 0.0}))
        texts = list(dict.fromkeys([*order, *(t for _, v in per_run for t in v)]))
        for text in texts:
            total = 0.0
            for weight, run_values in per_run:
                floor = 0.0 if key == "probability" else min(run_values.values())
                total += weight * run_values.get(text, floor)
            values[text] = total / mass if mass > 0 else total
        first = {text: i for i, text in reversed(list(enumerate(order)))}
        if voting == "hard":
            rank = sorted(votes, key=lambda t: (-votes[t], -values.get(t, 0.0), first[t]))
            rank += [t for t in texts if t not in votes]
        else:
            rank = sorted(texts, key=lambda t: (-values[t], first.get(t, len(order))))
        predictions[qid] = rank[0]
        ranked[qid] = [{"text": t, "votes": votes.get(t, 0.0), soft_value_name(key): values[t]} for t in rank]
    return predictions, ranked


def soft_value_name(key: str) -> str:
    return "probability" if key == "probability" else "score"


def answered_file(run: Path, filename: str) -> tuple[str | None, str | None, str | None]:
    """(gold file, split, normalize) of the questions a run answered in ``filename``, from its saved config:
    ``test_file`` for ``test_predictions.json`` and predict / odqa runs given one, ``train_file`` for the
    held-out fold of a K-fold run, else ``validation_file``."""
    task = saved_setting(run, "task")
    if filename.startswith("test_") or (task in ("predict", "odqa") and saved_setting(run, "datamodule.test_file")):
        side = "test"
    elif saved_setting(run, "datamodule.n_folds") is not None and task not in ("predict", "odqa"):
        side = "train"
    else:
        side = "validation"
    return (saved_setting(run, f"datamodule.{side}_file"), saved_setting(run, f"datamodule.{side}_split"),
            saved_setting(run, "datamodule.normalize"))


def gold_examples(
    settings: Mapping[str, Any], first_run: Path, filename: str
) -> tuple[list[dict[str, Any]], Any, str | None]:
    """The gold examples (all answered or marked unanswerable), their file and split; [] when unknown."""
    from datamodules.mrc_formats import load_mrc_examples

    path, split, normalize = answered_file(first_run, filename)
    if settings.get("gold_file"):
        path, split = settings["gold_file"], settings.get("gold_split", split)
    if not path or not Path(path).exists():
        if settings.get("gold_file"):
            raise FileNotFoundError(f"ensemble.gold_file={path}: no such file.")
        return [], None, None
    try:
        examples = load_mrc_examples(path, require_answers=True, split=split, normalize=normalize)
    except DataFormatError:
        if settings.get("gold_file"):
            raise
        log.info("%s has questions without gold answers: the ensemble is not scored", path)
        return [], None, None
    return examples, path, split


def run_reader_ensemble(
    settings: Mapping[str, Any], runs: Sequence[Path], filename: str, weights: Sequence[float], metric: str,
    output_dir: Path,
) -> dict[str, Any]:
    """Vote the runs' answers into ``predictions.json`` / ``nbest_predictions.json``; score them with gold."""
    from datamodules.mrc_formats import question_types
    from models.mrc_metrics import check_metric, score_against

    check_metric(metric)
    voting = str(settings.get("voting") or "soft")
    soft_score = str(settings.get("soft_score") or "probability")
    answers = [read_answers(run / filename) for run in runs]
    nbest_name = filename.replace("predictions", "nbest_predictions", 1)
    nbests: list[Nbest | None] = []
    for run in runs:
        path = run / nbest_name
        if not path.exists() and voting == "soft":
            raise FileNotFoundError(f"ensemble.voting=soft needs {path} (the run's n-best spans); "
                                    "use ensemble.voting=hard to vote on predictions alone.")
        nbests.append(read_nbest(path) if path.exists() else None)
    log.info("%s voting of %d readers' %s with weights %s", voting, len(runs), filename, list(weights))
    predictions, ranked = vote(answers, nbests, weights, voting, soft_score)
    write_json(output_dir / "predictions.json", predictions)
    write_json(output_dir / "nbest_predictions.json", ranked)
    metrics: dict[str, Any] = {"kind": "reader", "runs": [str(r) for r in runs], "weights": list(weights),
                               "predictions_file": filename, "voting": voting, "questions": len(predictions)}
    if voting == "soft":
        metrics["soft_score"] = soft_score
    examples, gold_path, split = gold_examples(settings, runs[0], filename)
    examples = [ex for ex in examples if ex["id"] in predictions]
    if examples:
        types = question_types(gold_path, split=split) if gold_path else None
        metrics.update(score_against(examples, predictions, metric, types))
        metrics["gold_file"] = str(gold_path)
        metrics["run_scores"] = [
            {"run": str(run), **score_against(examples, run_answers, metric, types)}
            for run, run_answers in zip(runs, answers, strict=True)
        ]
    return metrics
