"""Sliding-window MRC features from a fast tokenizer's offsets, and their padding and caching.

The algorithm is Hugging Face ``run_qa.py``'s ``prepare_train_features`` / ``prepare_validation_features``
(question + context pair, ``truncation="only_second"``, overflowing windows that overlap by ``doc_stride``
tokens, labels found from ``offset_mapping``), rewritten for the transformers 5.x API (the tokenizer is called
directly) and with three deliberate differences:

* questions are cut to ``max_query_length`` tokens *before* pairing (as the original BERT SQuAD code did), so a
  long question can never eat the context window;
* the answer labelling only walks context tokens, so an answer in the last context token cannot be labelled on
  the trailing ``[SEP]`` (HF's ``while offsets[i][0] <= start_char`` loop runs into ``(0, 0)`` special offsets);
* eval features mark every non-context token with offset ``[-1, -1]`` and ``context_mask = 0`` (HF uses ``None``,
  which Arrow cannot store in an int column and which the decoder then forgets to mask).

No padding happens here: :func:`collate_qa` pads each batch to its own longest feature.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, load_from_disk

from core.cache import build_once, publish_directory

__all__ = [
    "FEATURES_VERSION",
    "PER_TOKEN_KEYS",
    "DataCollatorForQA",
    "WindowTooSmallError",
    "build_eval_features",
    "build_train_features",
    "cached_features",
    "collate_qa",
    "features_fingerprint",
]

# Bump when the feature algorithm changes so that old caches are not reused.
FEATURES_VERSION = 2  # 2: train features carry context_mask
# Keys holding one value per token; everything else in a feature is one scalar per feature.
PER_TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids", "context_mask", "special_tokens_mask")
# Kept in the datamodule's feature table for decoding, never sent to the model.
TABLE_ONLY_KEYS = ("offset_mapping",)
NULL_OFFSET = [-1, -1]
_CHUNK = 1000  # examples tokenised per call: bounded memory on KorQuAD-sized sets

Example = Mapping[str, Any]
Builder = Callable[..., dict[str, list]]


# ----------------------------------------------------------------------------- shared tokenisation


def _context_first(tokenizer: Any) -> bool:
    """HF puts the context first for left-padding models (XLNet-style), so truncation stays on the context."""
    return getattr(tokenizer, "padding_side", "right") == "left"


def _truncate_questions(
    questions: list[str], tokenizer: Any, max_query_length: int
) -> tuple[list[str], list[int]]:
    """Strip leading whitespace (it can make a window overflow, as HF notes) and keep the first tokens.

    Returns the cut questions and their token lengths.

    Cutting the *text* at the end offset of token ``max_query_length`` keeps the pair call a plain
    text-pair call, so offsets of the context are untouched.
    """
    if max_query_length < 1:
        raise ValueError(f"max_query_length={max_query_length} must be at least 1.")
    questions = [q.lstrip() for q in questions]
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for question, offsets in zip(questions, enc["offset_mapping"], strict=True):
        if len(offsets) > max_query_length:
            question = question[: offsets[max_query_length - 1][1]]
        out.append(question)
    return out, [min(len(o), max_query_length) for o in enc["offset_mapping"]]


class WindowTooSmallError(ValueError):
    """A question leaves a window no room for its context; ``record`` is its id, so a loader can name the file."""

    def __init__(self, record: str | None, problem: str, fix: str) -> None:
        self.record, self.problem, self.fix = record, problem, fix
        super().__init__(record, problem, fix)  # every field: picklable across loader workers

    def __str__(self) -> str:
        where = "" if self.record is None else f"record {self.record}: "
        return f"{where}{self.problem} Fix: {self.fix}"


def _check_lengths(
    tokenizer: Any,
    max_seq_length: int,
    doc_stride: int,
    question_lengths: list[int],
    ids: Sequence[str | None] | None = None,
) -> None:
    """Fail with a fix instead of the tokenizers Rust panic (``stride must be strictly less than max_len``)."""
    if doc_stride < 0 or max_seq_length <= 0:
        raise ValueError(f"max_seq_length={max_seq_length} and doc_stride={doc_stride} must be positive.")
    if not question_lengths:
        return
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    longest = max(question_lengths)
    room = max_seq_length - specials - longest
    if room <= doc_stride:
        record = ids[question_lengths.index(longest)] if ids else None
        raise WindowTooSmallError(
            None if record is None else str(record),
            f"max_seq_length={max_seq_length} leaves {max(room, 0)} context tokens per window after the longest "
            f"question ({longest} tokens, cut to max_query_length) and {specials} special tokens, but "
            f"doc_stride={doc_stride} needs at least {doc_stride + 1}.",
            f"raise max_seq_length to >= {specials + longest + doc_stride + 1}, "
            + (f"lower doc_stride below {room}, " if room > 1 else "")
            + f"or lower max_query_length below {max_seq_length - specials - doc_stride} (questions are cut to it).",
        )


def _tokenize_windows(
    examples: Sequence[Example], tokenizer: Any, max_seq_length: int, doc_stride: int, max_query_length: int
) -> Any:
    """One tokenizer call for a chunk: overflowing windows with offsets, no padding."""
    questions, lengths = _truncate_questions([e["question"] for e in examples], tokenizer, max_query_length)
    _check_lengths(tokenizer, max_seq_length, doc_stride, lengths, [e.get("id") for e in examples])
    contexts = [e["context"] for e in examples]
    first, second = (contexts, questions) if _context_first(tokenizer) else (questions, contexts)
    return tokenizer(
        first,
        second,
        truncation="only_first" if _context_first(tokenizer) else "only_second",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )


def _context_id(tokenizer: Any) -> int:
    return 0 if _context_first(tokenizer) else 1


def _cls_index(input_ids: list[int], tokenizer: Any) -> int:
    cls_id = tokenizer.cls_token_id
    return input_ids.index(cls_id) if cls_id is not None and cls_id in input_ids else 0


def _model_inputs(enc: Any, i: int) -> dict[str, list[int]]:
    out = {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i]}
    if "token_type_ids" in enc:
        out["token_type_ids"] = enc["token_type_ids"][i]
    return out


def _chunks(examples: Sequence[Example]) -> list[tuple[int, Sequence[Example]]]:
    return [(s, examples[s : s + _CHUNK]) for s in range(0, len(examples), _CHUNK)]


def _append(table: dict[str, list], row: dict[str, Any]) -> None:
    for key, value in row.items():
        table.setdefault(key, []).append(value)


# ----------------------------------------------------------------------------- train features


def answer_char_span(example: Example) -> tuple[int, int] | None:
    """First gold answer as ``[start, end)`` characters, whitespace trimmed; ``None`` if unanswerable.

    Trimming matters: an answer text with a leading space would otherwise start on the previous token.
    """
    answers = example.get("answers") or []
    if not answers:
        return None
    text, start = answers[0]["text"], int(answers[0]["answer_start"])
    stripped = text.lstrip()
    start += len(text) - len(stripped)
    stripped = stripped.rstrip()
    if not stripped:
        return None
    return start, start + len(stripped)


def _label_window(
    offsets: list[tuple[int, int]],
    sequence_ids: list[int | None],
    context_id: int,
    span: tuple[int, int] | None,
) -> tuple[int, int] | None:
    """Token indices of the answer inside this window, or ``None`` when it is not fully inside."""
    if span is None:
        return None
    ctx = [i for i, s in enumerate(sequence_ids) if s == context_id]
    if not ctx:
        return None
    start_char, end_char = span
    if not (offsets[ctx[0]][0] <= start_char and offsets[ctx[-1]][1] >= end_char):
        return None
    start = max(i for i in ctx if offsets[i][0] <= start_char)
    end = next(i for i in ctx if i >= start and offsets[i][1] >= end_char)
    return start, end


def build_train_features(
    examples: Sequence[Example],
    tokenizer: Any,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
) -> dict[str, list]:
    """Windows labelled with answer token positions; windows without the whole answer point at CLS."""
    table: dict[str, list] = {}
    context_id = _context_id(tokenizer)
    for base, chunk in _chunks(examples):
        enc = _tokenize_windows(chunk, tokenizer, max_seq_length, doc_stride, max_query_length)
        for i, sample in enumerate(enc["overflow_to_sample_mapping"]):
            row: dict[str, Any] = _model_inputs(enc, i)
            span = answer_char_span(chunk[sample])
            label = _label_window(enc["offset_mapping"][i], enc.sequence_ids(i), context_id, span)
            cls = _cls_index(row["input_ids"], tokenizer)
            row["start_positions"], row["end_positions"] = label if label is not None else (cls, cls)
            # where a span may start or end (a shared-normalisation loss normalises over these tokens only)
            row["context_mask"] = [int(s == context_id) for s in enc.sequence_ids(i)]
            row["example_index"] = base + sample
            _append(table, row)
    return table or {
        k: []
        for k in ("input_ids", "attention_mask", "start_positions", "end_positions", "context_mask", "example_index")
    }


# ----------------------------------------------------------------------------- eval features


def build_eval_features(
    examples: Sequence[Example],
    tokenizer: Any,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
) -> dict[str, list]:
    """Windows with per-token context offsets (``[-1, -1]`` elsewhere) for span decoding.

    ``feature_index`` is the row's own position: the model passes it through so predictions gathered
    from several processes (where the sampler pads with duplicates) can be matched and deduplicated.
    """
    table: dict[str, list] = {}
    context_id = _context_id(tokenizer)
    for base, chunk in _chunks(examples):
        enc = _tokenize_windows(chunk, tokenizer, max_seq_length, doc_stride, max_query_length)
        for i, sample in enumerate(enc["overflow_to_sample_mapping"]):
            row: dict[str, Any] = _model_inputs(enc, i)
            is_ctx = [s == context_id for s in enc.sequence_ids(i)]
            row["context_mask"] = [int(c) for c in is_ctx]
            row["offset_mapping"] = [
                list(o) if c else NULL_OFFSET for o, c in zip(enc["offset_mapping"][i], is_ctx, strict=True)
            ]
            row["example_index"] = base + sample
            row["feature_index"] = len(table.get("example_index", []))
            _append(table, row)
    empty = (
        "input_ids",
        "attention_mask",
        "context_mask",
        "offset_mapping",
        "example_index",
        "feature_index",
    )
    return table or {k: [] for k in empty}


# ----------------------------------------------------------------------------- collation


def _as_list(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else value


def collate_qa(
    features: Sequence[Mapping[str, Any]],
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
    padding_side: str = "right",
) -> dict[str, torch.Tensor]:
    """Pad per-token keys to the batch's longest feature; stack scalars; leave ``offset_mapping`` out.

    Dynamic padding keeps short windows (the last window of each context) from costing a full
    ``max_seq_length`` of compute.
    """
    if not features:
        raise ValueError("collate_qa got an empty batch.")
    keys = [k for k in features[0] if k not in TABLE_ONLY_KEYS]
    longest = max(len(f["input_ids"]) for f in features)
    if pad_to_multiple_of:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    batch: dict[str, torch.Tensor] = {}
    for key in keys:
        values = [_as_list(f[key]) for f in features]
        if key in PER_TOKEN_KEYS:
            fill = pad_token_id if key == "input_ids" else 0
            batch[key] = torch.tensor(
                [_pad(v, longest, fill, padding_side) for v in values], dtype=torch.long
            )
        else:
            batch[key] = torch.tensor(values)
    return batch


def _pad(values: list[int], length: int, fill: int, side: str) -> list[int]:
    padding = [fill] * (length - len(values))
    return padding + list(values) if side == "left" else list(values) + padding


@dataclass
class DataCollatorForQA:
    """Picklable collator for DataLoader workers (a lambda or a closure would not be)."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    padding_side: str = "right"

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        return collate_qa(features, self.pad_token_id, self.pad_to_multiple_of, self.padding_side)


