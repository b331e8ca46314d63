"""Open-domain QA glue: retrieved passages become reader examples, reader spans become one answer.

The reader sees each (question, passage) pair as its own MRC example; this module only names those
examples and merges the per-passage n-best lists back into one answer per question.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from datamodules.mrc_formats import MRCExample
from models.qa_postprocess import softmax
from retrievals.corpus import Passage, Query

SEPARATOR = "@@"


def passage_examples(
    queries: Sequence[Query], retrieved: Mapping[str, Sequence[tuple[Passage, float]]]
) -> list[MRCExample]:
    """One unlabelled MRC example per (question, retrieved passage), id ``<question id>@@<rank>``."""
    examples: list[MRCExample] = []
    for query in queries:
        for rank, (passage, _score) in enumerate(retrieved.get(query.id, [])):
            examples.append(
                {
                    "id": f"{query.id}{SEPARATOR}{rank}",
                    "title": passage.title,
                    "context": passage.text,
                    "question": query.question,
                    "answers": [],
                    "document_id": passage.document_id,
                }
            )
    return examples


def choose_answers(
    queries: Sequence[Query],
    retrieved: Mapping[str, Sequence[tuple[Passage, float]]],
    passage_nbest: Mapping[str, Sequence[Mapping[str, Any]]],
    retriever_weight: float = 0.0,
    n_best_size: int = 20,
) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]]]:
    """Rank every span of every passage by ``span score + retriever_weight * retriever score``.

    The span score is the reader's start + end logit (comparable across passages, as in DrQA-style
    readers); the retriever score is what the retriever returned for the passage (BM25 or cosine).
    Questions whose passages yield no span get the empty answer.
    """
    predictions: dict[str, str] = {}
    nbest: dict[str, list[dict[str, Any]]] = {}
    for query in queries:
        candidates: list[dict[str, Any]] = []
        for rank, (passage, passage_score) in enumerate(retrieved.get(query.id, [])):
            for entry in passage_nbest.get(f"{query.id}{SEPARATOR}{rank}", []):
                if entry.get("start_logit") is None:  # a null answer, not a span
                    continue
                candidates.append(
                    {
                        "text": entry["text"],
                        "score": float(entry["score"]) + retriever_weight * float(passage_score),
                        "span_score": float(entry["score"]),
                        "retriever_score": float(passage_score),
                        "passage_id": passage.id,
                        "passage_rank": rank,
                        "offsets": entry["offsets"],
                    }
                )
        candidates.sort(key=lambda c: (-c["score"], c["passage_rank"], c["offsets"][0]))
        kept = candidates[:n_best_size]
        if kept:
            for entry, probability in zip(kept, softmax([c["score"] for c in kept]), strict=True):
                entry["probability"] = probability
        predictions[query.id] = kept[0]["text"] if kept else ""
        nbest[query.id] = kept
    return predictions, nbest
