"""One MRC question as found in a file -> a validated :class:`core.records.MRCExample`.

``datamodules/mrc_formats.py`` finds the questions of a file (SQuAD nesting, KLUE / boostcamp records) as
:class:`RawRecord` values; this module checks each: id, texts, answers (SQuAD's list of objects or KLUE's
columns), offsets, Unicode normal forms (with an explanation when NFC and NFD text are mixed), unique ids.
"""

from __future__ import annotations

import numbers
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.errors import DataFormatError
from core.records import MRCAnswer, MRCExample

NormalForm = Literal["NFC", "NFD", "NFKC", "NFKD"]
NORMAL_FORMS = ("NFC", "NFD", "NFKC", "NFKD")
_ANSWERS_FIX = (
    'use [{"text": ..., "answer_start": ...}] (SQuAD) or {"text": [...], "answer_start": [...]} (KLUE)'
)
_NFC_FIX = (
    'normalise context, question and answer texts with unicodedata.normalize("NFC", ...) and recompute '
    'answer_start as len(unicodedata.normalize("NFC", context[:answer_start])), '
    'or let the loader do both: datamodule.normalize=NFC (load_mrc_examples(..., normalize="NFC"))'
)



@dataclass(frozen=True)
class RawRecord:
    """One question as found in the file, before validation; ``where`` locates it when it has no id."""

    index: int
    where: str | None
    fields: dict[str, Any]

    @property
    def label(self) -> str:
        """``#<index>`` plus location: used in errors until the record's id is known to be valid."""
        return f"#{self.index}" if self.where is None else f"#{self.index} ({self.where})"


# --------------------------------------------------------------------------------------------------
# Validating one record
# --------------------------------------------------------------------------------------------------


def build_example(
    src: Path, raw: RawRecord, *, require_answers: bool, normalize: NormalForm | None
) -> MRCExample:
    """Validate one raw record and convert it to an :class:`MRCExample`."""
    example_id = _require_id(src, raw)
    fields = raw.fields
    raw_context = _require_text(src, example_id, fields, "context")
    question = _require_text(src, example_id, fields, "question")
    title = _optional_str(src, example_id, fields, "title") or ""
    document_id = _optional_document_id(src, example_id, fields.get("document_id"))
    pairs = _answer_pairs(src, example_id, fields.get("answers"))
    if _is_impossible(src, example_id, fields.get("is_impossible")):
        pairs = []  # KLUE's plausible answers of impossible questions are not gold spans: label as CLS
    elif not pairs and require_answers:
        problem = "has no answers"
        fix = (
            "add answers, mark unanswerable questions with is_impossible=true, "
            "or load test files with require_answers=False"
        )
        raise DataFormatError(src, example_id, problem, fix)
    context = raw_context
    if normalize is not None:
        context = unicodedata.normalize(normalize, raw_context)
        question = unicodedata.normalize(normalize, question)
        title = unicodedata.normalize(normalize, title)
    answers = [
        _build_answer(src, example_id, i, raw_context, context, text, start, normalize)
        for i, (text, start) in enumerate(pairs)
    ]
    return MRCExample(
        id=example_id,
        title=title,
        context=context,
        question=question,
        answers=answers,
        document_id=document_id,
    )


def _require_id(src: Path, raw: RawRecord) -> str:
    """Ids join predictions to gold answers, so every record needs a non-empty one."""
    value = raw.fields.get("id")
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    problem = "has no 'id' (KLUE: 'guid')" if value is None else f"has an invalid id {value!r}"
    fix = "give every record a unique, non-empty string 'id'"
    raise DataFormatError(src, raw.label, problem, fix)


def _require_text(src: Path, example_id: str, fields: dict[str, Any], key: str) -> str:
    """``context`` and ``question`` must be non-blank strings: a blank one silently trains on nothing."""
    value = fields.get(key)
    if value is None:
        problem = f"has no '{key}'"
    elif not isinstance(value, str):
        problem = f"'{key}' is a {type(value).__name__}, expected a string"
    elif not value.strip():
        problem = f"'{key}' is empty or whitespace only"
    else:
        return value
    raise DataFormatError(
        src, example_id, problem, f"give the record a non-empty '{key}' string, or remove it"
    )


