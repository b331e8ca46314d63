"""Ranking metrics shared by retrieval (``retrievals/metrics.py``) and the trained retrievers' validation
(``models/biencoder.py``, ``models/cross_encoder.py``): recall@k (a gold passage in the top k) and MRR@k.

Questions without known gold are left out; a question whose gold passage is not in the corpus counts
as a miss (so recall is bounded by how much of the gold the corpus holds). Ids are any hashable values
(passage ids, or passage indices).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CUTOFFS", "RankingEvaluation", "first_gold_rank", "index_rankings", "mrr_at_k", "recall_at_k",
           "retrieval_metrics"]

CUTOFFS = (1, 5, 10, 20, 50, 100)


def first_gold_rank(ranked: Sequence[Hashable], gold: set[Hashable]) -> int | None:
    """1-based rank of the first gold passage in ``ranked``, or None."""
    for rank, pid in enumerate(ranked, start=1):
        if pid in gold:
            return rank
    return None


def _ranks(ranked: Mapping[Hashable, Sequence[Hashable]], gold: Mapping[Hashable, set[Hashable]]) -> list[int | None]:
    return [first_gold_rank(ranked.get(qid, ()), ids) for qid, ids in gold.items()]


def recall_at_k(ranked: Mapping[Hashable, Sequence[Hashable]], gold: Mapping[Hashable, set[Hashable]], k: int) -> float:
    """Share of the questions in ``gold`` with a gold passage among their first ``k`` results."""
    ranks = _ranks(ranked, gold)
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def mrr_at_k(ranked: Mapping[Hashable, Sequence[Hashable]], gold: Mapping[Hashable, set[Hashable]], k: int = 100) -> float:
    """Mean reciprocal rank of the first gold passage (0 when it is not in the first ``k``)."""
    ranks = _ranks(ranked, gold)
    return sum(1.0 / r for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def retrieval_metrics(
    ranked: Mapping[Hashable, Sequence[Hashable]],
    gold: Mapping[Hashable, set[Hashable]],
    cutoffs: Sequence[int] = CUTOFFS,
    mrr_k: int = 100,
) -> dict[str, float | int]:
    """``recall@k`` for each cutoff, ``mrr@<mrr_k>``, and how many questions were scored."""
    ranks = _ranks(ranked, gold)
    n = len(ranks)
    out: dict[str, float | int] = {}
    for k in cutoffs:
        out[f"recall@{k}"] = sum(1 for r in ranks if r is not None and r <= k) / n if n else 0.0
    out[f"mrr@{mrr_k}"] = sum(1.0 / r for r in ranks if r is not None and r <= mrr_k) / n if n else 0.0
    out["questions_with_gold"] = n
    out["gold_not_in_corpus"] = sum(1 for ids in gold.values() if not ids)
    return out


@dataclass
class RankingEvaluation:
    """What a trained retriever or reranker is validated on (built by the task layer, held by the datamodule).

    ``passages``: the corpus searched (``{"id", "title", "text"}``); per validation question (in the datamodule's
    order): ``question_ids``, ``gold`` (indices of its gold passages) and, for a reranker, ``candidates`` (the
    indices of a first-stage retriever's top passages, best first) that it re-orders.
    """

    question_ids: list[str]
    passages: list[dict[str, Any]]
    gold: list[list[int]]
    candidates: list[list[int]] | None = None
    retriever: str | None = None


def index_rankings(ranked: Sequence[Sequence[int]], gold: Sequence[Sequence[int]], cutoffs: Sequence[int],
                   mrr_k: int) -> dict[str, float]:
    """:func:`retrieval_metrics` of rankings given as passage indices, question by question (without the counts)."""
    scores = retrieval_metrics(dict(enumerate(ranked)), {q: set(g) for q, g in enumerate(gold)}, cutoffs, mrr_k)
    return {k: float(v) for k, v in scores.items() if "@" in k}
