"""Building a term-major index chunk by chunk, so that no step holds the whole corpus's postings at once.

Why by hand: scipy.sparse turns one chunk of passages into term-major postings (``sum_duplicates`` then
``tocsc``), but no library merges such chunks by term into the layout of :class:`TermIndex` (postings plus
dense rows for the commonest terms) while streaming them to ``.npy`` files. The merge walks the vocabulary in
blocks of terms: each block's postings are gathered from every chunk (in passage order), weighted, and
appended to the output, so the peak is one chunk (building) or one block (merging), not the corpus.

With ``spill_dir`` the chunks go to raw files there and the index to ``.npy`` files opened memory-mapped
(``np.load(mmap_mode="r")``): a corpus larger than RAM indexes with bounded memory. Without it everything
stays in RAM (still one chunk / one block of temporaries at a time). Either way the weights are the same
float64 expressions of the same numbers, so the index is identical to the one the whole corpus would give.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import scipy.sparse as sp

from retrievals.index_files import open_npy, write_npy
from retrievals.term_index import TermIndex, check_dtype, dense_mask

__all__ = ["PostingsBuilder"]

# (terms, passages, term frequencies) of a block of postings -> their float64 weights
Weigh = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

_CHUNK_TOKENS = 2_000_000  # tokens per chunk: bounds the build's scipy temporaries (~20 bytes a token)
_BLOCK_POSTINGS = 500_000  # postings per merge block: bounds the merge's temporaries (~100 bytes a posting)


@dataclass
class _Chunk:
    """One chunk's postings, term-major: term ``t < n_terms`` owns ``[indptr[t], indptr[t + 1])``."""

    indptr: np.ndarray
    docs: np.ndarray | Path  # int32 passage indices (in memory, or a raw file in spill_dir)
    tf: np.ndarray | Path  # int32 term frequencies

    @property
    def n_terms(self) -> int:
        return self.indptr.shape[0] - 1

    def part(self, which: str, start: int, stop: int) -> np.ndarray:
        """Postings ``[start, stop)`` of ``docs`` or ``tf``, read from the spill file with plain reads (not a
        mapping: mapped pages would stay resident and count against the build's memory)."""
        source = getattr(self, which)
        if isinstance(source, np.ndarray):
            return source[start:stop]
        return np.fromfile(source, dtype=np.int32, count=stop - start, offset=start * 4)


