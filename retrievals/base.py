"""The retriever interface shared by BM25 and TF-IDF, the sparse scoring kernel and index directories.

A retriever is built once and then queried many times::

    retriever = BM25Retriever(tokenizer="kiwi").index(passages)
    ids, scores = retriever.search(["경복궁은 언제 지어졌나?"], k=20)
    retriever.save("indexes/bm25")
    retriever = load_retriever("indexes/bm25", passages=passages)   # checks corpus and tokenizer

An index directory holds ``manifest.json`` (retriever class and parameters, tokenizer config and
fingerprint, corpus fingerprint), ``passage_ids.json``, ``vocab.json`` and ``.npz`` arrays: no pickle.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from core.errors import DataFormatError
from retrievals.corpus import Passage, corpus_fingerprint
from retrievals.tokenizers import (
    TokenizedCorpus,
    Tokenizer,
    _atomic_savez,
    _atomic_write_text,
    build_tokenizer,
    tokenize_corpus,
)

__all__ = ["INDEX_FORMAT", "Retriever", "SearchResult", "TermIndex", "load_retriever", "read_manifest", "top_k"]

log = logging.getLogger(__name__)

INDEX_FORMAT = "kornlp-retrieval-index"
# 2: BM25 / TF-IDF indexes store their common terms as dense rows and record retriever.dtype; a version-1
# index (all sparse, float64) still loads.
INDEX_FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
REGISTRY: dict[str, str] = {
    "bm25": "retrievals.bm25.BM25Retriever",
    "tfidf": "retrievals.tfidf.TfidfRetriever",
    "elasticsearch": "retrievals.elasticsearch.ElasticsearchRetriever",
}
_SCORE_CHUNK = 64  # queries scored at once by numpy: bounds the dense score buffers to 64 x corpus size
_KERNEL_CHUNK = 4096  # queries per numba call (one score buffer; results: (n, k) arrays, at most ~4M entries)
_REBUILD_FIX = "delete that directory (or point retriever.index_dir elsewhere) to build a new index"


class SearchResult(NamedTuple):
    """Per query, passage ids and scores, best first.  A query with no usable token gets ``[]``."""

    ids: list[list[str]]
    scores: list[list[float]]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first; equal scores keep corpus order (lower index first).

    ``np.partition`` finds the k-th largest value; everything above it plus the first tied ones are then
    sorted.  When most passages score exactly 0 (usual for sparse retrieval) the partition runs over the
    non-zero scores only.
    """
    n = scores.shape[0]
    if k >= n:
        return np.lexsort((np.arange(n), -scores))
    if np.count_nonzero(scores) * 2 < n:
        candidates = np.flatnonzero(scores)
        m = candidates.shape[0]
        if m >= k:
            values = scores[candidates]
            threshold = np.partition(values, m - k)[m - k]
            if threshold > 0:  # no zero (or negative) score can make the top k
                chosen = _above_and_ties(values, threshold, k)
                picked = candidates[chosen]
                return picked[np.lexsort((picked, -values[chosen]))]
    threshold = np.partition(scores, n - k)[n - k]
    picked = _above_and_ties(scores, threshold, k)
    return picked[np.lexsort((picked, -scores[picked]))]


def _above_and_ties(values: np.ndarray, threshold: float, k: int) -> np.ndarray:
    """Positions of the values above ``threshold`` and of the first ties, ``k`` in all."""
    above = np.flatnonzero(values > threshold)
    if above.shape[0] == k:
        return above
    ties = np.flatnonzero(values == threshold)[: k - above.shape[0]]
    return np.concatenate([above, ties])


ENGINES = ("auto", "numpy", "numba")
_NUMBA_KERNEL: Any = None


def numba_kernel(engine: str) -> Any:
    """The compiled top-k kernel for ``engine`` (``auto``: when numba is installed), or None for numpy."""
    global _NUMBA_KERNEL
    if engine not in ENGINES:
        raise ValueError(f"retriever.engine={engine!r}: use one of {', '.join(ENGINES)}.")
    if engine == "numpy":
        return None
    if _NUMBA_KERNEL is None:
        try:
            from retrievals._numba import topk_batch
        except ImportError:
            _NUMBA_KERNEL = False
        else:
            _NUMBA_KERNEL = topk_batch
    if _NUMBA_KERNEL is False:
        if engine == "numba":
            raise ValueError("retriever.engine=numba needs numba: pip install numba (or use engine=auto).")
        return None
    return _NUMBA_KERNEL


