"""Retrieval metrics: recall@k, MRR@k (``core/ranking.py``, shared with the trained retrievers' validation)
and a recall@k plot.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from core.ranking import CUTOFFS, first_gold_rank, mrr_at_k, recall_at_k, retrieval_metrics

__all__ = ["CUTOFFS", "first_gold_rank", "mrr_at_k", "plot_recall", "recall_at_k", "retrieval_metrics"]


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
