"""Rank fusion of two retrievers' result lists (``retriever=hybrid``), computed by ranx_.

Two methods (``retriever.fusion``):

* ``rrf``: reciprocal rank fusion, ``score(p) = sum over the lists holding p of 1 / (rrf_k + rank)``, ranks from
  1. A passage absent from a list gets nothing from it (no rank past the end is imputed). The rank is the
  passage's position in the list *as the retriever returned it*: ranx would re-sort each list by score with an
  unstable ``np.argsort`` and so number equal-scored passages in an unspecified order; it is given the
  positions instead (RRF reads ranks only, so the fused scores are ranx's), and a list's ties keep the order
  its retriever chose (corpus order for BM25 / TF-IDF).
* ``linear`` with ``normalization=zscore`` (the hybrid's default): ``(1 - weight) * z(sparse) + weight * z(dense)``,
  each list standardised over the passages it holds (``(s - mean) / max(std, 1e-9)``, population std, ranx's
  ``zmuv``): a score far above its list's others (BM25's confident first passage) keeps its margin, which min-max
  squeezes to 1. A passage absent from a list gets 0 from it: that list's *mean*, neither reward nor penalty.
* ``linear`` with ``normalization=minmax``: ``(1 - weight) * minmax(sparse) + weight * minmax(dense)``, each list min-max normalised over
  the passages it holds (``(s - min) / max(max - min, 1e-9)``: 1 for its best, 0 for its worst). A passage
  absent from a list gets 0 from it, the same as that list's last passage; a list whose scores are all equal
  (one passage, or ties throughout) normalises to 0 everywhere and so adds nothing to the order.

Both lists of a query are the retrievers' top ``candidates``: RRF ranks and min-max ranges are those of the
candidate lists, not of the whole corpus. The fused list is sorted here, not by ranx (whose sort is
unstable on ties): by fused score (descending), then the better of the passage's two original ranks, then its
id; its first ``k`` are returned. A query with no result in either list gets ``[]``.

ranx compiles its numba kernels on first use in each process (seconds; cached on disk afterwards): it is
imported inside :func:`fuse_results`, so ``import retrievals`` stays fast, and :func:`warm_up` (called when a
hybrid index is built or loaded) pays that cost before the first search is timed.

.. _ranx: https://github.com/AmenRa/ranx
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from retrievals.protocol import SearchResult

__all__ = ["FUSION_METHODS", "NORMALIZATIONS", "check_fusion", "fuse_results", "warm_up"]

FUSION_METHODS = ("rrf", "linear")
# retriever.normalization -> ranx's norm: each list's scores before the weighted sum of linear fusion
NORMALIZATIONS = {"zscore": "zmuv", "minmax": "min-max"}
_ABSENT = "\x01kornlp-fusion-empty\x01"  # stands in for an empty list: ranx refuses a query without results


def check_fusion(method: Any, rrf_k: Any, weight: Any, normalization: Any = "minmax") -> None:
    """The fusion settings' checks, with the config key to fix in each message."""
    if method not in FUSION_METHODS:
        raise ValueError(f"retriever.fusion={method!r} is unknown: choose one of {', '.join(FUSION_METHODS)}.")
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, (int, float)) or not rrf_k > 0 or not math.isfinite(rrf_k):
        raise ValueError(f"retriever.rrf_k={rrf_k!r}: must be a number above 0 (60 is the usual choice).")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise ValueError(f"retriever.weight={weight!r}: must be within [0, 1] (the dense side's share in "
                         "linear fusion; the sparse side gets 1 - weight).")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"retriever.normalization={normalization!r} is unknown: choose one of "
                         f"{', '.join(NORMALIZATIONS)}.")


def _run_dict(result: SearchResult, *, ranks: bool, sentinel: str) -> dict[str, dict[str, float]]:
    """ranx's ``{query: {passage: score}}``; ``ranks``: the positions as scores (n, n-1, ..., 1)."""
    out: dict[str, dict[str, float]] = {}
    for qi, (ids, scores) in enumerate(zip(result.ids, result.scores, strict=True)):
        if not ids:
            out[str(qi)] = {sentinel: 0.0}
        elif ranks:
            out[str(qi)] = {pid: float(len(ids) - r) for r, pid in enumerate(ids)}
        else:
            out[str(qi)] = {pid: float(s) for pid, s in zip(ids, scores, strict=True)}
    return out


def fuse_results(
    sparse: SearchResult, dense: SearchResult, *, method: str, k: int, rrf_k: float = 60, weight: float = 0.5,
    normalization: str = "minmax",
) -> SearchResult:
    """Fuse the two lists of each query (see the module docstring) and keep the top ``k``.

    ``weight`` is the dense side's share in ``linear`` fusion (the sparse side gets ``1 - weight``);
    ``rrf_k`` is RRF's constant.
    """
    check_fusion(method, rrf_k, weight, normalization)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if len(sparse.ids) != len(dense.ids):
        raise ValueError(f"fuse_results: {len(sparse.ids)} sparse result lists but {len(dense.ids)} dense ones.")
    n = len(sparse.ids)
    if n == 0:
        return SearchResult([], [])
    if not any(sparse.ids) and not any(dense.ids):
        return SearchResult([[] for _ in range(n)], [[] for _ in range(n)])
    sentinel = _ABSENT
    while any(sentinel in ids for result in (sparse, dense) for ids in result.ids):
        sentinel += "\x01"

    from ranx import Run, fuse  # numba kernels: compiled on first use (see the module docstring)

    ranked = method == "rrf"
    with warnings.catch_warnings():  # numba's "unsafe cast from uint64 to int64" on ranx's parallel loops
        warnings.filterwarnings("ignore", message=".*unsafe cast")
        runs = [Run(_run_dict(result, ranks=ranked, sentinel=sentinel)) for result in (sparse, dense)]
        if ranked:  # the scores are positions already: no normalisation
            fused = fuse(runs, norm=None, method="rrf", params={"k": rrf_k})
        else:
            fused = fuse(runs, norm=NORMALIZATIONS[normalization], method="wsum",
                         params={"weights": [1.0 - weight, float(weight)]})
    table = fused.to_dict()
    ids_out: list[list[str]] = []
    scores_out: list[list[float]] = []
    for qi in range(n):
        rank: dict[str, int] = {}
        for ids in (sparse.ids[qi], dense.ids[qi]):
            for r, pid in enumerate(ids):
                rank[pid] = min(r, rank.get(pid, r))
        scored = [(pid, float(score)) for pid, score in table.get(str(qi), {}).items() if pid != sentinel]
        scored.sort(key=lambda item: (-item[1], rank[item[0]], item[0]))
        ids_out.append([pid for pid, _ in scored[:k]])
        scores_out.append([score for _, score in scored[:k]])
    return SearchResult(ids_out, scores_out)


def warm_up(method: str, normalization: str = "minmax") -> None:
    """Fuse two one-query lists once, so ranx's kernels for ``method`` are compiled (or loaded) now."""
    probe = SearchResult([["a", "b"]], [[2.0, 1.0]])
    fuse_results(probe, SearchResult([["b"]], [[1.0]]), method=method, k=1, normalization=normalization)
