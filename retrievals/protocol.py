"""What a retriever is to the rest of the framework: the :class:`Retriever` protocol and :class:`SearchResult`.

``task=retrieve`` and ``task=odqa`` build the retriever from ``conf/retriever/<name>.yaml`` with Hydra
(``_target_`` plus constructor arguments; the task keys ``corpus_file``, ``top_k``, ``index_dir``, ... are
left out) and then use only what is declared here::

    retriever = instantiate(cfg.retriever minus the task keys)
    retriever.index(passages, source="corpus.jsonl")          # or: type(retriever).load(index_dir, ...)
    result = retriever.search(["경복궁은 언제 지어졌나?"], k=20)  # SearchResult(ids, scores)
    retriever.save(index_dir)                                  # manifest.json (+ its own files), no pickle

Implementations in this package: :class:`retrievals.sparse.SparseRetriever` (the in-memory term-index engine
under :class:`~retrievals.bm25.BM25Retriever` and :class:`~retrievals.tfidf.TfidfRetriever`),
:class:`retrievals.elasticsearch.ElasticsearchRetriever` (a server), :class:`retrievals.dense.DenseRetriever`
(FAISS), :class:`retrievals.hybrid.HybridRetriever` (two retrievers fused) and
:class:`retrievals.rerank.RerankedRetriever` (any retriever re-scored by a cross-encoder); a class of your own in
your own module works the same way (``docs/extending.md``). No base class is needed: the protocol is structural.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

from core.errors import DataFormatError
from retrievals.corpus import Passage

__all__ = ["Retriever", "SearchResult", "check_k", "check_passages", "check_queries"]


class SearchResult(NamedTuple):
    """Per query (in the order asked), passage ids and their scores, best first.

    A query may get fewer than ``k`` results (``[]`` when it shares nothing with the index); higher scores
    are better; ties keep corpus order where the retriever can tell it.
    """

    ids: list[list[str]]
    scores: list[list[float]]


@runtime_checkable
class Retriever(Protocol):
    """Index passages once, search many queries, save and load the index.

    ``kind`` is the short name written to ``retrieval_metrics.json`` (``"retriever"``) and to the manifest.
    """

    kind: str

    def index(self, passages: Sequence[Passage], *, source: str | None = None) -> Retriever:
        """Build the index of ``passages`` (ids unique; ``source`` names them in errors); returns ``self``."""
        ...

    def search(self, queries: Sequence[str], k: int) -> SearchResult:
        """The top-``k`` passages of each query; ``k`` above the corpus size is a ``ValueError``."""
        ...

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the index to ``directory``: ``manifest.json`` last (``retrievals.manifest.write_manifest``),
        so a directory with a manifest is a complete index; no pickle."""
        ...

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        passages: Sequence[Passage] | None = None,
        like: Retriever | None = None,
    ) -> Retriever:
        """The index saved in ``directory``. Refuse (``core.errors.DataFormatError``, with the fix) one built
        from other ``passages`` (corpus fingerprint) or with other settings than ``like``, a configured,
        unindexed retriever of this class: its :meth:`params` and whatever else decides the index. Options that
        do not change the index (threads, caches, devices) come from ``like``."""
        ...

    def params(self) -> dict[str, Any]:
        """The settings that decide the index and its scores (JSON values): recorded in the manifest, compared
        on load, and reported in ``retrieval_metrics.json``."""
        ...

    def report(self) -> dict[str, Any]:
        """Facts about the last ``index`` / ``load`` for ``retrieval_metrics.json``, e.g. ``{"tokenizer":
        "kiwi", "tokenize_seconds": 1.2, "build_seconds": 0.3}`` (``{}`` when there is nothing to say)."""
        ...


def check_queries(queries: Sequence[str]) -> None:
    """``search`` takes a list: a bare string would be searched character by character."""
    if isinstance(queries, str):
        raise ValueError("search() takes a list of queries; wrap a single query as [query].")


def check_k(k: Any, n_passages: int, *, indexed: bool, name: str) -> None:
    """The checks every ``search`` makes: something is indexed, ``k`` is a positive integer within the corpus."""
    import numpy as np

    if not indexed:
        raise RuntimeError(f"{name}.search: nothing indexed yet; call index(passages) or load().")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if k > n_passages:
        raise ValueError(
            f"k={k} is larger than the corpus ({n_passages} passages): set retriever.top_k (or k) to at most "
            f"{n_passages}, or index a larger corpus."
        )


def check_passages(passages: Sequence[Passage], where: str) -> None:
    """The checks every ``index`` makes: at least one passage, ids unique (results are keyed by them)."""
    if not passages:
        raise ValueError(f"{where}: cannot index an empty corpus; give a corpus with at least one passage.")
    seen: dict[str, int] = {}
    for i, passage in enumerate(passages):
        if passage.id in seen:
            raise DataFormatError(
                where, passage.id, f"duplicate passage id (passages #{seen[passage.id]} and #{i})",
                "give every passage a unique id (retrieval results are keyed by it)",
            )
        seen[passage.id] = i