DTYPES = ("float64", "float32")


def check_dtype(dtype: str) -> str:
    """``retriever.dtype``: the storage type of the index weights (scores always add up in float64)."""
    if dtype not in DTYPES:
        raise ValueError(f"retriever.dtype={dtype!r}: use one of {', '.join(DTYPES)}.")
    return dtype


class TermIndex:
    """Per-term weights of the passages, in two parts.

    * Sparse (CSR over terms): the postings of term ``t`` are ``indices[indptr[t]:indptr[t+1]]``
      (passages) with ``data`` (their weights).
    * Dense: a term found in so many passages that a full row (one weight per passage, 0 where absent)
      takes no more memory than its postings (more than half the passages in float32, two thirds in
      float64) is stored as row ``dense_slot[t]`` of ``dense_rows`` and has no postings.  Such common
      terms hold most of a query's postings on Korean text (84% on 60k passages with character bigrams);
      adding a contiguous row is several times faster than scattering postings.

    A query's score of a passage adds, in float64 whatever ``dtype`` the weights are stored in, the postings
    of its sparse terms first, then the rows of its dense terms, each in query order.  The numpy path
    (:meth:`scores`) and the numba kernel add in exactly that order, so they agree to the last bit.
    """

    def __init__(
        self,
        indptr: np.ndarray,
        indices: np.ndarray,
        data: np.ndarray,
        n_docs: int,
        *,
        dtype: str = "float64",
        dense_terms: np.ndarray | None = None,
        dense_rows: np.ndarray | None = None,
    ) -> None:
        self.dtype = check_dtype(dtype)
        self.n_docs = int(n_docs)
        indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        indices = np.ascontiguousarray(indices, dtype=np.int32)
        data = np.ascontiguousarray(data, dtype=dtype)
        if dense_terms is None:
            dense_terms = np.zeros(0, np.int64)
            dense_rows = np.zeros((0, self.n_docs), dtype)
        dense_terms = np.asarray(dense_terms, dtype=np.int64)
        dense_rows = np.ascontiguousarray(dense_rows, dtype=dtype).reshape(dense_terms.shape[0], self.n_docs)
        df = np.diff(indptr)
        item = np.dtype(dtype).itemsize
        move = np.flatnonzero(df * (indices.itemsize + item) > self.n_docs * item)
        if move.size:  # build (or an index saved all-sparse): move the common terms to dense rows
            rows = np.zeros((move.size, self.n_docs), dtype)
            keep = np.ones(data.shape[0], dtype=bool)
            for row, term in zip(rows, move.tolist(), strict=True):
                start, end = indptr[term], indptr[term + 1]
                row[indices[start:end]] = data[start:end]
                keep[start:end] = False
            df[move] = 0
            indptr = np.concatenate(([0], np.cumsum(df)))
            indices, data = indices[keep], data[keep]
            order = np.argsort(np.concatenate((dense_terms, move)), kind="stable")
            dense_terms = np.concatenate((dense_terms, move))[order]
            dense_rows = np.concatenate((dense_rows, rows))[order]
        self.indptr, self.indices, self.data = indptr, indices, data
        self.dense_terms, self.dense_rows = dense_terms, dense_rows
        self.dense_slot = np.full(self.n_terms, -1, dtype=np.int32)
        self.dense_slot[dense_terms] = np.arange(dense_terms.shape[0], dtype=np.int32)

    @property
    def n_terms(self) -> int:
        return self.indptr.shape[0] - 1

    def scores(self, terms: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """``sum_t weights[t] * row_t`` as a dense float64 vector over passages: one bincount over the
        postings of the sparse terms, then the dense rows (see the class docstring for the order)."""
        slots = self.dense_slot[terms]
        sparse = slots < 0
        starts = self.indptr[terms[sparse]].tolist()
        ends = self.indptr[terms[sparse] + 1].tolist()
        indices, data = self.indices, self.data
        if not starts:
            out = np.zeros(self.n_docs)
        else:
            idx = np.concatenate([indices[a:b] for a, b in zip(starts, ends, strict=True)])
            if weights is None:
                vals = np.concatenate([data[a:b] for a, b in zip(starts, ends, strict=True)])
            else:  # products in float64, as the kernel forms them
                vals = np.concatenate([np.multiply(data[a:b], w, dtype=np.float64)
                                       for a, b, w in zip(starts, ends, weights[sparse].tolist(), strict=True)])
            out = np.bincount(idx, weights=vals, minlength=self.n_docs)
        for i in np.flatnonzero(~sparse).tolist():
            row = self.dense_rows[slots[i]]
            out += row if weights is None else np.multiply(row, weights[i], dtype=np.float64)
        return out

    def topk_batch(
        self,
        kernel: Any,
        queries: Sequence[tuple[np.ndarray, np.ndarray]],
        k: int,
        constants: Sequence[float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` passage indices and scores (``(n, k)`` arrays) of several queries in one compiled
        call (see ``retrievals._numba``)."""
        n = len(queries)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum([terms.shape[0] for terms, _ in queries], out=offsets[1:])
        terms = np.concatenate([t for t, _ in queries]).astype(np.int64, copy=False) if n else np.zeros(0, np.int64)
        weights = np.concatenate([w for _, w in queries]).astype(np.float64, copy=False) if n else np.zeros(0)
        const = np.zeros(n) if constants is None else np.asarray(constants, dtype=np.float64)
        out_i = np.empty((n, k), dtype=np.int64)
        out_s = np.empty((n, k), dtype=np.float64)
        kernel(self.indptr, self.indices, self.data, self.dense_slot, self.dense_rows, offsets, terms, weights,
               const, self.n_docs, k, out_i, out_s)
        return out_i, out_s

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}indptr": self.indptr, f"{prefix}indices": self.indices, f"{prefix}data": self.data,
                f"{prefix}dense_terms": self.dense_terms, f"{prefix}dense_rows": self.dense_rows}

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], n_docs: int, prefix: str = "", dtype: str = "float64"
    ) -> TermIndex:
        """The index :meth:`arrays` saved (or a format-1 one, all sparse: its common terms move to dense rows)."""
        return cls(arrays[f"{prefix}indptr"], arrays[f"{prefix}indices"], arrays[f"{prefix}data"], n_docs,
                   dtype=dtype, dense_terms=arrays.get(f"{prefix}dense_terms"),
                   dense_rows=arrays.get(f"{prefix}dense_rows"))


def term_major_counts(corpus: TokenizedCorpus) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (term, passage) pairs sorted by term then passage, with their counts (term frequencies)."""
    n_docs = len(corpus)
    docs = np.repeat(np.arange(n_docs, dtype=np.int64), corpus.lengths)
    keys = corpus.ids.astype(np.int64) * n_docs + docs
    keys.sort(kind="stable")
    if keys.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    tf = np.diff(np.append(starts, keys.size))
    unique = keys[starts]
    return unique // n_docs, unique % n_docs, tf


# ----------------------------------------------------------------------------- the interface


class Retriever(ABC):
    """Index passages; batched search of queries -> top-k passage ids and scores; save / load."""

    kind: ClassVar[str]

    def __init__(
        self,
        tokenizer: str | Mapping[str, Any] | Tokenizer | None = None,
        *,
        index_title: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        engine: str = "auto",
        dtype: str = "float64",
    ) -> None:
        self.tokenizer = build_tokenizer(tokenizer)
        self.engine = engine
        self.dtype = check_dtype(dtype)
        self._kernel = numba_kernel(engine)
        self.index_title = bool(index_title)
        self.cache_dir = str(cache_dir) if cache_dir else None
        self.passage_ids: list[str] = []
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

    def _topk_batch(self, queries: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
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
        """What :meth:`save` writes to ``index.npz``."""

    @abstractmethod
    def _restore(self, arrays: Mapping[str, np.ndarray], directory: Path) -> None:
        """Rebuild the in-memory index from ``index.npz`` (and ``self.vocab`` / ``self.passage_ids``)."""

    # ------------------------------------------------------------------ indexing

    @property
    def is_indexed(self) -> bool:
        return bool(self.passage_ids)

    def passage_text(self, passage: Passage) -> str:
        return f"{passage.title}\n{passage.text}" if self.index_title and passage.title else passage.text

    def index(self, passages: Sequence[Passage], *, source: str | None = None) -> Retriever:
        """Tokenise (or reuse the cached tokens of) ``passages`` and build the index; returns ``self``."""
        where = source or "the corpus"
        self._check_passages(passages, where)
        texts = [self.passage_text(p) for p in passages]
        fingerprint = corpus_fingerprint(passages)
        start = time.perf_counter()
        self.tokenizer.fit(texts, self.cache_dir)
        tokenized = tokenize_corpus(
            self.tokenizer, texts, corpus_key=f"{fingerprint}:title={self.index_title}", cache_dir=self.cache_dir
        )
        self.tokenize_seconds = time.perf_counter() - start
        return self._index_tokenized(passages, tokenized, where, fingerprint)

    def index_tokens(
        self, passages: Sequence[Passage], tokens: Sequence[Sequence[str]] | TokenizedCorpus, *, source: str | None = None
    ) -> Retriever:
        """Build the index from tokens made elsewhere (one list per passage), bypassing ``self.tokenizer``.

        The benchmarks feed every library the same tokens this way; queries must then be tokenised the
        same way and searched with :meth:`search_tokens`.
        """
        where = source or "the corpus"
        self._check_passages(passages, where)
        tokenized = tokens if isinstance(tokens, TokenizedCorpus) else TokenizedCorpus.from_lists(tokens)
        if len(tokenized) != len(passages):
            raise ValueError(f"{where}: {len(tokenized)} token lists for {len(passages)} passages.")
        self.tokenize_seconds = 0.0
        return self._index_tokenized(passages, tokenized, where, corpus_fingerprint(passages))

    @staticmethod
    def _check_passages(passages: Sequence[Passage], where: str) -> None:
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

    def _index_tokenized(
        self, passages: Sequence[Passage], tokenized: TokenizedCorpus, where: str, fingerprint: str
    ) -> Retriever:
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
                "query and are only returned to fill k", where, empty.size, len(passages), self.tokenizer.name,
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
        log.info("Indexed %d passages (%d terms) with %s in %.2fs (+%.2fs tokenising)", len(passages),
                 len(self.vocab), self.kind, self.index_seconds, self.tokenize_seconds)
        return self

    # ------------------------------------------------------------------ searching

    def _check_k(self, k: int) -> None:
        if not self.is_indexed:
            raise RuntimeError(f"{type(self).__name__}.search: nothing indexed yet; call index(passages) or load().")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        if k > len(self.passage_ids):
            raise ValueError(
                f"k={k} is larger than the corpus ({len(self.passage_ids)} passages): set retriever.top_k "
                f"(or k) to at most {len(self.passage_ids)}, or index a larger corpus."
            )

    def query_terms(self, token_lists: Sequence[Sequence[str]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, the distinct known term ids and their counts (unknown tokens score 0 and are dropped)."""
        out = []
        get = self.vocab.get
        for tokens in token_lists:
            counts: dict[int, int] = {}
            for token in tokens:
                term = get(token)
                if term is not None:
                    counts[term] = counts.get(term, 0) + 1
            size = len(counts)
            out.append((np.fromiter(counts, np.int64, size), np.fromiter(counts.values(), np.float64, size)))
        return out

    def search(self, queries: Sequence[str], k: int = 20) -> SearchResult:
        """Top-``k`` passages for each query, best first (ties in corpus order)."""
        if isinstance(queries, str):
            raise ValueError("search() takes a list of queries; wrap a single query as [query].")
        self._check_k(k)
        token_lists = self.tokenizer.tokenize(list(queries))
        return self.search_tokens(token_lists, k, queries=queries)

    def search_tokens(
        self, token_lists: Sequence[Sequence[str]], k: int, *, queries: Sequence[str] | None = None
    ) -> SearchResult:
        """:meth:`search` on already tokenised queries (the benchmarks feed every library the same tokens)."""
        self._check_k(k)
        pids = getattr(self, "_pid_array", None)
        if pids is None or pids.shape[0] != len(self.passage_ids):
            pids = self._pid_array = np.array(self.passage_ids, dtype=object)
        terms_all = self.query_terms(token_lists)
        ids_out: list[list[str]] = [[] for _ in token_lists]
        scores_out: list[list[float]] = [[] for _ in token_lists]
        live = [qi for qi, (terms, _) in enumerate(terms_all) if terms.size]
        chunk = _SCORE_CHUNK if self._kernel is None else max(_SCORE_CHUNK, min(_KERNEL_CHUNK, (1 << 22) // k))
        for begin in range(0, len(live), chunk):
            part = live[begin : begin + chunk]
            best, scores = self._topk_batch([terms_all[qi] for qi in part], k)
            for qi, ids, values in zip(part, pids[best].tolist(), scores.tolist(), strict=True):
                ids_out[qi] = ids
                scores_out[qi] = values
        if len(live) < len(token_lists):
            dead = [qi for qi, (terms, _) in enumerate(terms_all) if not terms.size]
            no_tokens = [qi for qi in dead if len(token_lists[qi]) == 0]
            unknown = [qi for qi in dead if len(token_lists[qi]) != 0]
        else:
            no_tokens, unknown = [], []
        self._warn_empty(no_tokens, unknown, queries, len(token_lists))
        return SearchResult(ids_out, scores_out)

    def _warn_empty(self, no_tokens: list[int], unknown: list[int], queries: Sequence[str] | None, n: int) -> None:
        def show(idx: list[int]) -> str:
            return ", ".join(repr(queries[i]) if queries is not None else f"#{i}" for i in idx[:3])

        if no_tokens:
            log.warning("%d of %d queries have no tokens under tokenizer %s (e.g. %s): they get no results",
                        len(no_tokens), n, self.tokenizer.name, show(no_tokens))
        if unknown:
            log.warning("%d of %d queries share no token with the index vocabulary (e.g. %s): they get no results",
                        len(unknown), n, show(unknown))

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

    def manifest(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "format_version": INDEX_FORMAT_VERSION,
            "retriever": self.kind,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "params": self.params(),
            "index_title": self.index_title,
            "tokenizer": {
                "config": self.tokenizer.config,
                "fingerprint": self.tokenizer.fingerprint(),
                "versions": self.tokenizer.versions(),
            },
            "corpus": {"fingerprint": self.corpus_fingerprint, "passages": len(self.passage_ids)},
            "vocab_size": len(self.vocab),
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the index to ``directory`` (created; files replaced atomically)."""
        if not self.is_indexed:
            raise RuntimeError(f"{type(self).__name__}.save: nothing indexed yet.")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(out / "passage_ids.json", json.dumps(self.passage_ids, ensure_ascii=False))
        vocab = [""] * len(self.vocab)
        for token, i in self.vocab.items():
            vocab[i] = token
        _atomic_write_text(out / "vocab.json", json.dumps(vocab, ensure_ascii=False))
        _atomic_savez(out / "index.npz", **self._arrays())
        for name, text in self.tokenizer.state().items():
            _atomic_write_text(out / name, text)
        # The manifest goes last: a directory without one is an interrupted save, never a valid index.
        _atomic_write_text(out / "manifest.json", json.dumps(self.manifest(), ensure_ascii=False, indent=2))
        return out

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        passages: Sequence[Passage] | None = None,
        tokenizer: str | Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        index_title: bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        engine: str = "auto",
    ) -> Retriever:
        """Load an index; with ``passages`` / ``tokenizer`` / ``params`` given, refuse one built differently."""
        src = Path(directory)
        manifest = read_manifest(src)
        expected = REGISTRY.get(manifest["retriever"])
        if cls is not Retriever and expected != f"{cls.__module__}.{cls.__qualname__}":
            raise DataFormatError(
                src, None, f"this is a {manifest['retriever']} index, not a {cls.kind} one",
                f"load it with retriever={manifest['retriever']}, or {_REBUILD_FIX}",
            )
        target = _resolve(manifest["retriever"], src)
        if target.load.__func__ is not Retriever.load.__func__:  # its own storage (e.g. a server index)
            return target.load(src, passages=passages, tokenizer=tokenizer, params=params, index_title=index_title,
                               cache_dir=cache_dir, engine=engine)
        check_manifest(src, manifest, passages=passages, tokenizer=tokenizer, params=params, index_title=index_title)
        retriever = target(tokenizer=manifest["tokenizer"]["config"], index_title=manifest.get("index_title", True),
                           cache_dir=cache_dir, engine=engine, **manifest["params"])
        retriever.tokenizer.restore(src)
        retriever.tokenizer.prepare()
        try:
            retriever.passage_ids = json.loads((src / "passage_ids.json").read_text(encoding="utf-8"))
            vocab = json.loads((src / "vocab.json").read_text(encoding="utf-8"))
            with np.load(src / "index.npz", allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (OSError, ValueError, KeyError) as error:
            raise DataFormatError(src, None, f"the index files are unreadable ({error})", _REBUILD_FIX) from None
        if len(retriever.passage_ids) != manifest["corpus"]["passages"] or len(vocab) != manifest["vocab_size"]:
            raise DataFormatError(src, None, "passage_ids.json / vocab.json do not match manifest.json", _REBUILD_FIX)
        retriever.vocab = {token: i for i, token in enumerate(vocab)}
        retriever.corpus_fingerprint = manifest["corpus"]["fingerprint"]
        retriever._restore(arrays, src)
        retriever._warm_up()
        return retriever


def _resolve(kind: str, src: Path) -> type[Retriever]:
    path = REGISTRY.get(kind)
    if path is None:
        raise DataFormatError(src, None, f"unknown retriever {kind!r} in manifest.json",
                              f"use one of {', '.join(REGISTRY)}; {_REBUILD_FIX}")
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    src = Path(directory)
    path = src / "manifest.json"
    if not path.exists():
        raise DataFormatError(
            src, None, "not a retrieval index directory (no manifest.json)",
            "build one first (Retriever.save / task=retrieve retriever.index_dir=...), or check the path",
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataFormatError(path, None, f"not valid JSON ({error.msg})", _REBUILD_FIX) from None
    if not isinstance(manifest, dict) or manifest.get("format") != INDEX_FORMAT:
        raise DataFormatError(path, None, f"not a {INDEX_FORMAT} manifest", _REBUILD_FIX)
    if manifest.get("format_version") not in _READABLE_VERSIONS:
        raise DataFormatError(path, None, f"index format version {manifest.get('format_version')} is not one of "
                              f"{', '.join(map(str, _READABLE_VERSIONS))}", _REBUILD_FIX)
    if manifest["format_version"] == 1 and manifest.get("retriever") in ("bm25", "tfidf"):
        manifest["params"] = {**manifest.get("params", {}), "dtype": "float64"}  # before retriever.dtype
    return manifest


def check_manifest(
    src: Path,
    manifest: Mapping[str, Any],
    *,
    passages: Sequence[Passage] | None = None,
    tokenizer: str | Mapping[str, Any] | Tokenizer | None = None,
    params: Mapping[str, Any] | None = None,
    index_title: bool | None = None,
) -> None:
    """Raise :class:`DataFormatError` when the index was built from another corpus, tokenizer or parameters."""
    if passages is not None:
        have = corpus_fingerprint(passages)
        built = manifest["corpus"]
        if have != built["fingerprint"]:
            raise DataFormatError(
                src, None,
                f"the index was built from a different corpus ({built['passages']} passages, fingerprint "
                f"{built['fingerprint']}) than the one given ({len(passages)} passages, fingerprint {have})",
                _REBUILD_FIX,
            )
    if tokenizer is not None:
        wanted = build_tokenizer(tokenizer).config
        built_tok = manifest["tokenizer"]["config"]
        if wanted != built_tok:
            raise DataFormatError(
                src, None,
                f"the index was built with tokenizer {json.dumps(built_tok, ensure_ascii=False, sort_keys=True)} "
                f"but {json.dumps(wanted, ensure_ascii=False, sort_keys=True)} was asked for",
                f"set retriever.tokenizer to the index's, or {_REBUILD_FIX}",
            )
    built_versions = manifest["tokenizer"].get("versions", {})
    now_versions = build_tokenizer(manifest["tokenizer"]["config"]).versions()
    changed = {k: (built_versions[k], v) for k, v in now_versions.items() if k in built_versions and built_versions[k] != v}
    if changed:
        log.warning("%s was tokenised with %s; now installed: %s. Tokens may differ slightly: rebuild the index "
                    "if results look off", src, {k: a for k, (a, _) in changed.items()},
                    {k: b for k, (_, b) in changed.items()})
    if params is not None:
        built_params = manifest["params"]
        diff = {k: (built_params.get(k), v) for k, v in params.items() if built_params.get(k) != v}
        if diff:
            shown = ", ".join(f"{k}: index {a!r} vs asked {b!r}" for k, (a, b) in diff.items())
            raise DataFormatError(src, None, f"the index was built with other parameters ({shown})",
                                  f"set them to the index's, or {_REBUILD_FIX}")
    if index_title is not None and bool(manifest.get("index_title", True)) != bool(index_title):
        raise DataFormatError(src, None, f"the index was built with index_title={manifest.get('index_title')}",
                              f"set retriever.index_title to match, or {_REBUILD_FIX}")


def load_retriever(directory: str | os.PathLike[str], **checks: Any) -> Retriever:
    """Load any saved index (BM25 or TF-IDF), checking it against ``passages`` / ``tokenizer`` / ``params``."""
    return Retriever.load(directory, **checks)
