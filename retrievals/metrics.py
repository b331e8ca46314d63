"""Retrieval metrics: recall@k (a gold passage in the top k), MRR@k, and a recall@k plot.

Questions without known gold are left out; a question whose gold passage is not in the corpus counts
as a miss (so recall is bounded by how much of the gold the corpus holds).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["CUTOFFS", "first_gold_rank", "mrr_at_k", "plot_recall", "recall_at_k", "retrieval_metrics"]

CUTOFFS = (1, 5, 10, 20, 50, 100)


def first_gold_rank(ranked: Sequence[str], gold: set[str]) -> int | None:
    """1-based rank of the first gold passage in ``ranked``, or None."""
    for rank, pid in enumerate(ranked, start=1):
        if pid in gold:
            return rank
    return None


def _ranks(ranked: Mapping[str, Sequence[str]], gold: Mapping[str, set[str]]) -> list[int | None]:
    return [first_gold_rank(ranked.get(qid, ()), ids) for qid, ids in gold.items()]


def recall_at_k(ranked: Mapping[str, Sequence[str]], gold: Mapping[str, set[str]], k: int) -> float:
    """Share of the questions in ``gold`` with a gold passage among their first ``k`` results."""
    ranks = _ranks(ranked, gold)
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def mrr_at_k(ranked: Mapping[str, Sequence[str]], gold: Mapping[str, set[str]], k: int = 100) -> float:
    """Mean reciprocal rank of the first gold passage (0 when it is not in the first ``k``)."""
    ranks = _ranks(ranked, gold)
    return sum(1.0 / r for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def retrieval_metrics(
    ranked: Mapping[str, Sequence[str]],
    gold: Mapping[str, set[str]],
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


def plot_recall(
    metrics: Mapping[str, float], path: str | os.PathLike[str], *, title: str = "recall@k"
) -> Path:
    """Recall against k (log axis) as a PNG, with the Agg backend (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = sorted((int(key.split("@", 1)[1]), float(v)) for key, v in metrics.items() if key.startswith("recall@"))
    if not points:
        raise ValueError("plot_recall: no recall@k values to plot.")
    ks, values = zip(*points, strict=True)
    fig = Figure(figsize=(5.5, 3.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(ks, values, marker="o")
    for k, v in points:
        ax.annotate(f"{v:.3f}", (k, v), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("k (passages retrieved)")
    ax.set_ylabel("recall@k")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