# ----------------------------------------------------------------------------- cache


def _tokenizer_state(tokenizer: Any) -> str:
    """The tokenizer's definition without its call state: a fast tokenizer records the truncation and
    padding of its last call in the backend, which would change the key between identical runs."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    state.pop("truncation", None)
    state.pop("padding", None)
    return json.dumps(state, sort_keys=True, ensure_ascii=False)


def features_fingerprint(
    builder: Builder, examples: Sequence[Example], tokenizer: Any, settings: Mapping[str, Any]
) -> str:
    """Everything that changes the features: data, tokenizer (vocab, normaliser, ...), side, settings, code."""
    digest = hashlib.sha256()
    parts = [
        json.dumps(list(examples), sort_keys=True, ensure_ascii=False, default=str),
        _tokenizer_state(tokenizer),
        str(getattr(tokenizer, "padding_side", "right")),
        json.dumps(dict(settings), sort_keys=True, default=str),
        f"{builder.__module__}.{builder.__qualname__}",
        str(FEATURES_VERSION),
    ]
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def cached_features(
    builder: Builder,
    examples: Sequence[Example],
    tokenizer: Any,
    cache_dir: str | Path | None,
    **settings: Any,
) -> Dataset:
    """Build features once per (data, tokenizer, settings) and reload them with ``load_from_disk``.

    Arrow on disk rather than pickle: safe to load and memory-mapped. The table is written to a temporary
    directory and renamed into place, so an interrupted run leaves no half-written cache behind; concurrent runs
    build it once (``core.cache``).
    """
    if cache_dir is None:
        return Dataset.from_dict(builder(examples, tokenizer, **settings))
    final = Path(cache_dir) / "features" / features_fingerprint(builder, examples, tokenizer, settings)

    def build() -> Dataset:
        table = Dataset.from_dict(builder(examples, tokenizer, **settings))
        publish_directory(lambda tmp: table.save_to_disk(str(tmp)), final)
        return load_from_disk(str(final))

    return build_once(final, (final / "dataset_info.json").exists, build, lambda: load_from_disk(str(final)))
