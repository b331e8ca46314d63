"""Sliding-window MRC features from a fast tokenizer's offsets, and their padding (their cache:
``datamodules/mrc_feature_cache.py``).

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

import contextlib
import gc
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "FEATURES_VERSION",
    "PER_TOKEN_KEYS",
    "DataCollatorForQA",
    "WindowTooSmallError",
    "build_eval_features",
    "build_train_features",
    "collate_qa",
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


def _backend(tokenizer: Any, truncation: Mapping[str, Any] | None = None) -> Any:
    """The Rust tokenizer, set up as ``tokenizer(...)`` sets it (transformers' ``set_truncation_and_padding``).

    Calling it directly reads ids, offsets and sequence ids off its ``Encoding`` objects: transformers would
    first copy every window into a dict of lists that this module then takes apart again.
    """
    backend = tokenizer.backend_tokenizer
    if truncation is None:
        if backend.truncation is not None:
            backend.no_truncation()
    else:
        target = {**truncation, "direction": tokenizer.truncation_side}
        current = backend.truncation
        if current is None or {key: current.get(key) for key in target} != target:
            backend.enable_truncation(**target)
    if backend.padding is not None:
        backend.no_padding()
    if backend.encode_special_tokens != tokenizer.split_special_tokens:
        backend.encode_special_tokens = tokenizer.split_special_tokens
    return backend


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
    encodings = _backend(tokenizer).encode_batch(questions, add_special_tokens=False)
    lengths = [len(encoding) for encoding in encodings]
    out = [
        question if length <= max_query_length else question[: encoding.offsets[max_query_length - 1][1]]
        for question, encoding, length in zip(questions, encodings, lengths, strict=True)
    ]
    return out, [min(length, max_query_length) for length in lengths]


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
) -> tuple[list[Any], list[int]]:
    """One batched call for a chunk: every window's ``tokenizers.Encoding`` (overflowing windows with offsets, no
    padding) and the chunk position of the example it came from."""
    questions, lengths = _truncate_questions([e["question"] for e in examples], tokenizer, max_query_length)
    _check_lengths(tokenizer, max_seq_length, doc_stride, lengths, [e.get("id") for e in examples])
    contexts = [e["context"] for e in examples]
    first, second = (contexts, questions) if _context_first(tokenizer) else (questions, contexts)
    strategy = "only_first" if _context_first(tokenizer) else "only_second"
    backend = _backend(tokenizer, {"max_length": max_seq_length, "stride": doc_stride, "strategy": strategy})
    windows, samples = [], []
    for sample, encoding in enumerate(backend.encode_batch(list(zip(first, second, strict=True)))):
        overflowing = encoding.overflowing
        windows.append(encoding)
        windows.extend(overflowing)
        samples.extend([sample] * (len(overflowing) + 1))
    return windows, samples


def _context_id(tokenizer: Any) -> int:
    return 0 if _context_first(tokenizer) else 1


def _cls_index(input_ids: list[int], cls_id: int | None) -> int:
    try:
        return input_ids.index(cls_id) if cls_id is not None else 0
    except ValueError:
        return 0


def _context_bounds(sequence_ids: list[int | None], context_id: int) -> tuple[int, int]:
    """``[lo, hi)`` of the window's context tokens (one contiguous run; ``lo == hi`` when there are none).

    List methods run in C, so no per-token Python loop is needed to find the run or build masks from it.
    """
    try:
        lo = sequence_ids.index(context_id)
    except ValueError:
        return 0, 0
    return lo, len(sequence_ids) - sequence_ids[::-1].index(context_id)


def _chunks(examples: Sequence[Example]) -> list[tuple[int, Sequence[Example]]]:
    return [(s, examples[s : s + _CHUNK]) for s in range(0, len(examples), _CHUNK)]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while the columns grow: they hold millions of small lists (offsets,
    masks) that no cycle can reach, and each collection would walk all of them again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _columns(keys: Sequence[str], tokenizer: Any) -> dict[str, list]:
    """The output columns, model inputs first (``token_type_ids`` when the model takes them, as
    transformers decides whether to return them)."""
    types = ["token_type_ids"] if "token_type_ids" in tokenizer.model_input_names else []
    return {key: [] for key in ("input_ids", "attention_mask", *types, *keys)}


def _append_inputs(table: dict[str, list], window: Any) -> None:
    table["input_ids"].append(window.ids)
    table["attention_mask"].append(window.attention_mask)
    if "token_type_ids" in table:
        table["token_type_ids"].append(window.type_ids)


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
    offsets: list[tuple[int, int]], lo: int, hi: int, span: tuple[int, int] | None
) -> tuple[int, int] | None:
    """Token indices of the answer inside context tokens ``[lo, hi)``, or ``None`` when it is not fully inside.

    Start: the last context token starting at or before the answer; end: the first one from there that
    reaches its end (scans from the ends that stop early, not over every token).
    """
    if span is None or lo == hi:
        return None
    start_char, end_char = span
    if not (offsets[lo][0] <= start_char and offsets[hi - 1][1] >= end_char):
        return None
    start = next(i for i in range(hi - 1, lo - 1, -1) if offsets[i][0] <= start_char)
    end = next(i for i in range(start, hi) if offsets[i][1] >= end_char)
    return start, end


def build_train_features(
    examples: Sequence[Example],
    tokenizer: Any,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
) -> dict[str, list]:
    """Windows labelled with answer token positions; windows without the whole answer point at CLS."""
    keys = ("start_positions", "end_positions", "context_mask", "example_index")
    if not examples:
        return {k: [] for k in ("input_ids", "attention_mask", *keys)}
    table = _columns(keys, tokenizer)
    starts, ends, masks = table["start_positions"], table["end_positions"], table["context_mask"]
    context_id, cls_id = _context_id(tokenizer), tokenizer.cls_token_id
    with _gc_paused():
        for base, chunk in _chunks(examples):
            windows, samples = _tokenize_windows(chunk, tokenizer, max_seq_length, doc_stride, max_query_length)
            spans = [answer_char_span(example) for example in chunk]
            for window, sample in zip(windows, samples, strict=True):
                _append_inputs(table, window)
                sequence_ids = window.sequence_ids
                lo, hi = _context_bounds(sequence_ids, context_id)
                span = spans[sample]
                label = None if span is None else _label_window(window.offsets, lo, hi, span)
                if label is None:
                    cls = _cls_index(table["input_ids"][-1], cls_id)
                    label = (cls, cls)
                starts.append(label[0])
                ends.append(label[1])
                # where a span may start or end (a shared-normalisation loss normalises over these tokens only)
                masks.append([0] * lo + [1] * (hi - lo) + [0] * (len(sequence_ids) - hi))
            table["example_index"].extend([base + sample for sample in samples])
    return table


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
    keys = ("context_mask", "offset_mapping", "example_index", "feature_index")
    if not examples:
        return {k: [] for k in ("input_ids", "attention_mask", *keys)}
    table = _columns(keys, tokenizer)
    masks, offsets = table["context_mask"], table["offset_mapping"]
    context_id = _context_id(tokenizer)
    with _gc_paused():
        for base, chunk in _chunks(examples):
            windows, samples = _tokenize_windows(chunk, tokenizer, max_seq_length, doc_stride, max_query_length)
            for window in windows:
                _append_inputs(table, window)
                sequence_ids = window.sequence_ids
                lo, hi = _context_bounds(sequence_ids, context_id)
                after = len(sequence_ids) - hi
                masks.append([0] * lo + [1] * (hi - lo) + [0] * after)
                context = list(map(list, window.offsets[lo:hi]))
                offsets.append([NULL_OFFSET] * lo + context + [NULL_OFFSET] * after)
            table["example_index"].extend([base + sample for sample in samples])
    table["feature_index"] = list(range(len(table["example_index"])))
    return table


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
