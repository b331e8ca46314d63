"""Open-domain QA glue: retrieved passages become reader examples, reader spans become one answer.

Two ways to read (``odqa.mode``):

* ``separate``: each (question, passage) pair is its own MRC example; the per-passage n-best lists are merged
  into one answer per question, a span ranked by its score plus ``retriever_weight`` x the passage's score.
* ``concat``: the question's passages, joined in rank order, form one context read once (the boostcamp
  baseline); spans of different passages then compete inside one softmax and the retriever score is unused.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

from datamodules.mrc_formats import MRCExample
from models.qa_postprocess import softmax
from retrievals.corpus import Passage, Query

SEPARATOR = "@@"
MODES = ("separate", "concat")


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


def concatenated_examples(
    queries: Sequence[Query], retrieved: Mapping[str, Sequence[tuple[Passage, float]]], joiner: str = " "
) -> list[MRCExample]:
    """One unlabelled MRC example per question (id: the question's): its passages joined by ``joiner``."""
    examples: list[MRCExample] = []
    for query in queries:
        passages = [passage for passage, _ in retrieved.get(query.id, [])]
        examples.append(
            {
                "id": query.id,
                "title": passages[0].title if passages else "",
                "context": joiner.join(p.text for p in passages),
                "question": query.question,
                "answers": [],
                "document_id": None,
            }
        )
    return examples


def concatenated_answers(
    queries: Sequence[Query],
    retrieved: Mapping[str, Sequence[tuple[Passage, float]]],
    nbest: Mapping[str, Sequence[Mapping[str, Any]]],
    joiner: str = " ",
) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]]]:
    """The reader's answer per question (``""`` when it found no span), each n-best span tagged with the
    passage its start offset falls in (``passage_id``, ``passage_rank``, ``retriever_score``)."""
    predictions: dict[str, str] = {}
    out: dict[str, list[dict[str, Any]]] = {}
    for query in queries:
        hits = retrieved.get(query.id, [])
        starts, cursor = [], 0
        for passage, _ in hits:
            starts.append(cursor)
            cursor += len(passage.text) + len(joiner)
        entries = []
        for entry in nbest.get(query.id, []):
            if entry.get("start_logit") is None:  # a null answer, not a span
                continue
            rank = bisect.bisect_right(starts, entry["offsets"][0]) - 1
            passage, passage_score = hits[rank]
            entries.append({**entry, "span_score": float(entry["score"]), "retriever_score": float(passage_score),
                            "passage_id": passage.id, "passage_rank": rank})
        predictions[query.id] = entries[0]["text"] if entries else ""
        out[query.id] = entries
    return predictions, out
