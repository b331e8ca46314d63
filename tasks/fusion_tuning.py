"""``retriever.tune_weight``: choose the hybrid's linear-fusion weight on questions with gold passages.

How much to trust the dense side depends on the encoder and the corpus: on the embedded data a dense share of
0.3 beats BM25 at every k, while on KLUE-NLI premises (an encoder trained on 2,000 questions) any share above
0.05 costs recall@1 (docs/dense.md). So the share is chosen on data: each side searches once, the lists are
fused once per weight of ``retriever.weight_grid``, and among the weights that are at least as good as weight 0
(BM25's own order) at each of recall@1, recall@5 and recall@20, the one with the best mean of the three wins (ties:
the smaller weight, the one closer to BM25 alone). So on the questions it is chosen on, the tuned hybrid is never
below BM25 at any of those k, and a dense side that only trades one cutoff for another is left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from retrievals.hybrid import HybridRetriever
from retrievals.metrics import retrieval_metrics
from retrievals.protocol import Retriever

__all__ = ["OBJECTIVE", "tune_weight"]

OBJECTIVE = ("recall@1", "recall@5", "recall@20")


def tune_weight(
    retriever: Retriever,
    questions: Sequence[str],
    question_ids: Sequence[str],
    gold: Mapping[str, set[str]],
    grid: Sequence[float],
) -> tuple[float, list[dict[str, Any]]]:
    """The best weight of ``grid`` for ``retriever`` (a :class:`HybridRetriever` with ``fusion=linear``) on
    ``questions`` (``gold``: question id -> gold passage ids), and the table of every weight's scores."""
    if not isinstance(retriever, HybridRetriever):
        raise ValueError(f"retriever.tune_weight chooses the fusion weight of retriever=hybrid, not of "
                         f"{retriever.kind}.")
    if retriever.fusion != "linear":
        raise ValueError("retriever.tune_weight tunes the linear fusion's weight: set retriever.fusion=linear "
                         "(RRF has no weight).")
    if not grid or any(not 0 <= float(w) <= 1 for w in grid):
        raise ValueError(f"retriever.weight_grid={list(grid)}: give weights within [0, 1].")
    if not gold:
        raise ValueError("retriever.tune_weight needs questions with gold passages (their context or document_id).")
    depth = max(int(k.split("@")[1]) for k in OBJECTIVE)
    sparse, dense = retriever.search_sides(questions, depth)
    table: list[dict[str, Any]] = []
    for weight in sorted({float(w) for w in grid}):
        fused = retriever.fuse(sparse, dense, depth, weight=weight)
        ranked = dict(zip(question_ids, fused.ids, strict=True))
        scores = retrieval_metrics(ranked, gold, [int(k.split("@")[1]) for k in OBJECTIVE], mrr_k=10)
        objective = sum(scores[k] for k in OBJECTIVE) / len(OBJECTIVE)
        table.append({"weight": weight, "objective": objective, **{k: scores[k] for k in OBJECTIVE}})
    alone = next((row for row in table if row["weight"] == 0.0), None)
    # a dense share is eligible only where it is at least as good as BM25 alone at every cutoff on these questions
    eligible = [row for row in table
                if alone is None or all(row[k] >= alone[k] for k in OBJECTIVE)] or table
    for row in table:
        row["eligible"] = row in eligible
    best = max(eligible, key=lambda row: (row["objective"], -row["weight"]))
    return float(best["weight"]), table
