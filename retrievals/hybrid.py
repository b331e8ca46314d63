"""A sparse and a dense retriever searched side by side and their lists fused (``retriever=hybrid``).

    python main.py task=retrieve retriever=hybrid retriever.dense.model_path=outputs/<run>/retriever \\
        datamodule.validation_file=data/mrc_sample/validation.json

Each side is any :class:`~retrievals.protocol.Retriever` (``conf/retriever/hybrid.yaml``: BM25 under
``sparse:``, the dense encoder under ``dense:``; Hydra builds both from their nested nodes). A search asks
each side for its top ``candidates`` (at least ``k``, at most the corpus) and fuses the two lists with
:func:`retrievals.fusion.fuse_results` (RRF or min-max weighted sum, see there for absent passages and ties).

A saved hybrid index is a directory holding each side's own index (``sparse/``, ``dense/``) and a manifest
(written last) naming the corpus. The fusion settings (``fusion``, ``rrf_k``, ``weight``, ``candidates``)
change the scores, not the index: loading takes them from ``like`` (the configured retriever), so one saved
index serves a whole sweep over them. Each side is checked on load by its own class (corpus, settings, model).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrievals.corpus import Passage, corpus_fingerprint
from retrievals.fusion import check_fusion, fuse_results, warm_up
from retrievals.manifest import (
    check_corpus,
    check_target,
    load_retriever,
    manifest_header,
    read_manifest,
    write_manifest,
)
from retrievals.protocol import Retriever, SearchResult, check_k, check_passages, check_queries

__all__ = ["HybridRetriever"]

_SIDES = ("sparse", "dense")
_TIMINGS = ("tokenize_seconds", "build_seconds")


def _check_side(name: str, retriever: Any) -> None:
    if not isinstance(retriever, Retriever):
        raise TypeError(
            f"retriever.{name} built a {type(retriever).__name__}, not a retriever: give it a config node whose "
            "_target_ names a class with the retrievals.protocol.Retriever members (e.g. the retriever=bm25 "
            "or retriever=dense options)."
        )


class HybridRetriever:
    """Fusion of a ``sparse`` and a ``dense`` retriever's top ``candidates``; see the module docstring.

    ``fusion``: ``rrf`` | ``linear``; ``rrf_k``: RRF's constant; ``weight``: the dense side's share in
    ``linear`` fusion (the sparse side gets ``1 - weight``).
    """

    kind = "hybrid"

    def __init__(
        self,
        sparse: Retriever,
        dense: Retriever,
        fusion: str = "rrf",
        rrf_k: int = 60,
        weight: float = 0.5,
        candidates: int = 100,
        normalization: str = "minmax",
    ) -> None:
        _check_side("sparse", sparse)
        _check_side("dense", dense)
        check_fusion(fusion, rrf_k, weight, normalization)
        self.normalization = normalization
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"retriever.candidates={candidates!r}: must be a positive integer (how deep each side "
                             "searches before fusion; 100 is usual).")
        self.sparse, self.dense = sparse, dense
        self.fusion, self.rrf_k, self.weight, self.candidates = fusion, rrf_k, float(weight), candidates
        self.n_passages = 0
        self.corpus_fingerprint: str | None = None
        self._seconds: dict[str, tuple[float, float]] = {}

    # ------------------------------------------------------------------ indexing and search

    def index(self, passages: Sequence[Passage], *, source: str | None = None) -> HybridRetriever:
        """Index ``passages`` with both sides; returns ``self``."""
        check_passages(passages, source or "the corpus")
        for name in _SIDES:
            start = time.perf_counter()
            getattr(self, name).index(passages, source=source)
            self._seconds[name] = self._side_seconds(name, time.perf_counter() - start)
        self.n_passages = len(passages)
        self.corpus_fingerprint = corpus_fingerprint(passages)
        warm_up(self.fusion, self.normalization)
        return self

    def _side_seconds(self, name: str, wall: float) -> tuple[float, float]:
        """(tokenise, build) seconds of one side: what it reports, else its wall time as building."""
        parts = [getattr(self, name).report().get(key) for key in _TIMINGS]
        if all(isinstance(part, (int, float)) and not isinstance(part, bool) for part in parts):
            return float(parts[0]), float(parts[1])
        return 0.0, wall

    def search(self, queries: Sequence[str], k: int) -> SearchResult:
        """Each side's top ``max(candidates, k)`` (at most the corpus), fused; the top ``k`` of each query."""
        check_queries(queries)
        check_k(k, self.n_passages, indexed=self.n_passages > 0, name=type(self).__name__)
        sparse, dense = self.search_sides(queries, k)
        return self.fuse(sparse, dense, k)

    def search_sides(self, queries: Sequence[str], k: int) -> tuple[SearchResult, SearchResult]:
        """Each side's own top ``max(candidates, k)`` (at most the corpus), before fusion: what
        ``retriever.tune_weight`` re-fuses once per weight without searching again."""
        depth = min(max(self.candidates, k), self.n_passages)
        return self.sparse.search(queries, depth), self.dense.search(queries, depth)

    def fuse(self, sparse: SearchResult, dense: SearchResult, k: int, weight: float | None = None) -> SearchResult:
        """The two sides' lists fused with this retriever's settings (``weight`` instead of its own if given)."""
        return fuse_results(sparse, dense, method=self.fusion, k=k, rrf_k=self.rrf_k,
                            weight=self.weight if weight is None else weight, normalization=self.normalization)

    # ------------------------------------------------------------------ description

    def params(self) -> dict[str, Any]:
        return {
            "fusion": self.fusion, "rrf_k": self.rrf_k, "weight": self.weight, "candidates": self.candidates,
            "normalization": self.normalization,
            **{name: {"retriever": getattr(self, name).kind, **getattr(self, name).params()} for name in _SIDES},
        }

    def report(self) -> dict[str, Any]:
        """Each side's report under ``sparse_`` / ``dense_`` (its timings as ``<side>_index_seconds``);
        ``tokenize_seconds`` / ``build_seconds`` are the two sides' sums after :meth:`index` (a side that
        reports no such parts counts its wall time as building)."""
        out: dict[str, Any] = {}
        for name in _SIDES:
            out.update({f"{name}_{key}": value for key, value in getattr(self, name).report().items()
                        if key not in _TIMINGS})
            if name in self._seconds:
                out[f"{name}_index_seconds"] = round(sum(self._seconds[name]), 4)
        if len(self._seconds) == len(_SIDES):
            out["tokenize_seconds"] = sum(part[0] for part in self._seconds.values())
            out["build_seconds"] = sum(part[1] for part in self._seconds.values())
        return out

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Each side's index into ``directory/sparse`` and ``directory/dense``, then the manifest (last)."""
        if not self.n_passages:
            raise RuntimeError("HybridRetriever.save: nothing indexed yet.")
        out = Path(directory)
        for name in _SIDES:
            getattr(self, name).save(out / name)
        manifest = {
            **manifest_header(self, fingerprint=self.corpus_fingerprint, passages=self.n_passages),
            "sides": {name: name for name in _SIDES},
        }
        return write_manifest(out, manifest)

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        passages: Sequence[Passage] | None = None,
        like: Retriever | None = None,
    ) -> HybridRetriever:
        """The hybrid index in ``directory``; refused (``DataFormatError``) when built from other ``passages``.

        With ``like`` (a configured hybrid retriever) each side loads with its own class and is checked against
        ``like``'s side; the fusion settings come from ``like``. Without it each side loads as its manifest
        says and the fusion settings are the saved ones.
        """
        src = Path(directory)
        manifest = read_manifest(src)
        check_target(src, manifest, cls)
        check_corpus(src, manifest, passages)
        if like is not None and not isinstance(like, HybridRetriever):
            raise TypeError(f"HybridRetriever.load(like=...) takes a HybridRetriever, got {type(like).__name__}.")
        sides: dict[str, Any] = {}
        for name in _SIDES:
            if like is None:
                sides[name] = load_retriever(src / name, passages=passages)
            else:
                side = getattr(like, name)
                sides[name] = type(side).load(src / name, passages=passages, like=side)
        saved = manifest.get("params", {})
        fusion = {key: getattr(like, key) if like is not None else saved.get(key, "minmax")
                  for key in ("fusion", "rrf_k", "weight", "candidates", "normalization")}
        retriever = cls(sides["sparse"], sides["dense"], **fusion)
        retriever.n_passages = int(manifest["corpus"]["passages"])
        retriever.corpus_fingerprint = manifest["corpus"]["fingerprint"]
        warm_up(retriever.fusion, retriever.normalization)
        return retriever
