"""How ``task=odqa`` ranks the spans of a question's retrieved passages, and how it chooses the weights.

A span's final score combines three things the run knows (``odqa.*`` in ``conf/config.yaml``)::

    score = span score                                   reader: start + end logit
            - null_weight      * null score              reader: no-answer (CLS) logit of the span's window
            + retriever_weight * passage prior           retriever: its score for the passage

A reader trained with negatives (``datamodule.negative_passages``) learns a high null score on passages that do
not answer the question, so ``span - null`` is the SQuAD-2-style margin by which the passage holds an answer;
a shared-normalisation reader's span scores compare across passages as they are. The passage prior is the
retriever's score relative to the question's best passage, ``(s - s_top) / |s_top|`` (0 for the top passage,
negative below it; the same scale for BM25 and cosine scores), or the raw score (``retriever_score: raw``).

``odqa.tune_weights=true`` searches :data:`GRID` on questions with gold answers (by EM, then F1) by re-ranking
the n-best lists the reader already wrote: no second reading.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from models.mrc_metrics import score_predictions
from models.qa_postprocess import softmax
from retrievals.corpus import Passage, Query

__all__ = ["GRID", "PRIORS", "SEPARATOR", "SpanWeights", "choose_answers", "passage_priors", "tune_weights"]

SEPARATOR = "@@"  # a passage example's id: <question id>@@<rank>
PRIORS = ("relative", "raw")
# The weights odqa.tune_weights=true tries (every pair).
GRID = {
    "null_weight": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0),
    "retriever_weight": (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0),
}


@dataclass(frozen=True)
class SpanWeights:
    """The weights of a span's final score (the module docstring says how they combine)."""

    retriever_weight: float = 0.0
    null_weight: float = 0.0
    retriever_score: str = "relative"

    def __post_init__(self) -> None:
        if self.retriever_score not in PRIORS:
            raise ValueError(f"odqa.retriever_score={self.retriever_score!r}: choose one of {', '.join(PRIORS)}.")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def passage_priors(scores: Sequence[float], how: str = "relative") -> list[float]:
    """The retriever's scores of one question's passages as priors (see the module docstring)."""
    if how == "raw" or not scores:
        return [float(s) for s in scores]
    top = max(float(s) for s in scores)
    scale = abs(top) or 1.0
    return [(float(s) - top) / scale for s in scores]


def _candidates(
    query: Query,
    hits: Sequence[tuple[Passage, float]],
    passage_nbest: Mapping[str, Sequence[Mapping[str, Any]]],
    weights: SpanWeights,
) -> list[dict[str, Any]]:
    priors = passage_priors([score for _, score in hits], weights.retriever_score)
    candidates: list[dict[str, Any]] = []
    for rank, ((passage, passage_score), prior) in enumerate(zip(hits, priors, strict=True)):
        for entry in passage_nbest.get(f"{query.id}{SEPARATOR}{rank}", []):
            if entry.get("start_logit") is None:  # a null answer, not a span
                continue
            span, null = float(entry["score"]), float(entry.get("null_score", 0.0))
            candidates.append(
                {
                    "text": entry["text"],
                    "score": span - weights.null_weight * null + weights.retriever_weight * prior,
                    "span_score": span,
                    "null_score": null,
                    "retriever_score": float(passage_score),
                    "passage_id": passage.id,
                    "passage_rank": rank,
                    "offsets": entry["offsets"],
                }
            )
    candidates.sort(key=lambda c: (-c["score"], c["passage_rank"], c["offsets"][0]))
    return candidates


def choose_answers(
    queries: Sequence[Query],
    retrieved: Mapping[str, Sequence[tuple[Passage, float]]],
    passage_nbest: Mapping[str, Sequence[Mapping[str, Any]]],
    weights: SpanWeights = SpanWeights(),
    n_best_size: int = 20,
) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]]]:
    """Rank every span of every passage of a question by its final score; the best one is the answer.

    Questions whose passages yield no span get the empty answer. The n-best list keeps each span's parts.
    """
    predictions: dict[str, str] = {}
    nbest: dict[str, list[dict[str, Any]]] = {}
    for query in queries:
        kept = _candidates(query, retrieved.get(query.id, []), passage_nbest, weights)[:n_best_size]
        if kept:
            for entry, probability in zip(kept, softmax([c["score"] for c in kept]), strict=True):
                entry["probability"] = probability
        predictions[query.id] = kept[0]["text"] if kept else ""
        nbest[query.id] = kept
    return predictions, nbest


def tune_weights(
    queries: Sequence[Query],
    retrieved: Mapping[str, Sequence[tuple[Passage, float]]],
    passage_nbest: Mapping[str, Sequence[Mapping[str, Any]]],
    gold: Sequence[Mapping[str, Any]],
    metric: str,
    retriever_score: str = "relative",
) -> tuple[SpanWeights, list[dict[str, Any]]]:
    """The :data:`GRID` point with the best EM (then F1, then the smaller weights) on ``gold``'s questions, and
    the score of every point."""
    table: list[dict[str, Any]] = []
    for null_weight, retriever_weight in itertools.product(GRID["null_weight"], GRID["retriever_weight"]):
        weights = SpanWeights(retriever_weight, null_weight, retriever_score)
        predictions = {q.id: best[0]["text"] if (best := _candidates(q, retrieved.get(q.id, []), passage_nbest,
                                                                     weights)[:1]) else "" for q in queries}
        scores = score_predictions(gold, predictions, metric)
        table.append({"null_weight": null_weight, "retriever_weight": retriever_weight,
                      "exact_match": scores["exact_match"], "f1": scores.get("f1", scores.get("rouge_w", 0.0))})
    best = max(table, key=lambda r: (r["exact_match"], r["f1"], -r["null_weight"], -r["retriever_weight"]))
    return SpanWeights(best["retriever_weight"], best["null_weight"], retriever_score), table
