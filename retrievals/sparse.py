"""The sparse engine: one implementation of the :class:`~retrievals.protocol.Retriever` protocol for BM25 and
TF-IDF (in memory, over a Korean tokenisation, on one term index).

A retriever is built once and then queried many times::

    retriever = BM25Retriever(tokenizer="kiwi").index(passages)
    ids, scores = retriever.search(["경복궁은 언제 지어졌나?"], k=20)
    retriever.save("indexes/bm25")
    retriever = load_retriever("indexes/bm25", passages=passages)   # checks corpus and tokenizer

An index directory holds ``manifest.json`` (``retrievals/manifest.py``: the class, its parameters, tokenizer
config and fingerprint, corpus fingerprint, array names), ``passage_ids.json``, ``vocab.json`` and one
``index.<name>.npy`` per array (``retrievals/index_files.py``): no pickle. ``mmap=True`` opens those files
memory-mapped and, for BM25's fast mode, builds through files too (``retrievals/postings.py``), so an index
larger than RAM builds and serves.

Queries are tokenised in chunks, each one chunk ahead of the scoring in a worker thread: Kiwi's analysis and
the numba kernel both release the GIL, so on two cores the tokeniser (now most of a query's time) and the
scoring run side by side.
Besides the protocol, the engine takes tokens made elsewhere (:meth:`SparseRetriever.index_tokens`,
:meth:`~SparseRetriever.search_tokens`: the benchmarks feed every library the same tokens) and scores one
tokenised query against every passage (:meth:`~SparseRetriever.get_scores`: parity checks, difficulty scores).
"""

from __future__ import annotations

import json
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from core.errors import DataFormatError
from core.files import write_text_atomic
from retrievals.corpus import Passage, corpus_fingerprint
from retrievals.index_files import load_arrays, save_arrays, spill_directory
from retrievals.manifest import (
    REBUILD_FIX,
    check_corpus,
    check_params,
    check_setting,
    check_target,
    manifest_header,
    read_manifest,
    resolve_target,
    write_manifest,
)
from retrievals.protocol import SearchResult, check_k, check_passages, check_queries
from retrievals.query_terms import term_counts, warn_empty_queries
from retrievals.term_index import check_dtype, numba_kernel, top_k
from retrievals.token_cache import PassageTexts, TokenizedCorpus, tokenize_ahead, tokenize_corpus
from retrievals.tokenizers import Tokenizer, build_tokenizer, check_index_tokenizer

__all__ = ["SparseRetriever"]

log = logging.getLogger(__name__)

_SCORE_CHUNK = 64  # queries scored at once by numpy: bounds the dense score buffers to 64 x corpus size
_KERNEL_CHUNK = 4096  # queries per numba call (one score buffer; results: (n, k) arrays, at most ~4M entries)
_QUERY_CHUNK = 256  # queries tokenised at once, one chunk ahead of the scoring

# Per query: (distinct known term ids, their counts)
QueryTerms = list[tuple[np.ndarray, np.ndarray]]


