"""Span decoding for extractive QA: per-feature top-k logits -> answer text per example.

The algorithm is Hugging Face ``utils_qa.postprocess_qa_predictions`` (SQuAD v1: best start x end pair
over all windows of an example, ``end >= start``, at most ``max_answer_length`` tokens, score = start logit +
end logit, n-best with softmax probabilities), split in two so that only fixed-size tensors cross the
validation loop:

* :func:`topk_candidates` runs on the device each step and keeps the top-k starts and ends of each feature,
  after masking every non-context token to ``-inf``. Masking *before* the top-k is the point: frameworks that
  masked afterwards (or never) let question tokens, whose offsets point into the *question* string, win the
  top-k and be decoded as garbage slices of the context.
* :func:`decode_predictions` runs once per epoch on the gathered candidates, tolerating partial validation and
  the duplicated samples a distributed sampler adds.

An optional null answer (SQuAD v2 style) is supported: pass ``null_scores`` (CLS start + end logit per row, see
:func:`null_scores`) and an example whose minimum null score beats its best span by ``null_score_diff_threshold``
gets ``""``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["decode_predictions", "null_scores", "null_scores_at", "topk_candidates"]

ArrayLike = Tensor | Sequence[Any]


def topk_candidates(
    start_logits: Tensor, end_logits: Tensor, context_mask: Tensor, k: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top-k context-only starts and ends per feature: ``(start_idx, start_val, end_idx, end_val)``, each ``(B, k)``.

    Always ``k`` columns, whatever the batch's padded length, so states stack and gather across processes;
    slots beyond a feature's context tokens hold index ``-1`` and value ``-inf``.
    """
    if k < 1:
        raise ValueError(f"n_best_size (k) must be at least 1, got {k}.")
    mask = context_mask.to(device=start_logits.device, dtype=torch.bool)
    return (*_masked_topk(start_logits, mask, k), *_masked_topk(end_logits, mask, k))


def _masked_topk(logits: Tensor, mask: Tensor, k: int) -> tuple[Tensor, Tensor]:
    logits = logits.detach().float().masked_fill(~mask, float("-inf"))
    values, index = logits.topk(min(k, logits.size(-1)), dim=-1)
    index = index.masked_fill(torch.isneginf(values), -1)
    missing = k - values.size(-1)
    if missing > 0:
        values = torch.nn.functional.pad(values, (0, missing), value=float("-inf"))
        index = torch.nn.functional.pad(index, (0, missing), value=-1)
    return index, values


def null_scores(start_logits: Tensor, end_logits: Tensor, cls_index: int = 0) -> Tensor:
    """Score of the empty answer per feature (CLS start + CLS end), for the optional null option."""
    return (start_logits[:, cls_index] + end_logits[:, cls_index]).detach().float()


def null_scores_at(start_logits: Tensor, end_logits: Tensor, position: Tensor) -> Tensor:
    """Score of the empty answer per feature at its own CLS ``position`` (start + end logit there)."""
    index = position.long()[:, None]
    return (start_logits.gather(1, index) + end_logits.gather(1, index))[:, 0].detach().float()


# ----------------------------------------------------------------------------- decoding


def _to_list(value: ArrayLike) -> list[Any]:
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _unique_rows(feature_index: list[int], n_features: int) -> dict[int, int]:
    """First row per feature: DDP's sampler repeats samples to even out ranks."""
    rows: dict[int, int] = {}
    for row, feature in enumerate(feature_index):
        if not 0 <= feature < n_features:
            raise ValueError(
                f"feature_index {feature} is outside the eval feature table (size {n_features})."
            )
        rows.setdefault(feature, row)
    return rows


