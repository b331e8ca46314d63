"""TF-IDF (``retriever=tfidf``): scikit-learn's ``TfidfVectorizer`` over a Korean tokenisation, cosine top-k.

The vectorizer is fitted on the passages' tokens (the tokenizer is ours, so the same cache and options
as BM25 apply); its rows are L2-normalised, so the dot product with a transformed query is the cosine.
Scoring reuses the term-major index and kernel of the BM25 fast mode (``dtype``: float64, or float32 for
half the memory, cosines within ~1e-7).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievals.sparse import SparseRetriever
from retrievals.term_index import TermIndex
from retrievals.token_cache import TokenizedCorpus
from retrievals.tokenizers import Tokenizer

__all__ = ["TfidfRetriever"]


def _pretokenized(tokens: Sequence[str]) -> Sequence[str]:
    """The vectorizer's analyzer: our tokenizer already produced the tokens."""
    return tokens


class TfidfRetriever(SparseRetriever):
    """Cosine similarity of sklearn TF-IDF vectors (``sublinear_tf``, ``smooth_idf``, ``min_df``, ``max_df``)."""

    kind = "tfidf"

    def __init__(
        self,
        tokenizer: str | Mapping[str, Any] | Tokenizer | None = None,
        *,
        sublinear_tf: bool = False,
        smooth_idf: bool = True,
        min_df: int | float = 1,
        max_df: int | float = 1.0,
        index_title: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        engine: str = "auto",
        dtype: str = "float64",
        mmap: bool = False,
    ) -> None:
        super().__init__(
            tokenizer, index_title=index_title, cache_dir=cache_dir, engine=engine, dtype=dtype, mmap=mmap
        )
        try:
            import sklearn  # noqa: F401
        except ImportError:
            raise ValueError("retriever=tfidf needs scikit-learn: pip install scikit-learn.") from None
        self.sublinear_tf, self.smooth_idf = bool(sublinear_tf), bool(smooth_idf)
        self.min_df, self.max_df = min_df, max_df
        self.vectorizer: Any = None
        self._index: TermIndex | None = None
        self._column: np.ndarray | None = None  # our term id -> vectorizer column (-1: dropped by min/max_df)

    def params(self) -> dict[str, Any]:
        return {
            "sublinear_tf": self.sublinear_tf,
            "smooth_idf": self.smooth_idf,
            "min_df": self.min_df,
            "max_df": self.max_df,
            "dtype": self.dtype,
        }

    def _new_vectorizer(self, vocabulary: Mapping[str, int] | None = None) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(
            analyzer=_pretokenized,
            lowercase=False,
            sublinear_tf=self.sublinear_tf,
            smooth_idf=self.smooth_idf,
            min_df=self.min_df,
            max_df=self.max_df,
            norm="l2",
            dtype=np.float64,
            vocabulary=vocabulary,
        )

    def _build(self, corpus: TokenizedCorpus) -> None:
        self.vectorizer = self._new_vectorizer()
        try:
            matrix = self.vectorizer.fit_transform(corpus.as_lists())
        except ValueError as error:  # e.g. min_df / max_df leave no term
            raise ValueError(
                f"retriever=tfidf: {error}; relax retriever.min_df / retriever.max_df."
            ) from None
        self._finish(matrix.tocsc())

    def _finish(self, by_column: Any) -> None:
        by_column.sort_indices()
        self._index = TermIndex(
            by_column.indptr, by_column.indices, by_column.data, by_column.shape[0], dtype=self.dtype
        )
        columns = self.vectorizer.vocabulary_
        self._column = np.array([columns.get(t, -1) for t in self._ordered_vocab()], dtype=np.int64)

    def _ordered_vocab(self) -> list[str]:
        vocab = [""] * len(self.vocab)
        for token, i in self.vocab.items():
            vocab[i] = token
        return vocab

    def _score(self, terms: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return self._score_batch([(terms, counts)])[0]

    def _query_vectors(
        self, queries: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The sklearn TF-IDF vector of each query as (vectorizer columns, weights)."""
        vocab = self._ordered_vocab_cached()
        docs = [
            [
                vocab[t]
                for t, c in zip(terms.tolist(), counts.astype(int).tolist(), strict=True)
                for _ in range(c)
            ]
            for terms, counts in queries
        ]
        q = self.vectorizer.transform(docs).tocsr()
        return [
            (q.indices[q.indptr[r] : q.indptr[r + 1]].astype(np.int64), q.data[q.indptr[r] : q.indptr[r + 1]])
            for r in range(q.shape[0])
        ]

    def _score_batch(self, queries: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Cosine scores of several queries: their sklearn TF-IDF vectors against the passage matrix."""
        return [
            self._index.scores(cols, weights) if cols.size else np.zeros(self._index.n_docs)
            for cols, weights in self._query_vectors(queries)
        ]

    def _topk_batch(self, queries, k):
        if self._kernel is None:
            return super()._topk_batch(queries, k)
        return self._index.topk_batch(self._kernel, self._query_vectors(queries), k)

    def _ordered_vocab_cached(self) -> list[str]:
        cached = getattr(self, "_vocab_list", None)
        if cached is None or len(cached) != len(self.vocab):
            cached = self._vocab_list = self._ordered_vocab()
        return cached

    def _arrays(self) -> dict[str, np.ndarray]:
        return {**self._index.arrays(), "idf": self.vectorizer.idf_, "column": self._column}

    def _restore(self, arrays: Mapping[str, np.ndarray], directory: Path) -> None:
        column = np.array(arrays["column"])
        vocab = self._ordered_vocab()
        columns = {vocab[i]: int(c) for i, c in enumerate(column.tolist()) if c >= 0}
        self.vectorizer = self._new_vectorizer(vocabulary=columns)
        self.vectorizer.idf_ = np.array(arrays["idf"])  # in RAM: scikit-learn keeps its own copy anyway
        self._index = TermIndex.from_arrays(arrays, len(self.passage_ids), dtype=self.dtype)
        self._column = column