class SparseRetriever(ABC):
    """The sparse engine: tokenise the passages, keep per-term weights in a :class:`TermIndex` (in RAM, or
    memory-mapped with ``mmap``), score a batch of queries with numpy or the numba kernel, save / load JSON +
    ``.npy``.

    Implements the :class:`retrievals.protocol.Retriever` protocol; :class:`~retrievals.bm25.BM25Retriever` and
    :class:`~retrievals.tfidf.TfidfRetriever` fill in the weights (``_build``, ``_score``, ``_arrays``,
    ``_restore``) and their ``params()``.
    """

    kind: ClassVar[str]

    def __init__(
        self,
        tokenizer: str | Mapping[str, Any] | Tokenizer | None = None,
        *,
        index_title: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        engine: str = "auto",
        dtype: str = "float64",
        mmap: bool = False,
    ) -> None:
        self.tokenizer = build_tokenizer(tokenizer)
        self.engine = engine
        # build through files and open saved indexes memory-mapped (not a parameter: the index is the same)
        self.mmap = bool(mmap)
        self.dtype = check_dtype(dtype)
        self._kernel = numba_kernel(engine)
        self.index_title = bool(index_title)
        self.cache_dir = str(cache_dir) if cache_dir else None
        self.passage_ids: list[str] = []
        self._pid_array: np.ndarray | None = None  # passage_ids as an array, for fancy indexing by rank
        self.vocab: dict[str, int] = {}
        self.corpus_fingerprint: str | None = None
        self.index_seconds: float | None = None
        self.tokenize_seconds: float | None = None

    # ------------------------------------------------------------------ subclass hooks

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The scoring parameters (JSON), stored in the manifest and compared on load."""

    @abstractmethod
    def _build(self, corpus: TokenizedCorpus) -> None:
        """Build the index from the tokenised corpus (``self.vocab`` maps its tokens to its term ids)."""

    @abstractmethod
    def _score(self, terms: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Dense scores over all passages for one query (distinct known term ids and their counts)."""

    def _score_batch(self, queries: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Dense scores of several queries (a retriever may batch them, e.g. TF-IDF's transform)."""
        return [self._score(terms, counts) for terms, counts in queries]

    def _topk_batch(
        self, queries: Sequence[tuple[np.ndarray, np.ndarray]], k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` passage indices and scores (``(n, k)`` arrays) of several queries; the numba engine
        overrides this per retriever."""
        out_i = np.empty((len(queries), k), dtype=np.int64)
        out_s = np.empty((len(queries), k), dtype=np.float64)
        for row, scores in enumerate(self._score_batch(queries)):
            best = top_k(scores, k)
            out_i[row] = best
            out_s[row] = scores[best]
        return out_i, out_s

    def _warm_up(self) -> None:
        """Compile (or load the cached) numba kernel now, so query timings do not include it."""
        if self._kernel is not None and self.is_indexed:
            probe = [(np.zeros(1, np.int64), np.ones(1))] if self.vocab else []
            if probe:
                self._topk_batch(probe, 1)

    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]:
        """What :meth:`save` writes (one ``index.<name>.npy`` each)."""

    @abstractmethod
    def _restore(self, arrays: Mapping[str, np.ndarray], directory: Path) -> None:
        """Rebuild the index from the saved arrays (memory-mapped with ``mmap``) and ``self.vocab`` /
        ``self.passage_ids``."""

    # ------------------------------------------------------------------ indexing

    @property
    def is_indexed(self) -> bool:
        return bool(self.passage_ids)

    def passage_text(self, passage: Passage) -> str:
        return f"{passage.title}\n{passage.text}" if self.index_title and passage.title else passage.text

    def spill_dir(self) -> Path | None:
        """Where a ``mmap`` build writes its chunks and arrays (a fresh folder, removed with this retriever)."""
        return spill_directory(self, self.cache_dir) if self.mmap else None

    def index(self, passages: Sequence[Passage], *, source: str | None = None) -> SparseRetriever:
        """Tokenise (or reuse the cached tokens of) ``passages`` and build the index; returns ``self``."""
        where = source or "the corpus"
        check_passages(passages, where)
        texts = PassageTexts(passages, self.passage_text)
        fingerprint = corpus_fingerprint(passages)
        start = time.perf_counter()
        self.tokenizer.fit(texts, self.cache_dir)
        tokenized = tokenize_corpus(
            self.tokenizer,
            texts,
            corpus_key=f"{fingerprint}:title={self.index_title}",
            cache_dir=self.cache_dir,
        )
        self.tokenize_seconds = time.perf_counter() - start
        return self._index_tokenized(passages, tokenized, where, fingerprint)

    def index_tokens(
        self,
        passages: Sequence[Passage],
        tokens: Sequence[Sequence[str]] | TokenizedCorpus,
        *,
        source: str | None = None,
    ) -> SparseRetriever:
        """Build the index from tokens made elsewhere (one list per passage), bypassing ``self.tokenizer``.

        The benchmarks feed every library the same tokens this way; queries must then be tokenised the
        same way and searched with :meth:`search_tokens`.
        """
        where = source or "the corpus"
        check_passages(passages, where)
        tokenized = tokens if isinstance(tokens, TokenizedCorpus) else TokenizedCorpus.from_lists(tokens)
        if len(tokenized) != len(passages):
            raise ValueError(f"{where}: {len(tokenized)} token lists for {len(passages)} passages.")
        self.tokenize_seconds = 0.0
        return self._index_tokenized(passages, tokenized, where, corpus_fingerprint(passages))

    def _index_tokenized(
        self, passages: Sequence[Passage], tokenized: TokenizedCorpus, where: str, fingerprint: str
    ) -> SparseRetriever:
        empty = np.flatnonzero(tokenized.lengths == 0)
        if empty.size == len(passages):
            raise ValueError(
                f"{where}: no passage has any token under retriever.tokenizer={self.tokenizer.describe()}; "
                "check the corpus text and pick a tokenizer that fits its language (e.g. char_ngram)."
            )
        if empty.size:
            examples = [passages[i].id for i in empty[:3].tolist()]
            log.warning(
                "%s: %d of %d passages have no tokens under tokenizer %s (e.g. %s); they score 0 for every "
                "query and are only returned to fill k",
                where,
                empty.size,
                len(passages),
                self.tokenizer.name,
                examples,
            )
        self.tokenizer.prepare()
        start = time.perf_counter()
        self.passage_ids = [p.id for p in passages]
        self._pid_array = None
        self.vocab = {token: i for i, token in enumerate(tokenized.vocab)}
        self.corpus_fingerprint = fingerprint
        self._build(tokenized)
        self.index_seconds = time.perf_counter() - start
        self._warm_up()
        log.info(
            "Indexed %d passages (%d terms) with %s in %.2fs (+%.2fs tokenising)",
            len(passages),
            len(self.vocab),
            self.kind,
            self.index_seconds,
            self.tokenize_seconds,
        )
        return self

    # ------------------------------------------------------------------ searching

    def _check_k(self, k: int) -> None:
        check_k(k, len(self.passage_ids), indexed=self.is_indexed, name=type(self).__name__)

    def query_terms(self, token_lists: Sequence[Sequence[str]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, the distinct known term ids and their counts (unknown tokens score 0 and are dropped)."""
        return term_counts(self.vocab, token_lists)

    def search(self, queries: Sequence[str], k: int = 20) -> SearchResult:
        """Top-``k`` passages for each query, best first (ties in corpus order)."""
        check_queries(queries)
        self._check_k(k)
        queries = list(queries)
        chunks = tokenize_ahead(self.tokenizer, queries, _QUERY_CHUNK, self._terms_of)
        return self._search_terms(chunks, len(queries), k, queries)

    def _terms_of(self, token_lists: list[list[str]]) -> tuple[QueryTerms, list[bool]]:
        return self.query_terms(token_lists), [not tokens for tokens in token_lists]

    def search_tokens(
        self, token_lists: Sequence[Sequence[str]], k: int, *, queries: Sequence[str] | None = None
    ) -> SearchResult:
        """:meth:`search` on already tokenised queries (the benchmarks feed every library the same tokens)."""
        self._check_k(k)
        return self._search_terms([self._terms_of(token_lists)], len(token_lists), k, queries)

    def _search_terms(
        self, chunks: Iterable[tuple[QueryTerms, list[bool]]], n: int, k: int, queries: Sequence[str] | None
    ) -> SearchResult:
        """Score chunks of tokenised queries (as they arrive) and collect each query's top ``k``."""
        pids = self._pid_array
        if pids is None or pids.shape[0] != len(self.passage_ids):
            pids = self._pid_array = np.array(self.passage_ids, dtype=object)
        ids_out: list[list[str]] = [[] for _ in range(n)]
        scores_out: list[list[float]] = [[] for _ in range(n)]
        no_tokens: list[int] = []
        unknown: list[int] = []
        batch = (
            _SCORE_CHUNK if self._kernel is None else max(_SCORE_CHUNK, min(_KERNEL_CHUNK, (1 << 22) // k))
        )
        offset = 0
        for terms_all, empty in chunks:
            live = [qi for qi, (terms, _) in enumerate(terms_all) if terms.size]
            for begin in range(0, len(live), batch):
                part = live[begin : begin + batch]
                best, scores = self._topk_batch([terms_all[qi] for qi in part], k)
                for qi, ids, values in zip(part, pids[best].tolist(), scores.tolist(), strict=True):
                    ids_out[offset + qi] = ids
                    scores_out[offset + qi] = values
            if len(live) < len(terms_all):
                dead = [qi for qi, (terms, _) in enumerate(terms_all) if not terms.size]
                no_tokens += [offset + qi for qi in dead if empty[qi]]
                unknown += [offset + qi for qi in dead if not empty[qi]]
            offset += len(terms_all)
        warn_empty_queries(no_tokens, unknown, queries, n, self.tokenizer.name)
        return SearchResult(ids_out, scores_out)

    def get_scores(self, query_tokens: Sequence[str]) -> np.ndarray:
        """Scores of every passage (corpus order) for one tokenised query, e.g. for parity checks."""
        if not self.is_indexed:
            raise RuntimeError(f"{type(self).__name__}: nothing indexed yet.")
        terms, counts = self.query_terms([query_tokens])[0]
        if terms.size == 0:
            return self._score_empty()
        return self._score(terms, counts)

    def _score_empty(self) -> np.ndarray:
        return np.zeros(len(self.passage_ids))

    # ------------------------------------------------------------------ persistence

    def report(self) -> dict[str, Any]:
        """The tokenizer, the vocabulary size, and the seconds the last :meth:`index` spent tokenising and
        building."""
        return {
            "tokenizer": self.tokenizer.name,
            "vocab_size": len(self.vocab),
            "tokenize_seconds": self.tokenize_seconds,
            "build_seconds": self.index_seconds,
        }

    def manifest(self, arrays: Sequence[str] = ()) -> dict[str, Any]:
        return {
            **manifest_header(self, fingerprint=self.corpus_fingerprint, passages=len(self.passage_ids)),
            "index_title": self.index_title,
            "tokenizer": {
                "config": self.tokenizer.config,
                "fingerprint": self.tokenizer.fingerprint(),
                "versions": self.tokenizer.versions(),
            },
            "vocab_size": len(self.vocab),
            "arrays": list(arrays),
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the index to ``directory`` (created; files replaced atomically, the manifest last)."""
        if not self.is_indexed:
            raise RuntimeError(f"{type(self).__name__}.save: nothing indexed yet.")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").unlink(missing_ok=True)  # an interrupted save must not look complete
        write_text_atomic(out / "passage_ids.json", json.dumps(self.passage_ids, ensure_ascii=False))
        vocab = [""] * len(self.vocab)
        for token, i in self.vocab.items():
            vocab[i] = token
        write_text_atomic(out / "vocab.json", json.dumps(vocab, ensure_ascii=False))
        names = save_arrays(out, self._arrays())
        (out / "index.npz").unlink(missing_ok=True)  # a format-2 index saved here before
        for name, text in self.tokenizer.state().items():
            write_text_atomic(out / name, text)
        # The manifest goes last: a directory without one is an interrupted save, never a valid index.
        return write_manifest(out, self.manifest(names))

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        passages: Sequence[Passage] | None = None,
        like: SparseRetriever | None = None,
        tokenizer: str | Mapping[str, Any] | Tokenizer | None = None,
        params: Mapping[str, Any] | None = None,
        index_title: bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        engine: str = "auto",
        mmap: bool = False,
    ) -> SparseRetriever:
        """Load an index; refuse one built from other ``passages``, or with another tokenizer, ``params`` or
        ``index_title`` than asked (each defaults to ``like``'s, which also gives ``cache_dir``, ``engine`` and
        ``mmap``: the arrays memory-mapped rather than read)."""
        src = Path(directory)
        manifest = read_manifest(src)
        target = resolve_target(src, manifest) if cls is SparseRetriever else cls
        if cls is not SparseRetriever or not issubclass(target, SparseRetriever):
            check_target(src, manifest, cls)
        if like is not None:
            tokenizer = like.tokenizer.config if tokenizer is None else tokenizer
            params = like.params() if params is None else params
            index_title = like.index_title if index_title is None else index_title
            cache_dir, engine, mmap = like.cache_dir, like.engine, like.mmap
        check_corpus(src, manifest, passages)
        check_index_tokenizer(src, manifest["tokenizer"], tokenizer)
        check_params(src, manifest, params)
        check_setting(
            src, manifest, "index_title", None if index_title is None else bool(index_title), default=True
        )
        retriever = target(
            tokenizer=manifest["tokenizer"]["config"],
            index_title=manifest.get("index_title", True),
            cache_dir=cache_dir,
            engine=engine,
            mmap=mmap,
            **manifest["params"],
        )
        retriever.tokenizer.restore(src)
        retriever.tokenizer.prepare()
        try:
            retriever.passage_ids = json.loads((src / "passage_ids.json").read_text(encoding="utf-8"))
            vocab = json.loads((src / "vocab.json").read_text(encoding="utf-8"))
            names = manifest.get("arrays") if manifest["format_version"] >= 3 else None  # else: index.npz
            arrays = load_arrays(src, names, retriever.mmap)
        except (OSError, ValueError, KeyError) as error:
            raise DataFormatError(
                src, None, f"the index files are unreadable ({error})", REBUILD_FIX
            ) from None
        if (
            len(retriever.passage_ids) != manifest["corpus"]["passages"]
            or len(vocab) != manifest["vocab_size"]
        ):
            raise DataFormatError(
                src, None, "passage_ids.json / vocab.json do not match manifest.json", REBUILD_FIX
            )
        retriever.vocab = {token: i for i, token in enumerate(vocab)}
        retriever.corpus_fingerprint = manifest["corpus"]["fingerprint"]
        retriever._restore(arrays, src)
        retriever._warm_up()
        return retriever