def _row_pairs(
    start_idx: Tensor,
    start_val: Tensor,
    end_idx: Tensor,
    end_val: Tensor,
    n_best_size: int,
    max_answer_length: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Best ``n_best_size`` (start, end) pairs of every row at once: (scores, starts, ends), each ``(R, n)``.

    The overall n-best of an example is contained in the union of its rows' n-best, so nothing is lost.
    """
    k = start_idx.size(1)
    scores = start_val[:, :, None] + end_val[:, None, :]
    length = end_idx[:, None, :] - start_idx[:, :, None]
    valid = (start_idx >= 0)[:, :, None] & (end_idx >= 0)[:, None, :] & (length >= 0)
    valid &= (length < max_answer_length) & torch.isfinite(scores)
    scores = scores.masked_fill(~valid, float("-inf")).flatten(1)
    best, flat = scores.topk(min(n_best_size, k * k), dim=-1)
    starts = start_idx.gather(1, torch.div(flat, k, rounding_mode="floor"))
    ends = end_idx.gather(1, flat % k)
    return best, starts, ends


def softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def _span_entries(
    row: int,
    feature: int,
    pairs: tuple[list[list[float]], list[list[int]], list[list[int]]],
    starts_val: dict[tuple[int, int], float],
    ends_val: dict[tuple[int, int], float],
    offsets: list[list[int]],
    context: str,
) -> list[dict[str, Any]]:
    """Candidate dicts of one feature, skipping pairs whose offsets are not context."""
    scores, starts, ends = (p[row] for p in pairs)
    entries = []
    for score, s, e in zip(scores, starts, ends, strict=True):
        if not math.isfinite(score):
            continue
        char_start, char_end = offsets[s][0], offsets[e][1]
        if char_start < 0 or char_end < 0 or char_end <= char_start:
            continue
        entries.append(
            {
                "text": context[char_start:char_end],
                "start_logit": starts_val[(row, s)],
                "end_logit": ends_val[(row, e)],
                "score": score,
                "offsets": [char_start, char_end],
                "feature_index": feature,
            }
        )
    return entries


def _value_lookup(index: Tensor, values: Tensor) -> dict[tuple[int, int], float]:
    lookup: dict[tuple[int, int], float] = {}
    for row, (idx_row, val_row) in enumerate(zip(index.tolist(), values.tolist(), strict=True)):
        for i, v in zip(idx_row, val_row, strict=True):
            if i >= 0:
                lookup.setdefault((row, i), v)
    return lookup


def decode_predictions(
    examples: Sequence[Mapping[str, Any]],
    example_index: ArrayLike,
    offset_mapping: Sequence[Sequence[Sequence[int]]],
    feature_index: ArrayLike | None,
    start_idx: Tensor,
    start_val: Tensor,
    end_idx: Tensor,
    end_val: Tensor,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    *,
    null_scores: ArrayLike | None = None,
    null_score_diff_threshold: float = 0.0,
) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]]]:
    """Answer text and n-best list for every example that has at least one decoded feature.

    ``example_index`` and ``offset_mapping`` are the whole eval feature table (one entry per feature);
    ``feature_index`` says which feature each candidate row belongs to (``None``: row ``i`` is feature ``i``).
    Rows may cover only some features (partial validation) or repeat one (DDP padding): repeats are dropped.
    """
    start_idx, end_idx = torch.as_tensor(start_idx).long().cpu(), torch.as_tensor(end_idx).long().cpu()
    start_val, end_val = torch.as_tensor(start_val).float().cpu(), torch.as_tensor(end_val).float().cpu()
    example_index = _to_list(example_index)
    rows_features = list(range(start_idx.size(0))) if feature_index is None else _to_list(feature_index)
    if len(rows_features) != start_idx.size(0):
        raise ValueError(f"{len(rows_features)} feature indices for {start_idx.size(0)} candidate rows.")
    rows = _unique_rows(rows_features, len(example_index))
    pairs = tuple(
        t.tolist() for t in _row_pairs(start_idx, start_val, end_idx, end_val, n_best_size, max_answer_length)
    )
    starts_val, ends_val = _value_lookup(start_idx, start_val), _value_lookup(end_idx, end_val)
    nulls = _to_list(null_scores) if null_scores is not None else None

    per_example: dict[int, list[dict[str, Any]]] = {}
    min_null: dict[int, float] = {}
    for feature, row in sorted(rows.items()):
        ex = example_index[feature]
        context = examples[ex]["context"]
        entries = _span_entries(row, feature, pairs, starts_val, ends_val, offset_mapping[feature], context)
        per_example.setdefault(ex, []).extend(entries)
        if nulls is not None:
            min_null[ex] = min(min_null.get(ex, math.inf), float(nulls[row]))

    predictions: dict[str, str] = {}
    nbest: dict[str, list[dict[str, Any]]] = {}
    for ex, entries in sorted(per_example.items()):
        key = examples[ex]["id"]
        predictions[key], nbest[key] = _choose(
            entries, n_best_size, min_null.get(ex), null_score_diff_threshold
        )
    return predictions, nbest


def _choose(
    entries: list[dict[str, Any]], n_best_size: int, null: float | None, threshold: float
) -> tuple[str, list[dict[str, Any]]]:
    """Keep the n best, add probabilities, and apply the null option when asked."""
    entries = sorted(
        entries, key=lambda c: (-c["score"], c["feature_index"], c["offsets"][0], c["offsets"][1])
    )
    kept = entries[:n_best_size]
    best = kept[0] if kept else None
    if null is not None:
        kept.append(
            {
                "text": "",
                "start_logit": None,
                "end_logit": None,
                "score": null,
                "offsets": [0, 0],
                "feature_index": -1,
            }
        )
        kept.sort(key=lambda c: -c["score"])
    for entry, probability in zip(kept, softmax([c["score"] for c in kept]) if kept else [], strict=True):
        entry["probability"] = probability
    if best is None or (null is not None and null - best["score"] > threshold):
        return "", kept
    return best["text"], kept
