"""Optional numba kernel for the sparse scorers: score and select the top k of a batch of queries in one
compiled call (no dense score vector goes back to Python, no partition of a copy).

Imported only when numba is installed (``engine: auto`` or ``numba``).  Results are identical to the numpy
path: the same additions in the same order, and the same ranking rule (score, then lower passage index).
Only the passages a query touches are ranked (and reset afterwards); the others all score the query's
constant (0, or BM25+'s ``idf * delta`` sum) and are only scanned, in index order, when they can still
enter the top k.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _worse(s_a, i_a, s_b, i_b):  # pragma: no cover - compiled
    """Is entry a ranked below entry b (lower score, or equal score and higher passage index)?"""
    return s_a < s_b or (s_a == s_b and i_a > i_b)


@njit(cache=True, nogil=True, inline="always")
def _offer(heap_s, heap_i, size, k, s, i):  # pragma: no cover - compiled
    """Offer (s, i) to a min-heap (root = worst kept entry) of capacity k; returns the new size."""
    if size < k:
        pos = size
        heap_s[pos] = s
        heap_i[pos] = i
        while pos > 0:
            parent = (pos - 1) // 2
            if _worse(heap_s[pos], heap_i[pos], heap_s[parent], heap_i[parent]):
                heap_s[pos], heap_s[parent] = heap_s[parent], heap_s[pos]
                heap_i[pos], heap_i[parent] = heap_i[parent], heap_i[pos]
                pos = parent
            else:
                break
        return size + 1
    if not _worse(heap_s[0], heap_i[0], s, i):
        return size
    heap_s[0] = s
    heap_i[0] = i
    _sift_down(heap_s, heap_i, size, 0)
    return size


@njit(cache=True, nogil=True, inline="always")
def _sift_down(heap_s, heap_i, size, pos):  # pragma: no cover - compiled
    while True:
        left = 2 * pos + 1
        if left >= size:
            break
        child = left
        right = left + 1
        if right < size and _worse(heap_s[right], heap_i[right], heap_s[left], heap_i[left]):
            child = right
        if _worse(heap_s[child], heap_i[child], heap_s[pos], heap_i[pos]):
            heap_s[pos], heap_s[child] = heap_s[child], heap_s[pos]
            heap_i[pos], heap_i[child] = heap_i[child], heap_i[pos]
            pos = child
        else:
            break


@njit(cache=True, nogil=True)
def topk_batch(indptr, indices, data, q_offsets, q_terms, q_weights, q_constant, n_docs, k, out_i, out_s):
    """For each query b: scores = sum_t w_t * row_t + constant_b, then its top k into out_i[b], out_s[b]."""
    scores = np.zeros(n_docs)
    seen = np.zeros(n_docs, dtype=np.bool_)
    touched = np.empty(n_docs, dtype=np.int64)
    heap_s = np.empty(k)
    heap_i = np.empty(k, dtype=np.int64)
    for b in range(q_offsets.shape[0] - 1):
        postings = 0
        for t in range(q_offsets[b], q_offsets[b + 1]):
            postings += indptr[q_terms[t] + 1] - indptr[q_terms[t]]
        # Sparse queries track the passages they touch; dense ones (postings > n_docs / 8) scan them all.
        sparse = postings * 8 < n_docs
        n_touched = 0
        for t in range(q_offsets[b], q_offsets[b + 1]):
            term = q_terms[t]
            w = q_weights[t]
            start, end = indptr[term], indptr[term + 1]
            if sparse:
                for j in range(start, end):
                    doc = indices[j]
                    if not seen[doc]:
                        seen[doc] = True
                        touched[n_touched] = doc
                        n_touched += 1
                    scores[doc] += data[j] * w
            elif w == 1.0:
                for j in range(start, end):
                    scores[indices[j]] += data[j]
            else:
                for j in range(start, end):
                    scores[indices[j]] += data[j] * w
        c = q_constant[b]
        size = 0
        if sparse:
            for r in range(n_touched):
                doc = touched[r]
                s = scores[doc] + c
                if size < k or s > heap_s[0] or (s == heap_s[0] and doc < heap_i[0]):
                    size = _offer(heap_s, heap_i, size, k, s, doc)
            if size < k or not heap_s[0] > c:
                # Untouched passages (score c) can still enter: scan them in index order, stop when none can.
                for doc in range(n_docs):
                    if seen[doc]:
                        continue
                    if size == k and not _worse(heap_s[0], heap_i[0], c, doc):
                        break
                    size = _offer(heap_s, heap_i, size, k, c, doc)
            for r in range(n_touched):
                doc = touched[r]
                scores[doc] = 0.0
                seen[doc] = False
        else:
            # Index order: an equal score never displaces an entry, so one comparison rejects most passages.
            for doc in range(n_docs):
                s = scores[doc] + c
                if size < k or s > heap_s[0]:
                    size = _offer(heap_s, heap_i, size, k, s, doc)
                scores[doc] = 0.0
        # Pop the worst entry into the last free slot until the heap is empty: best first.
        while size > 0:
            size -= 1
            out_s[b, size] = heap_s[0]
            out_i[b, size] = heap_i[0]
            heap_s[0] = heap_s[size]
            heap_i[0] = heap_i[size]
            _sift_down(heap_s, heap_i, size, 0)