class PostingsBuilder:
    """Passages in, chunk by chunk (token ids); out, a :class:`TermIndex` whose weights ``weigh`` computes.

    ``add`` takes consecutive passages; ``df`` (passages per term) and ``lengths`` (tokens per passage) are
    known once all are in, which is when weights such as BM25's can be computed (:meth:`build`).
    """

    def __init__(self, spill_dir: str | os.PathLike[str] | None = None) -> None:
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        if self.spill_dir is not None:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
        self._chunks: list[_Chunk] = []
        self._df = np.zeros(0, dtype=np.int64)
        self._lengths: list[np.ndarray] = []
        self.n_docs = 0

    @property
    def df(self) -> np.ndarray:
        return self._df

    @property
    def lengths(self) -> np.ndarray:
        return np.concatenate(self._lengths) if self._lengths else np.zeros(0, dtype=np.int64)

    def add_corpus(self, ids: np.ndarray, offsets: np.ndarray, n_terms: int) -> None:
        """All passages of a tokenised corpus (``ids[offsets[i]:offsets[i + 1]]``), in chunks of
        ~``_CHUNK_TOKENS`` tokens."""
        n = offsets.shape[0] - 1
        begin = 0
        while begin < n:
            end = int(np.searchsorted(offsets, offsets[begin] + _CHUNK_TOKENS, side="right")) - 1
            end = min(n, max(end, begin + 1))
            lo, hi = int(offsets[begin]), int(offsets[end])
            self.add(np.asarray(ids[lo:hi]), np.asarray(offsets[begin : end + 1]) - lo, n_terms)
            begin = end

    def add(self, ids: np.ndarray, offsets: np.ndarray, n_terms: int) -> None:
        """The next ``len(offsets) - 1`` passages: token ids (all ``< n_terms``), ``offsets`` from 0."""
        n = offsets.shape[0] - 1
        lengths = np.diff(offsets).astype(np.int64)
        counts = sp.csr_array((np.ones(ids.shape[0], dtype=np.int32), ids, offsets), shape=(n, n_terms))
        counts.sum_duplicates()  # one entry per (passage, term), its count; columns sorted in each row
        by_term = counts.tocsc()  # term-major; each term's passages ascending
        del counts
        indptr = by_term.indptr.astype(np.int64)
        docs = by_term.indices.astype(np.int32) + np.int32(self.n_docs)
        tf = by_term.data.astype(np.int32, copy=False)
        del by_term
        if self._df.shape[0] < n_terms:
            self._df = np.concatenate([self._df, np.zeros(n_terms - self._df.shape[0], dtype=np.int64)])
        self._df[:n_terms] += np.diff(indptr)
        if self.spill_dir is not None:
            stem = self.spill_dir / f"chunk{len(self._chunks):05d}"
            docs.tofile(stem.with_suffix(".docs"))
            tf.tofile(stem.with_suffix(".tf"))
            self._chunks.append(_Chunk(indptr, stem.with_suffix(".docs"), stem.with_suffix(".tf")))
        else:
            self._chunks.append(_Chunk(indptr, docs, tf))
        self._lengths.append(lengths)
        self.n_docs += n

    def build(self, weigh: Weigh, dtype: str, n_terms: int) -> TermIndex:
        """Merge the chunks by term into a :class:`TermIndex` (``.npy`` files in ``spill_dir``, mapped, when
        spilling); ``weigh`` gets each block's terms and passages (int32) and term frequencies (float64)."""
        check_dtype(dtype)
        n_docs = self.n_docs
        df = np.zeros(n_terms, dtype=np.int64)
        df[: self._df.shape[0]] = self._df[:n_terms]
        dense = dense_mask(df, n_docs, dtype)
        dense_terms = np.flatnonzero(dense).astype(np.int64)
        sparse_df = np.where(dense, 0, df)
        indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(sparse_df, out=indptr[1:])
        sink = _Sink(self.spill_dir, dtype, int(indptr[-1]), (dense_terms.shape[0], n_docs))
        try:
            slot = 0
            for t0, t1 in _blocks(df, _BLOCK_POSTINGS):
                terms, docs, tf = self._gather(t0, t1)
                weights = np.ascontiguousarray(weigh(terms, docs, tf.astype(np.float64)), dtype=dtype)
                keep = ~dense[terms]
                sink.postings(docs[keep], weights[keep])
                for term in dense_terms[(dense_terms >= t0) & (dense_terms < t1)].tolist():
                    row = np.zeros(n_docs, dtype=dtype)
                    lo, hi = np.searchsorted(terms, [term, term + 1])
                    row[docs[lo:hi]] = weights[lo:hi]
                    sink.row(slot, row)
                    slot += 1
            indices, data, rows = sink.finish(self.spill_dir)
        except BaseException:
            sink.close()
            raise
        self._drop_spill()
        return TermIndex(indptr, indices, data, n_docs, dtype=dtype, dense_terms=dense_terms, dense_rows=rows)

    def _gather(self, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Terms, passages and counts (int32 each) of the postings of terms ``[t0, t1)``, by term then passage."""
        terms, docs, tf = [], [], []
        for chunk in self._chunks:  # passage order: chunk after chunk
            stop = min(t1, chunk.n_terms)
            if stop <= t0:
                continue
            lo, hi = int(chunk.indptr[t0]), int(chunk.indptr[stop])
            terms.append(np.repeat(np.arange(t0, stop, dtype=np.int32), np.diff(chunk.indptr[t0 : stop + 1])))
            docs.append(chunk.part("docs", lo, hi))
            tf.append(chunk.part("tf", lo, hi))
        if not terms:
            return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int32)
        all_terms = np.concatenate(terms)
        order = np.argsort(all_terms, kind="stable")  # chunks are runs sorted by term: a k-way merge
        return all_terms[order], np.concatenate(docs)[order], np.concatenate(tf)[order]

    def _drop_spill(self) -> None:
        for chunk in self._chunks:
            for source in (chunk.docs, chunk.tf):
                if isinstance(source, Path):
                    source.unlink(missing_ok=True)
        self._chunks = []


def _blocks(df: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive term ranges of at most ``budget`` postings each (a single larger term gets its own)."""
    bounds = np.concatenate(([0], np.cumsum(df)))
    out, t0, n = [], 0, df.shape[0]
    while t0 < n:
        t1 = int(np.searchsorted(bounds, bounds[t0] + budget, side="right")) - 1
        t1 = min(n, max(t1, t0 + 1))
        out.append((t0, t1))
        t0 = t1
    return out


class _Sink:
    """Where the merged index goes: arrays in RAM, or ``.npy`` files written front to back (then mapped)."""

    def __init__(self, folder: Path | None, dtype: str, n_postings: int, rows_shape: tuple[int, int]) -> None:
        self.folder, self.dtype = folder, dtype
        self._files: dict[str, BinaryIO] = {}
        if folder is None:
            self.indices = np.empty(n_postings, dtype=np.int32)
            self.data = np.empty(n_postings, dtype=dtype)
            self.rows = np.zeros(rows_shape, dtype=dtype)
        else:
            self._files = {
                "indices": write_npy(folder / "indices.npy", np.int32, (n_postings,)),
                "data": write_npy(folder / "data.npy", dtype, (n_postings,)),
                "dense_rows": write_npy(folder / "dense_rows.npy", dtype, rows_shape),
            }
        self._filled = 0

    def postings(self, indices: np.ndarray, data: np.ndarray) -> None:
        if self.folder is None:
            end = self._filled + indices.shape[0]
            self.indices[self._filled : end] = indices
            self.data[self._filled : end] = data
        else:
            indices.tofile(self._files["indices"])
            data.tofile(self._files["data"])
        self._filled += indices.shape[0]

    def row(self, slot: int, row: np.ndarray) -> None:
        if self.folder is None:
            self.rows[slot] = row
        else:  # rows come in slot order
            row.tofile(self._files["dense_rows"])

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()

    def finish(self, folder: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if folder is None:
            return self.indices, self.data, self.rows
        self.close()
        return tuple(
            open_npy(folder / f"{name}.npy", mmap=True) for name in ("indices", "data", "dense_rows")
        )
