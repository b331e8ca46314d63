"""Optional numba kernel for the sparse scorers: score and select the top k of a batch of queries in one
compiled call (no dense score vector goes back to Python, no partition of a copy).

Imported only when numba is installed (``engine: auto`` or ``numba``).  Results are identical to the numpy
path: the same additions in the same order (``TermIndex``: sparse terms' postings, then dense rows), and the
same ranking rule (score, then lower passage index).  A query touching few passages ranks only those (and
resets them afterwards); the others all score the query's constant (0, or BM25+'s ``idf * delta`` sum) and
are only scanned, in index order, when they can still enter the top k.  Any other query (e.g. one with a
dense term) scans all passages once.
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


_SAMPLES = 1024  # scores sampled (at most; one in 8 passages for smaller corpora) to guess the k-th best,
_RUN = 16  # in evenly spaced runs of this many neighbours (2 cache lines, not 16: the scores are cold)
_CHUNK = 64  # passages counted at once (a fixed trip count, which compilers vectorise) against that guess


@njit(cache=True, nogil=True)
def _collect(scores, c, tau, cand_s, cand_i):  # pragma: no cover - compiled
    """The passages with ``scores + c >= tau`` into cand_s / cand_i (index order); their number, or -1 when
    more than fit."""
    n_docs = scores.shape[0]
    cap = cand_s.shape[0]
    n_cand = 0
    full = n_docs - n_docs % _CHUNK
    for lo in range(0, full, _CHUNK):
        hit = 0
        for j in range(_CHUNK):
            hit += scores[lo + j] + c >= tau
        if hit == 0:
            continue
        if n_cand + hit > cap:
            return -1
        for doc in range(lo, lo + _CHUNK):
            s = scores[doc] + c
            if s >= tau:
                cand_s[n_cand] = s
                cand_i[n_cand] = doc
                n_cand += 1
    for doc in range(full, n_docs):
        s = scores[doc] + c
        if s >= tau:
            if n_cand == cap:
                return -1
            cand_s[n_cand] = s
            cand_i[n_cand] = doc
            n_cand += 1
    return n_cand


@njit(cache=True, nogil=True)
def _dense_topk(scores, c, k, heap_s, heap_i, cand_s, cand_i, out_i, out_s):  # pragma: no cover - compiled
    """Top k of ``scores + c`` over all passages into out_i / out_s, best first (ties: lower index first).

    Offering every passage to a heap costs ~k * ln(n / k) sift-downs plus a scalar loop, which took half
    the kernel's time on 60k passages.  Instead, a guess ``tau`` of the k-th best score (a high quantile
    of a sample spread over the corpus) picks the candidates ``s >= tau`` in chunks counted with vector instructions.
    If there are at least k candidates, tau is at most the true k-th best score, so the top k (ties
    included) are all among them, in index order, and their top k is the answer.  Too few: a lower guess;
    too many (e.g. most scores tied): the heap over every passage.
    """
    n_docs = scores.shape[0]
    n_samples = min(_SAMPLES, n_docs // 8) // _RUN * _RUN
    if n_samples >= 64 and cand_s.shape[0] >= 2 * k:
        stride = n_docs // (n_samples // _RUN)
        sample = np.empty(n_samples)
        for q in range(n_samples // _RUN):
            for j in range(_RUN):
                sample[q * _RUN + j] = scores[q * stride + j] + c
        # Expect ~2.5k passages at or above the guess (n / n_samples per sampled rank); lower it on a miss.
        rank = max(4, (5 * k * n_samples) // (2 * n_docs) + 1)
        while rank <= n_samples:
            tau = np.partition(sample, n_samples - rank)[n_samples - rank]
            n_cand = _collect(scores, c, tau, cand_s, cand_i)
            if n_cand < 0:
                break
            if n_cand >= k:
                _select(cand_s, cand_i, n_cand, k, out_i, out_s)
                return
            rank *= 4
    # Index order: the first k fill the heap; after them an equal score never displaces an entry, so one
    # comparison rejects most passages.
    size = 0
    for doc in range(k):
        size = _offer(heap_s, heap_i, size, k, scores[doc] + c, doc)
    for doc in range(k, n_docs):
        s = scores[doc] + c
        if s > heap_s[0]:
            size = _offer(heap_s, heap_i, size, k, s, doc)
    _drain(heap_s, heap_i, size, out_i, out_s)


@njit(cache=True, nogil=True)
def _select(cand_s, cand_i, n_cand, k, out_i, out_s):  # pragma: no cover - compiled
    """The top k of n_cand >= k candidates (in index order) into out_i / out_s, best first."""
    kth = np.partition(cand_s[:n_cand], n_cand - k)[n_cand - k]
    above = 0
    for r in range(n_cand):
        if cand_s[r] > kth:
            above += 1
    ties = k - above  # keep the first (lowest-index) candidates scoring exactly kth
    kept = 0
    for r in range(n_cand):
        s = cand_s[r]
        if s > kth or (s == kth and ties > 0):
            if s == kth:
                ties -= 1
            cand_s[kept] = s
            cand_i[kept] = cand_i[r]
            kept += 1
    order = np.argsort(-cand_s[:k], kind="mergesort")  # stable: equal scores stay in index order
    for r in range(k):
        out_s[r] = cand_s[order[r]]
        out_i[r] = cand_i[order[r]]


@njit(cache=True, nogil=True)
def _drain(heap_s, heap_i, size, out_i, out_s):  # pragma: no cover - compiled
    """Pop the worst entry into the last free slot until the heap is empty: best first."""
    while size > 0:
        size -= 1
        out_s[size] = heap_s[0]
        out_i[size] = heap_i[0]
        heap_s[0] = heap_s[size]
        heap_i[0] = heap_i[size]
        _sift_down(heap_s, heap_i, size, 0)


@njit(cache=True, nogil=True)
def topk_batch(indptr, indices, data, dense_slot, dense_rows, q_offsets, q_terms, q_weights, q_constant, n_docs, k,
               out_i, out_s):  # pragma: no cover - compiled
    """For each query b: scores = sum_t w_t * row_t + constant_b, then its top k into out_i[b], out_s[b].

    ``data`` / ``dense_rows`` may be float32 or float64; scores add up in float64, as ``TermIndex.scores``
    does: the postings of the query's sparse terms, then its dense rows (``dense_slot[t] >= 0``), each in
    query order.
    """
    scores = np.zeros(n_docs)
    seen = np.zeros(n_docs, dtype=np.bool_)
    touched = np.empty(n_docs, dtype=np.int64)
    heap_s = np.empty(k)
    heap_i = np.empty(k, dtype=np.int64)
    cand_s = np.empty(min(n_docs, max(64 * k, 4096)))
    cand_i = np.empty(cand_s.shape[0], dtype=np.int64)
    for b in range(q_offsets.shape[0] - 1):
        postings = 0
        for t in range(q_offsets[b], q_offsets[b + 1]):
            term = q_terms[t]
            if dense_slot[term] >= 0:
                postings += n_docs
            else:
                postings += indptr[term + 1] - indptr[term]
        # Sparse queries track the passages they touch; dense ones (postings > n_docs / 8) scan them all.
        sparse = postings * 8 < n_docs
        n_touched = 0
        for t in range(q_offsets[b], q_offsets[b + 1]):
            term = q_terms[t]
            if dense_slot[term] >= 0:
                continue
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
        if not sparse:
            for t in range(q_offsets[b], q_offsets[b + 1]):
                slot = dense_slot[q_terms[t]]
                if slot < 0:
                    continue
                row = dense_rows[slot]
                w = q_weights[t]
                if w == 1.0:
                    for doc in range(n_docs):
                        scores[doc] += row[doc]
                else:
                    for doc in range(n_docs):
                        scores[doc] += row[doc] * w
        c = q_constant[b]
        if not sparse:
            _dense_topk(scores, c, k, heap_s, heap_i, cand_s, cand_i, out_i[b], out_s[b])
            scores[:] = 0.0
            continue
        size = 0
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
        _drain(heap_s, heap_i, size, out_i[b], out_s[b])