def _optional_str(src: Path, example_id: str, fields: dict[str, Any], key: str) -> str | None:
    """Optional text fields (title) may be missing or null, but not another type."""
    value = fields.get(key)
    if value is None or isinstance(value, str):
        return value
    problem = f"'{key}' is a {type(value).__name__}, expected a string"
    raise DataFormatError(src, example_id, problem, f"store '{key}' as a string or leave it out")


def _optional_document_id(src: Path, example_id: str, value: Any) -> str | None:
    """boostcamp stores int document ids; they are kept as strings so all formats agree."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(value)
    problem = f"'document_id' is {value!r}, expected a string or an integer"
    raise DataFormatError(
        src, example_id, problem, "store document_id as a string or integer, or leave it out"
    )


def _is_impossible(src: Path, example_id: str, value: Any) -> bool:
    """``is_impossible`` (SQuAD 2.0 / KLUE) must be a real boolean when present."""
    if value is None or isinstance(value, bool):
        return bool(value)
    problem = f"'is_impossible' is {value!r}, expected true or false"
    raise DataFormatError(src, example_id, problem, "store is_impossible as a JSON boolean")


def _answer_pairs(src: Path, example_id: str, answers: Any) -> list[tuple[Any, Any]]:
    """Accept both answer layouts and return unvalidated (text, answer_start) pairs."""
    if answers is None:
        return []
    if isinstance(answers, dict):
        return _pairs_from_columns(src, example_id, answers)
    if isinstance(answers, list):
        return [_pair_from_object(src, example_id, i, answer) for i, answer in enumerate(answers)]
    problem = f"'answers' is a {type(answers).__name__}, expected a list or an object"
    raise DataFormatError(src, example_id, problem, _ANSWERS_FIX)


def _pairs_from_columns(src: Path, example_id: str, answers: dict[str, Any]) -> list[tuple[Any, Any]]:
    """KLUE/HF layout: ``{"text": [...], "answer_start": [...]}`` (an empty dict means no answers)."""
    if not answers:
        return []
    texts, starts = answers.get("text"), answers.get("answer_start")
    if not isinstance(texts, list) or not isinstance(starts, list):
        problem = f"'answers' must hold a 'text' list and an 'answer_start' list, found {answers!r}"
        raise DataFormatError(src, example_id, problem, _ANSWERS_FIX)
    if len(texts) != len(starts):
        problem = f"'answers' has {len(texts)} texts but {len(starts)} answer_start values"
        raise DataFormatError(src, example_id, problem, "give every answer text exactly one answer_start")
    return list(zip(texts, starts, strict=True))


def _pair_from_object(src: Path, example_id: str, index: int, answer: Any) -> tuple[Any, Any]:
    """SQuAD layout: one ``{"text", "answer_start"}`` object per answer."""
    if isinstance(answer, dict) and "text" in answer and "answer_start" in answer:
        return answer["text"], answer["answer_start"]
    problem = f"answers[{index}] is {answer!r}, expected an object with 'text' and 'answer_start'"
    raise DataFormatError(src, example_id, problem, _ANSWERS_FIX)


def _build_answer(
    src: Path,
    example_id: str,
    index: int,
    raw_context: str,
    context: str,
    text: Any,
    start: Any,
    normalize: NormalForm | None,
) -> MRCAnswer:
    """Validate one span against the (possibly normalised) context; remap offsets when normalising."""
    name = f"answers[{index}]"
    if not isinstance(text, str) or not text.strip():
        problem = f"{name}.text is {text!r}, expected a non-empty string"
        raise DataFormatError(src, example_id, problem, "copy the answer text exactly from the context")
    if isinstance(start, bool) or not isinstance(start, numbers.Integral):
        problem = f"{name}.answer_start is {start!r} ({type(start).__name__}), expected an integer"
        fix = "store answer_start as an int: the 0-based character offset of the answer in the context"
        raise DataFormatError(src, example_id, problem, fix)
    start = int(start)
    if start < 0:
        problem = f"{name}.answer_start is negative ({start})"
        raise DataFormatError(
            src, example_id, problem, "answer_start is a 0-based character offset into the context"
        )
    if normalize is not None:
        text = unicodedata.normalize(normalize, text)
        start = _remap_start(raw_context, context, text, start, normalize)
    if context.startswith(text, start):
        return MRCAnswer(text=text, answer_start=start)
    problem, fix = _explain_mismatch(context, text, start, name)
    if normalize is not None:
        problem += f" (offsets refer to the {normalize}-normalised context)"
    raise DataFormatError(src, example_id, problem, fix)


def _remap_start(raw_context: str, context: str, text: str, start: int, form: NormalForm) -> int:
    """Map ``start`` into the normalised context.

    The offset normally counts characters of the stored context, so the prefix before it is
    normalised and measured; when the offset was computed on the normalised text already (e.g. an
    NFD copy of a file whose offsets were NFC), it is kept as is.
    """
    if raw_context == context:
        return start
    mapped = len(unicodedata.normalize(form, raw_context[:start]))
    return next((c for c in (mapped, start) if context.startswith(text, c)), mapped)


# --------------------------------------------------------------------------------------------------
# Explaining a span that does not match
# --------------------------------------------------------------------------------------------------


def _explain_mismatch(context: str, text: str, start: int, name: str) -> tuple[str, str]:
    """Say why ``text`` is not at ``start``: Unicode normalisation, a bad offset, or a foreign answer."""
    hint = _normalisation_hint(context, text, start, name)
    if hint is not None:
        return hint
    at = f"{name} {_short(text)} at answer_start={start}"
    if start >= len(context):
        problem = f"{at} is beyond the end of the context (length {len(context)})"
    elif start + len(text) > len(context):
        problem = f"{at} runs past the end of the context (length {len(context)})"
    else:
        problem = (
            f"{at} does not match the context, which reads {_short(context[start : start + len(text)])} there"
        )
    hits = _find_all(context, text)
    if not hits:
        problem += "; the text does not occur anywhere in the context"
        fix = "check that the answer belongs to this context and is copied exactly (spaces, punctuation)"
        return problem, fix
    nearest = _nearest(hits, start)
    problem += f"; the text occurs at offset {nearest} (nearest of {len(hits)} occurrence(s))"
    return problem, f"set answer_start to {nearest} (or to the offset of the intended occurrence)"


def _normalisation_hint(context: str, text: str, start: int, name: str) -> tuple[str, str] | None:
    """Return an NFC/NFD explanation when normalising both strings makes the answer appear."""
    nfc_context = unicodedata.normalize("NFC", context)
    nfc_text = unicodedata.normalize("NFC", text)
    if nfc_context == context and nfc_text == text:
        return None
    candidates = (len(unicodedata.normalize("NFC", context[:start])), start)
    matched = next((c for c in candidates if nfc_context.startswith(nfc_text, c)), None)
    nfc_hits = _find_all(nfc_context, nfc_text)
    if matched is None and (not nfc_hits or _find_all(context, text)):
        return None  # normalisation does not explain it: the offset or the text is simply wrong
    offset = matched if matched is not None else _nearest(nfc_hits, start)
    problem = (
        f"{name} {_short(text)} does not match the context at answer_start={start} because of Unicode "
        f"normalisation: the context is {_form(context)} but the answer text is {_form(text)}; "
        f"after NFC-normalising both, the answer is at offset {offset} of the NFC context"
    )
    if matched is None:
        problem += " (its nearest occurrence: answer_start is off as well)"
    return problem, _NFC_FIX


def _form(text: str) -> str:
    """Name the Unicode normal form a string is in, for error messages."""
    if unicodedata.is_normalized("NFC", text):
        return "NFC"
    if unicodedata.is_normalized("NFD", text):
        return "NFD (decomposed jamo)"
    return "a mix of NFC and NFD"


def _find_all(haystack: str, needle: str) -> list[int]:
    """All (possibly overlapping) offsets of ``needle`` in ``haystack``."""
    hits: list[int] = []
    position = haystack.find(needle)
    while position != -1:
        hits.append(position)
        position = haystack.find(needle, position + 1)
    return hits


def _nearest(offsets: list[int], start: int) -> int:
    """The offset closest to ``start`` (earlier wins ties)."""
    return min(offsets, key=lambda offset: (abs(offset - start), offset))


def _short(text: str, limit: int = 40) -> str:
    """repr() of a string, cut to ``limit`` characters so one message stays readable."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def check_unique_id(src: Path, example_id: str, index: int, first_index: dict[str, int]) -> None:
    """Duplicate ids make predictions ambiguous and silently overwrite each other in dict outputs."""
    if example_id in first_index:
        problem = f"duplicate id: records #{first_index[example_id]} and #{index} both use id {example_id!r}"
        fix = "ids must be unique: rename or drop one of the duplicates"
        raise DataFormatError(src, example_id, problem, fix)
    first_index[example_id] = index
