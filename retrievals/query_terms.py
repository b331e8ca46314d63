"""Queries as the sparse engine scores them: distinct known term ids with their counts, and the warning for
queries that can match nothing."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["term_counts", "warn_empty_queries"]

log = logging.getLogger("retrievals.sparse")


def term_counts(
    vocab: Mapping[str, int], token_lists: Sequence[Sequence[str]]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query, the distinct known term ids and their counts (unknown tokens score 0 and are dropped)."""
    out = []
    get = vocab.get
    for tokens in token_lists:
        counts: dict[int, int] = {}
        for token in tokens:
            term = get(token)
            if term is not None:
                counts[term] = counts.get(term, 0) + 1
        size = len(counts)
        out.append((np.fromiter(counts, np.int64, size), np.fromiter(counts.values(), np.float64, size)))
    return out


def warn_empty_queries(
    no_tokens: list[int], unknown: list[int], queries: Sequence[str] | None, n: int, tokenizer: str
) -> None:
    """Say how many queries got no results because they had no tokens, or no token the index knows."""

    def show(idx: list[int]) -> str:
        return ", ".join(repr(queries[i]) if queries is not None else f"#{i}" for i in idx[:3])

    if no_tokens:
        log.warning(
            "%d of %d queries have no tokens under tokenizer %s (e.g. %s): they get no results",
            len(no_tokens),
            n,
            tokenizer,
            show(no_tokens),
        )
    if unknown:
        log.warning(
            "%d of %d queries share no token with the index vocabulary (e.g. %s): they get no results",
            len(unknown),
            n,
            show(unknown),
        )
