"""BM25 (``retriever=bm25``): rank-bm25's Okapi BM25 (and its BM25L / BM25+), in two modes.

* ``mode: fast`` (default) precomputes every passage's per-term BM25 weight into a term-major matrix
  (``TermIndex``: postings, and a dense row per term found in most passages); a query is one
  ``np.bincount`` over the postings of its terms, plus its dense rows, plus a partial sort.  With
  ``dtype: float64`` (default) its scores equal rank-bm25's ``BM25Okapi.get_scores`` on the same tokens
  (same idf, including the ``epsilon * average_idf`` floor for negative idf) to floating-point rounding
  (< 1e-9); ``dtype: float32`` stores the weights in half the memory (the index shrinks by a third;
  scores within ~1e-7 relative, rankings the same but for near-ties) and is faster still.  ``engine: auto`` runs the scoring and top-k
  selection in a numba kernel when numba is installed (identical results to numpy in the same dtype,
  ~2x the queries/s on 60k passages), else in numpy.
* ``mode: rank_bm25`` calls ``rank_bm25`` itself (slow: every query walks every passage in Python);
  it exists to check parity and to reproduce baselines exactly.

Variants follow rank-bm25 to the letter: ``okapi`` (``k1``, ``b``, ``epsilon``); ``bm25l`` (``delta``,
default 0.5; rank-bm25 multiplies by the query-term frequency, so absent terms add 0); ``bm25plus``
(``delta``, default 1; every passage gets ``idf * delta`` per query term, which the fast mode adds as a
constant).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from retrievals.postings import PostingsBuilder
from retrievals.sparse import SparseRetriever
from retrievals.term_index import TermIndex
from retrievals.token_cache import TokenizedCorpus
from retrievals.tokenizers import Tokenizer

__all__ = ["BM25Retriever", "bm25_weights"]

MODES = ("fast", "rank_bm25")
VARIANTS = ("okapi", "bm25l", "bm25plus")
_DEFAULT_DELTA = {"okapi": None, "bm25l": 0.5, "bm25plus": 1.0}


def bm25_weights(
    corpus: TokenizedCorpus,
    *,
    variant: str,
    k1: float,
    b: float,
    epsilon: float,
    delta: float | None,
    dtype: str = "float64",
    spill_dir: str | os.PathLike[str] | None = None,
) -> tuple[TermIndex, np.ndarray, np.ndarray | None]:
    """Term-major BM25 weights (computed in float64, stored in ``dtype``), per-term idf, and (BM25+) the
    per-term score of passages without the term. Built chunk by chunk (``retrievals/postings.py``): with
    ``spill_dir`` the index goes to ``.npy`` files there, memory-mapped."""
    n_docs, n_terms = len(corpus), len(corpus.vocab)
    builder = PostingsBuilder(spill_dir)
    builder.add_corpus(corpus.ids, corpus.offsets, n_terms)
    df = builder.df[:n_terms].astype(np.float64)
    doc_len = corpus.lengths.astype(np.float64)
    avgdl = float(doc_len.sum()) / n_docs
    length_norm = 1.0 - b + b * doc_len / avgdl
    constant = None
    if variant == "okapi":
        idf = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
        floor = epsilon * (float(idf.sum()) / n_terms)
        idf = np.where(idf < 0, floor, idf)

        def weigh(terms: np.ndarray, docs: np.ndarray, tf: np.ndarray) -> np.ndarray:
            return idf[terms] * (tf * (k1 + 1) / (tf + k1 * length_norm[docs]))

    elif variant == "bm25l":
        idf = np.log(n_docs + 1.0) - np.log(df + 0.5)

        def weigh(terms: np.ndarray, docs: np.ndarray, tf: np.ndarray) -> np.ndarray:
            ctd = tf / length_norm[docs]
            return idf[terms] * tf * (k1 + 1) * (ctd + delta) / (k1 + ctd + delta)

    else:  # bm25plus
        idf = np.log((n_docs + 1.0) / df)
        constant = idf * delta

        def weigh(terms: np.ndarray, docs: np.ndarray, tf: np.ndarray) -> np.ndarray:
            return idf[terms] * (tf * (k1 + 1)) / (k1 * length_norm[docs] + tf)

    return builder.build(weigh, dtype, n_terms), idf, constant


class BM25Retriever(SparseRetriever):
    """Okapi BM25 over a Korean tokenisation of the passages (see the module docstring for the modes)."""

    kind = "bm25"

    def __init__(
        self,
        tokenizer: str | Mapping[str, Any] | Tokenizer | None = None,
        *,
        mode: str = "fast",
        variant: str = "okapi",
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
        delta: float | None = None,
        index_title: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        engine: str = "auto",
        dtype: str = "float64",
        mmap: bool = False,
    ) -> None:
        super().__init__(
            tokenizer, index_title=index_title, cache_dir=cache_dir, engine=engine, dtype=dtype, mmap=mmap
        )
        if mode not in MODES:
            raise ValueError(f"retriever.mode={mode!r}: use one of {', '.join(MODES)}.")
        if variant not in VARIANTS:
            raise ValueError(f"retriever.variant={variant!r}: use one of {', '.join(VARIANTS)}.")
        if not (float(k1) >= 0):
            raise ValueError(f"retriever.k1={k1!r}: must be >= 0 (typical 0.9-2.0).")
        if not (0 <= float(b) <= 1):
            raise ValueError(f"retriever.b={b!r}: must lie in [0, 1] (typical 0.75).")
        if variant != "okapi" and delta is not None and float(delta) < 0:
            raise ValueError(f"retriever.delta={delta!r}: must be >= 0.")
        self.mode, self.variant = mode, variant
        self.k1, self.b, self.epsilon = float(k1), float(b), float(epsilon)
        self.delta = (
            None if variant == "okapi" else float(_DEFAULT_DELTA[variant] if delta is None else delta)
        )
        self._index: TermIndex | None = None
        self._idf: np.ndarray | None = None
        self._constant: np.ndarray | None = None
        self._tokens: TokenizedCorpus | None = None
        self._rank_bm25: Any = None
        self._terms: list[str] = []

    def params(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "variant": self.variant,
            "k1": self.k1,
            "b": self.b,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "dtype": self.dtype,
        }

    @property
    def idf(self) -> dict[str, float]:
        """Term -> idf as used for scoring (after the epsilon floor), like ``rank_bm25.BM25Okapi.idf``."""
        if self.mode == "rank_bm25":
            return dict(self._rank_bm25.idf)
        return dict(zip(self._terms, self._idf.tolist(), strict=True))

    # ------------------------------------------------------------------ building

    def _build(self, corpus: TokenizedCorpus) -> None:
        self._terms = list(corpus.vocab)
        if self.mode == "rank_bm25":
            self._tokens = corpus
            self._build_rank_bm25(corpus)
            return
        self._index, self._idf, self._constant = bm25_weights(
            corpus,
            variant=self.variant,
            k1=self.k1,
            b=self.b,
            epsilon=self.epsilon,
            delta=self.delta,
            dtype=self.dtype,
            spill_dir=self.spill_dir(),
        )

    def _build_rank_bm25(self, corpus: TokenizedCorpus) -> None:
        import rank_bm25

        lists = corpus.as_lists()
        if self.variant == "okapi":
            self._rank_bm25 = rank_bm25.BM25Okapi(lists, k1=self.k1, b=self.b, epsilon=self.epsilon)
        elif self.variant == "bm25l":
            self._rank_bm25 = rank_bm25.BM25L(lists, k1=self.k1, b=self.b, delta=self.delta)
        else:
            self._rank_bm25 = rank_bm25.BM25Plus(lists, k1=self.k1, b=self.b, delta=self.delta)

    # ------------------------------------------------------------------ scoring

    def _score(self, terms: np.ndarray, counts: np.ndarray) -> np.ndarray:
        if self.mode == "rank_bm25":
            words = self._terms
            query = [
                words[t]
                for t, c in zip(terms.tolist(), counts.astype(int).tolist(), strict=True)
                for _ in range(c)
            ]
            return np.asarray(self._rank_bm25.get_scores(query), dtype=np.float64)
        scores = self._index.scores(terms, None if counts.max() == 1 else counts)
        if self._constant is not None:
            scores += float(np.dot(self._constant[terms], counts))
        return scores

    def _topk_batch(self, queries, k):
        if self.mode != "fast" or self._kernel is None:
            return super()._topk_batch(queries, k)
        constants = None
        if self._constant is not None:
            constants = [float(np.dot(self._constant[terms], counts)) for terms, counts in queries]
        return self._index.topk_batch(self._kernel, queries, k, constants)

    # ------------------------------------------------------------------ persistence

    def _arrays(self) -> dict[str, np.ndarray]:
        if self.mode == "rank_bm25":
            return {"token_ids": self._tokens.ids, "token_offsets": self._tokens.offsets}
        arrays = {**self._index.arrays(), "idf": self._idf}
        if self._constant is not None:
            arrays["constant"] = self._constant
        return arrays

    def _restore(self, arrays: Mapping[str, np.ndarray], directory: Path) -> None:
        vocab = [""] * len(self.vocab)
        for token, i in self.vocab.items():
            vocab[i] = token
        self._terms = vocab
        if self.mode == "rank_bm25":
            self._tokens = TokenizedCorpus(vocab, arrays["token_ids"], arrays["token_offsets"])
            self._build_rank_bm25(self._tokens)
            return
        self._index = TermIndex.from_arrays(arrays, len(self.passage_ids), dtype=self.dtype)
        self._idf = arrays["idf"]
        self._constant = arrays.get("constant")
