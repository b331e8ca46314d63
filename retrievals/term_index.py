"""The sparse engine's storage and top-k: per-term passage weights (:class:`TermIndex`), the numba / numpy
engines, and a top-k that keeps corpus order on ties.

BM25 and TF-IDF both reduce to "a query's score of a passage is the weighted sum of its terms' weights in that
passage"; they differ only in the weights (``retrievals/bm25.py``, ``retrievals/tfidf.py``), so they share this
index and its kernels (``retrievals/_numba.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["DTYPES", "ENGINES", "TermIndex", "check_dtype", "dense_mask", "numba_kernel", "top_k"]


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


# A term found in more than this share of the passages is stored as a dense row. Scattering a posting costs
# ~6x adding one passage of a row (numba, 60k passages, character bigrams: 2.9 vs 0.5 ns), so past ~1/6 a row
# is faster; at 1/4 the kernel scatters 18k postings a query instead of 64k (+10-21% queries/s) and the index
# arrays grow 9% (158 -> 172 MB; the build's peak is unchanged). 1/8 was no faster (docs/retrieval.md).
DENSE_SHARE = 0.25


def dense_mask(df: np.ndarray, n_docs: int, dtype: str) -> np.ndarray:
    """Terms stored as dense rows when an index is built: those found in more than ``DENSE_SHARE`` of the
    passages (``dtype`` kept for the callers; the rule no longer depends on it)."""
    del dtype
    return df > DENSE_SHARE * n_docs


def _memory_dense_mask(df: np.ndarray, n_docs: int, dtype: str) -> np.ndarray:
    """Terms whose postings (an int32 passage and a weight each) take more memory than a full row of weights
    (more than half the passages in float32, two thirds in float64): the rule indexes saved before
    ``DENSE_SHARE`` were built with."""
    item = np.dtype(dtype).itemsize
    return df * (np.dtype(np.int32).itemsize + item) > n_docs * item


class TermIndex:
    """Per-term weights of the passages, in two parts.

    * Sparse (CSR over terms): the postings of term ``t`` are ``indices[indptr[t]:indptr[t+1]]``
      (passages) with ``data`` (their weights).
    * Dense: a term found in more than a quarter of the passages (``DENSE_SHARE``) is stored as row
      ``dense_slot[t]`` of ``dense_rows`` (one weight per passage, 0 where absent) and has no postings.
      Such common terms hold most of a query's postings on Korean text (94% on 60k passages with character
      bigrams); adding a contiguous row is several times faster than scattering postings.

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
        # Built all sparse (TF-IDF, a format-1 index): the common terms move to dense rows. An index given with its
        # dense rows keeps them as built; one saved before DENSE_SHARE only moves what the older memory rule
        # would have, so loading it (memory-mapped) never copies postings into RAM.
        rule = dense_mask if dense_terms is None else _memory_dense_mask
        if dense_terms is None:
            dense_terms = np.zeros(0, np.int64)
            dense_rows = np.zeros((0, self.n_docs), dtype)
        dense_terms = np.asarray(dense_terms, dtype=np.int64)
        dense_rows = np.ascontiguousarray(dense_rows, dtype=dtype).reshape(dense_terms.shape[0], self.n_docs)
        df = np.diff(indptr)
        move = np.flatnonzero(rule(df, self.n_docs, dtype))
        if move.size:  # an index saved all-sparse (format 1) or built so: move the common terms to dense rows
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
                vals = np.concatenate(
                    [
                        np.multiply(data[a:b], w, dtype=np.float64)
                        for a, b, w in zip(starts, ends, weights[sparse].tolist(), strict=True)
                    ]
                )
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
        terms = (
            np.concatenate([t for t, _ in queries]).astype(np.int64, copy=False)
            if n
            else np.zeros(0, np.int64)
        )
        weights = np.concatenate([w for _, w in queries]).astype(np.float64, copy=False) if n else np.zeros(0)
        const = np.zeros(n) if constants is None else np.asarray(constants, dtype=np.float64)
        out_i = np.empty((n, k), dtype=np.int64)
        out_s = np.empty((n, k), dtype=np.float64)
        kernel(
            self.indptr,
            self.indices,
            self.data,
            self.dense_slot,
            self.dense_rows,
            offsets,
            terms,
            weights,
            const,
            self.n_docs,
            k,
            out_i,
            out_s,
        )
        return out_i, out_s

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {
            f"{prefix}indptr": self.indptr,
            f"{prefix}indices": self.indices,
            f"{prefix}data": self.data,
            f"{prefix}dense_terms": self.dense_terms,
            f"{prefix}dense_rows": self.dense_rows,
        }

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], n_docs: int, prefix: str = "", dtype: str = "float64"
    ) -> TermIndex:
        """The index :meth:`arrays` saved (or a format-1 one, all sparse: its common terms move to dense rows)."""
        return cls(
            arrays[f"{prefix}indptr"],
            arrays[f"{prefix}indices"],
            arrays[f"{prefix}data"],
            n_docs,
            dtype=dtype,
            dense_terms=arrays.get(f"{prefix}dense_terms"),
            dense_rows=arrays.get(f"{prefix}dense_rows"),
        )
