"""Extractive-QA scores under the three definitions competitions report (``metric=``).

* ``korquad`` (default): KorQuAD 1.0 EM / character F1, the official script (:mod:`models.qa_metrics`).
* ``klue_mrc``: KLUE-MRC's EM and "ROUGE-W", as the KLUE baseline computes them
  (``klue_baseline/metrics/functional.py``: ``normalize_answer_for_klue_mrc``, ``rouge_w_score_for_klue_mrc``,
  ``evaluate_for_klue_mrc``). "ROUGE-W" there is not Lin's weighted LCS: it is the F1 of the longest common
  *contiguous* substring (LCCS) of the normalised strings, in characters, found with ``difflib.SequenceMatcher``
  (used here too, autojunk and all, so long strings match the baseline's numbers).
* ``squad``: Hugging Face SQuAD v1.1 EM / F1 over whitespace tokens (lower case, ASCII punctuation and English
  articles removed), from ``torchmetrics.functional.text.squad``: the numbers older boostcamp runs logged.

An unanswerable question (``is_impossible``, read as ``answers == []``) is scored against one empty gold answer
under every metric; with ``klue_mrc`` an empty prediction then scores 1 (EM and ROUGE-W), any other 0.

Questions without a prediction: ``korquad`` and ``squad`` count them with score 0 (their official scripts);
``klue_mrc`` leaves them out as KLUE's ``evaluate_for_klue_mrc`` does, and ``examples`` says how many were scored.
With ``question_types`` (KLUE-MRC's ``question_type``: 1 paraphrase, 2 multi-sentence reasoning, 3 unanswerable)
the same scores are given per type under ``by_question_type``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence
from difflib import SequenceMatcher
from typing import Any

from core.records import MRCExample

METRICS = ("korquad", "klue_mrc", "squad")

# The baseline's pattern, kept as written: the character class is followed by the literal "()‘’", so it only
# matches a quote or bracket directly followed by those four characters, i.e. practically never. 《》〈〉‘’ are
# therefore kept (and count) under klue_mrc, while KorQuAD's normalisation turns them into spaces.
_KLUE_CHAR_PATTERN = re.compile(r"[\'\"《》<>〈〉]\(\)\‘\’")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_klue_mrc(answer: str) -> str:
    """KLUE-MRC normalisation: lower case, the (quirky) pattern above, ASCII punctuation out, whitespace collapsed."""
    answer = _KLUE_CHAR_PATTERN.sub(" ", answer.lower())
    answer = "".join(ch for ch in answer if ch not in _PUNCTUATION)
    return " ".join(answer.split())


def rouge_w(prediction: str, gold: str, beta: float = 1.0) -> float:
    """KLUE's "ROUGE-W": F-beta of the longest common contiguous substring, in characters (0-1).

    An empty gold (an unanswerable question) scores 1 for an empty prediction and 0 otherwise.
    """
    if gold == "":
        return float(prediction == gold)
    match = SequenceMatcher(None, prediction, gold).find_longest_match(0, len(prediction), 0, len(gold)).size
    precision = match / len(prediction) if prediction else 0.0
    recall = match / len(gold)
    if precision + recall == 0.0:
        return 0.0
    return (1 + beta**2) * precision * recall / (beta**2 * precision + recall)


def klue_mrc_example(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """(EM, ROUGE-W) of one question, each the best over its gold answers (0-1)."""
    pred = normalize_klue_mrc(prediction)
    targets = [normalize_klue_mrc(g) for g in golds] or [""]
    return max(float(pred == g) for g in targets), max(rouge_w(pred, g) for g in targets)


def gold_answers(examples: Sequence[MRCExample]) -> dict[str, list[str]]:
    """Question id -> gold answer texts; an unanswerable question has the one empty answer."""
    return {ex["id"]: [a["text"] for a in ex["answers"]] or [""] for ex in examples}


def klue_mrc_scores(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> dict[str, float]:
    """Mean EM and ROUGE-W (0-100) over the questions that have a prediction, as KLUE's baseline averages."""
    pairs = [klue_mrc_example(predictions[qid], answers) for qid, answers in golds.items() if qid in predictions]
    if not pairs:
        return {"exact_match": 0.0, "rouge_w": 0.0, "examples": 0}
    return {
        "exact_match": 100.0 * sum(em for em, _ in pairs) / len(pairs),
        "rouge_w": 100.0 * sum(rw for _, rw in pairs) / len(pairs),
        "examples": len(pairs),
    }


def squad_scores(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> dict[str, float]:
    """Hugging Face SQuAD v1.1 EM / token F1 (0-100); a question without a prediction scores 0."""
    from torchmetrics.functional.text import squad

    if not golds:
        return {"exact_match": 0.0, "f1": 0.0, "examples": 0}
    preds = [{"id": qid, "prediction_text": text} for qid, text in predictions.items() if qid in golds]
    if not preds:  # torchmetrics wants at least one prediction; every question then scores 0
        return {"exact_match": 0.0, "f1": 0.0, "examples": len(golds)}
    target = [{"id": qid, "answers": {"text": list(answers), "answer_start": [0] * len(answers)}}
              for qid, answers in golds.items()]
    scores = squad(preds, target)
    return {"exact_match": float(scores["exact_match"]), "f1": float(scores["f1"]), "examples": len(golds)}


def korquad_scores(golds: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> dict[str, float]:
    """KorQuAD 1.0 EM / character F1 (0-100) of the official script; a question without a prediction scores 0."""
    from models.qa_metrics import evaluate

    data = [{"paragraphs": [{"qas": [{"id": qid, "answers": [{"text": t} for t in answers]}
                                     for qid, answers in golds.items()]}]}]
    return {**evaluate(data, predictions), "examples": len(golds)}


SCORERS: dict[str, Callable[[Mapping[str, Sequence[str]], Mapping[str, str]], dict[str, float]]] = {
    "korquad": korquad_scores,
    "klue_mrc": klue_mrc_scores,
    "squad": squad_scores,
}


def check_metric(metric: str) -> str:
    if metric not in SCORERS:
        raise ValueError(f"metric={metric!r} is unknown: choose one of {', '.join(METRICS)}.")
    return metric


def score_predictions(
    examples: Sequence[MRCExample],
    predictions: Mapping[str, str],
    metric: str = "korquad",
    question_types: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``metric``'s scores of ``predictions`` ({id: text}) on ``examples``, and per question type when known."""
    scorer = SCORERS[check_metric(metric)]
    golds = gold_answers(examples)
    out: dict[str, Any] = {**scorer(golds, predictions), "metric": metric}
    types = {qid: str(t) for qid, t in (question_types or {}).items() if qid in golds and t is not None}
    if types:
        groups: dict[str, dict[str, list[str]]] = {}
        for qid, answers in golds.items():
            groups.setdefault(types.get(qid, "unknown"), {})[qid] = answers
        out["by_question_type"] = {name: scorer(group, predictions) for name, group in sorted(groups.items())}
    return out


def score_against(
    examples: Sequence[MRCExample],
    predictions: Mapping[str, str],
    metric: str,
    question_types: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """:func:`score_predictions` with the gold file's question types (the caller reads them: the file is the
    data layer's business, ``datamodules.mrc_formats.question_types``)."""
    return score_predictions(examples, predictions, metric, question_types or None)
