"""Read every supported MRC input format into one validated record type.

Models, metrics and retrievers only ever see :class:`MRCExample` dicts, so format quirks (SQuAD
nesting, KLUE's dict-of-lists answers, ``save_to_disk`` directories, NFD text produced by macOS
tooling) are resolved and checked here, once, with errors that name the file, the record and the fix.

Supported inputs (detected automatically):

* SQuAD v1.1 / KorQuAD 1.0 JSON: ``{"version", "data": [{"title", "paragraphs": [{"context", "qas"}]}]}``
  (qa ids may be ``id`` or KLUE's ``guid``; ``document_id`` may sit on the paragraph or the article).
* KLUE-MRC / boostcamp flat records, as a JSON list, ``{"data": [...]}`` or JSON Lines, with answers
  either ``{"answer_start": [...], "text": [...]}`` or ``[{"text", "answer_start"}]``.
* ``datasets`` ``save_to_disk`` directories (a Dataset, or a DatasetDict plus ``split``).
"""

from __future__ import annotations

import json
import numbers
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.errors import DataFormatError
from core.records import MRCAnswer, MRCExample

__all__ = [
    "MRCAnswer",
    "MRCExample",
    "NormalForm",
    "examples_by_id",
    "load_mrc_examples",
    "to_squad_json",
]

NormalForm = Literal["NFC", "NFD", "NFKC", "NFKD"]
_NORMAL_FORMS = ("NFC", "NFD", "NFKC", "NFKD")
_JSON_LINES_SUFFIXES = {".jsonl", ".jsonlines", ".ndjson"}
_MRC_RECORD_KEYS = ("id|guid", "title", "context", "question", "answers", "document_id")

SUPPORTED_LAYOUTS = (
    'SQuAD v1.1/KorQuAD JSON {"version", "data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}; '
    'KLUE-MRC records [{"guid", "title", "context", "question", "answers": {"answer_start": [...], '
    '"text": [...]}}] as a JSON list, {"data": [...]} or JSON Lines; or a datasets.save_to_disk '
    "directory with columns id, title, context, question, answers, document_id"
)
_ANSWERS_FIX = (
    'use [{"text": ..., "answer_start": ...}] (SQuAD) or {"text": [...], "answer_start": [...]} (KLUE)'
)
_NFC_FIX = (
    'normalise context, question and answer texts with unicodedata.normalize("NFC", ...) and recompute '
    'answer_start as len(unicodedata.normalize("NFC", context[:answer_start])), '
    'or let the loader do both: datamodule.normalize=NFC (load_mrc_examples(..., normalize="NFC"))'
)


@dataclass(frozen=True)
class _RawRecord:
    """One question as found in the file, before validation; ``where`` locates it when it has no id."""

    index: int
    where: str | None
    fields: dict[str, Any]

    @property
    def label(self) -> str:
        """``#<index>`` plus location: used in errors until the record's id is known to be valid."""
        return f"#{self.index}" if self.where is None else f"#{self.index} ({self.where})"


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def load_mrc_examples(
    path: str | os.PathLike[str],
    *,
    require_answers: bool = True,
    split: str | None = None,
    normalize: NormalForm | None = None,
) -> list[MRCExample]:
    """Load any supported MRC file or directory into validated :class:`MRCExample` records.

    Args:
        path: a JSON / JSON Lines file or a ``datasets.save_to_disk`` directory.
        require_answers: False for test files, which may carry no (or empty) answers.  Records marked
            ``is_impossible`` are always accepted with ``answers == []``.
        split: which split of a DatasetDict directory to read; may be omitted when it has one split.
            Ignored for files and single-Dataset directories.
        normalize: None (default) validates the text exactly as stored, so predictions can be scored
            against it verbatim; ``"NFC"`` (or another form) normalises title, context, question and
            answers first and remaps ``answer_start`` into the normalised context.

    Raises:
        DataFormatError: the input is missing, unreadable, of an unknown layout, or a record is invalid.
    """
    if normalize is not None and normalize not in _NORMAL_FORMS:
        raise ValueError(f"normalize must be None or one of {_NORMAL_FORMS}, got {normalize!r}")
    src = Path(path)
    raws = _read_raw_records(src, split)
    if not raws:
        raise DataFormatError(src, None, "contains no MRC examples", f"expected one of: {SUPPORTED_LAYOUTS}")
    examples: list[MRCExample] = []
    first_index: dict[str, int] = {}
    for raw in raws:
        example = _build_example(src, raw, require_answers=require_answers, normalize=normalize)
        _check_unique_id(src, example["id"], raw.index, first_index)
        examples.append(example)
    return examples


def question_types(path: str | os.PathLike[str], *, split: str | None = None) -> dict[str, str]:
    """Question id -> KLUE-MRC ``question_type`` (as text) of the records that have one, for scores per type."""
    out: dict[str, str] = {}
    for raw in _read_raw_records(Path(path), split):
        qid, kind = raw.fields.get("id"), raw.fields.get("question_type")
        if qid is not None and kind is not None:
            out[str(qid)] = str(kind)
    return out


def examples_by_id(examples: Iterable[MRCExample]) -> dict[str, MRCExample]:
    """Index examples by id (predictions and gold files are joined on it); duplicates are an error."""
    by_id: dict[str, MRCExample] = {}
    for example in examples:
        if example["id"] in by_id:
            raise ValueError(f"duplicate MRC example id {example['id']!r}")
        by_id[example["id"]] = example
    return by_id


def to_squad_json(examples: Iterable[MRCExample], *, version: str = "1.1") -> dict[str, Any]:
    """Write examples in SQuAD v1.1 layout (e.g. gold files for ``task=score``).

    Articles are grouped by title and paragraphs by (context, document_id), in first-seen order, so
    the output is compact; reading it back yields the same records (grouped in that order).  Questions
    without answers get ``"is_impossible": true`` so the file still loads with ``require_answers=True``.
    """
    articles: dict[str, dict[str, Any]] = {}
    paragraphs: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for example in examples:
        title = example["title"]
        article = articles.setdefault(title, {"title": title, "paragraphs": []})
        key = (title, example["context"], example["document_id"])
        if key not in paragraphs:
            paragraph: dict[str, Any] = {"context": example["context"], "qas": []}
            if example["document_id"] is not None:
                paragraph["document_id"] = example["document_id"]
            paragraphs[key] = paragraph
            article["paragraphs"].append(paragraph)
        paragraphs[key]["qas"].append(_squad_qa(example))
    return {"version": version, "data": list(articles.values())}


def _squad_qa(example: MRCExample) -> dict[str, Any]:
    """One SQuAD ``qas`` entry; answers are copied so the output never aliases the examples."""
    answers = [{"text": a["text"], "answer_start": a["answer_start"]} for a in example["answers"]]
    qa: dict[str, Any] = {"id": example["id"], "question": example["question"], "answers": answers}
    if not answers:
        qa["is_impossible"] = True
    return qa


# --------------------------------------------------------------------------------------------------
# Reading files and directories into raw records
# --------------------------------------------------------------------------------------------------


def _read_raw_records(src: Path, split: str | None) -> list[_RawRecord]:
    """Dispatch on what ``src`` is; every branch ends in the same list of raw records."""
    if not src.exists():
        raise DataFormatError(
            src,
            None,
            "file or directory does not exist",
            f"check the path (relative paths are resolved from {Path.cwd()}) or download the data first",
        )
    if src.is_dir():
        return _records_from_saved_dataset(src, split)
    return _records_from_file(src)


def _records_from_file(src: Path) -> list[_RawRecord]:
    """Parse a JSON or JSON Lines file; a ``.json`` file that is really JSON Lines is accepted too."""
    text = _read_text(src)
    if not text.strip():
        raise DataFormatError(src, None, "file is empty", "re-download or re-export the file")
    if src.suffix.lower() in _JSON_LINES_SUFFIXES:
        return _flat_records(src, _parse_json_lines(src, text))
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and _looks_like_json_lines(text):
            return _flat_records(src, _parse_json_lines(src, text))
        raise _json_error(src, None, text, exc) from None
    return _records_from_document(src, document)


def _read_text(src: Path) -> str:
    """Read UTF-8 (a BOM is tolerated: Windows editors add one)."""
    try:
        return src.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFormatError(
            src,
            None,
            f"file is not UTF-8 text ({exc.reason} at byte {exc.start})",
            "re-save the file as UTF-8 JSON (e.g. iconv -f cp949 -t utf-8 for Korean Windows files)",
        ) from None


def _json_error(src: Path, record: str | None, text: str, exc: json.JSONDecodeError) -> DataFormatError:
    """Turn a JSONDecodeError into a DataFormatError with line/column and a truncation guess."""
    problem = f"not valid JSON at line {exc.lineno}, column {exc.colno}: {_json_reason(exc)}"
    rest = text[exc.pos :].rstrip()
    truncated = exc.pos >= len(text.rstrip()) or (exc.msg.startswith("Unterminated") and "\n" not in rest)
    if truncated:
        problem += " (the text ends before the JSON is complete: the file looks truncated)"
        fix = "re-download or re-export the file; an interrupted copy or write leaves it cut off"
    else:
        fix = "correct the JSON at that position (`python -m json.tool FILE` points at it)"
    return DataFormatError(src, record, problem, fix)


def _json_reason(exc: json.JSONDecodeError) -> str:
    """json's message without its dangling position words ("Unterminated string starting at")."""
    return exc.msg.removesuffix(" starting at").removesuffix(" at")


def _looks_like_json_lines(text: str) -> bool:
    """True when the first non-blank line is a complete JSON object, i.e. the file is JSON Lines."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def _parse_json_lines(src: Path, text: str) -> list[tuple[str | None, Any]]:
    """Parse one JSON value per non-blank line, keeping the line number for error messages."""
    rows: list[tuple[str | None, Any]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"line {lineno}", json.loads(line)))
        except json.JSONDecodeError as exc:
            problem = f"not valid JSON Lines at line {lineno}, column {exc.colno}: {_json_reason(exc)}"
            fix = "every line must hold one complete JSON object; fix or remove this line"
            raise DataFormatError(src, f"line {lineno}", problem, fix) from None
    return rows


def _records_from_document(src: Path, document: Any) -> list[_RawRecord]:
    """Detect SQuAD vs flat records in a parsed JSON document."""
    if isinstance(document, dict):
        if "data" not in document:
            raise _unknown_layout(src, None, "top-level keys", list(document))
        items, prefix = document["data"], "data"
        if not isinstance(items, list):
            problem = f"'data' is a {type(items).__name__}, expected a list of articles or records"
            raise DataFormatError(src, None, problem, f"expected one of: {SUPPORTED_LAYOUTS}")
    elif isinstance(document, list):
        items, prefix = document, ""
    else:
        problem = f"top-level JSON value is a {type(document).__name__}, expected an object or a list"
        raise DataFormatError(src, None, problem, f"expected one of: {SUPPORTED_LAYOUTS}")
    if any(isinstance(item, dict) and "paragraphs" in item for item in items):
        return _squad_records(src, items, prefix)
    return _flat_records(src, [(None, item) for item in items])


def _unknown_layout(src: Path, record: str | None, what: str, keys: Sequence[str]) -> DataFormatError:
    """The input parsed but matches no MRC layout: say which keys were found and which were expected."""
    shown = ", ".join(repr(k) for k in list(keys)[:20]) or "none"
    problem = (
        f"unknown MRC layout: {what} are [{shown}]; expected 'data' (SQuAD/KorQuAD) or records with "
        f"keys {', '.join(_MRC_RECORD_KEYS)} (KLUE-MRC/boostcamp)"
    )
    fix = f"convert the data to a supported layout: {SUPPORTED_LAYOUTS} (is this file for another task?)"
    return DataFormatError(src, record, problem, fix)


def _squad_records(src: Path, articles: list[Any], prefix: str) -> list[_RawRecord]:
    """Flatten SQuAD articles/paragraphs/qas into one raw record per question."""
    records: list[_RawRecord] = []
    for a_index, article in enumerate(articles):
        where = f"{prefix}[{a_index}]"
        _require_list_field(src, where, article, "paragraphs", "SQuAD article")
        for p_index, paragraph in enumerate(article["paragraphs"]):
            p_where = f"{where}.paragraphs[{p_index}]"
            _require_list_field(src, p_where, paragraph, "qas", "SQuAD paragraph")
            document_id = paragraph.get("document_id", article.get("document_id"))
            for q_index, qa in enumerate(paragraph["qas"]):
                q_where = f"{p_where}.qas[{q_index}]"
                if not isinstance(qa, dict):
                    problem = f"SQuAD question is a {type(qa).__name__}, expected an object"
                    raise DataFormatError(
                        src, q_where, problem, 'each "qas" entry must be {"id", "question", "answers"}'
                    )
                fields = {
                    "id": qa.get("id", qa.get("guid")),
                    "title": article.get("title"),
                    "context": paragraph.get("context"),
                    "question": qa.get("question"),
                    "answers": qa.get("answers"),
                    "is_impossible": qa.get("is_impossible"),
                    "document_id": document_id,
                    "question_type": qa.get("question_type"),
                }
                records.append(_RawRecord(len(records), q_where, fields))
    return records


def _require_list_field(src: Path, where: str, node: Any, key: str, what: str) -> None:
    """SQuAD nesting check: ``node`` must be an object whose ``key`` is a list."""
    if isinstance(node, dict) and isinstance(node.get(key), list):
        return
    found = list(node) if isinstance(node, dict) else type(node).__name__
    problem = f"{what} has no '{key}' list (found: {found})"
    raise DataFormatError(src, where, problem, f"expected one of: {SUPPORTED_LAYOUTS}")


def _flat_records(src: Path, rows: Sequence[tuple[str | None, Any]]) -> list[_RawRecord]:
    """Wrap KLUE/boostcamp-style records; the first record decides whether the layout is MRC at all."""
    first = next((row for _, row in rows if isinstance(row, dict)), None)
    if first is not None and not ({"context", "question"} & first.keys()):
        first_id = first.get("id", first.get("guid"))
        raise _unknown_layout(
            src, None if first_id is None else str(first_id), "the record keys", list(first)
        )
    records: list[_RawRecord] = []
    for index, (where, row) in enumerate(rows):
        raw = _RawRecord(index, where, {})
        if not isinstance(row, dict):
            problem = f"record is a {type(row).__name__}, expected a JSON object"
            raise DataFormatError(src, raw.label, problem, f"expected one of: {SUPPORTED_LAYOUTS}")
        fields = {
            "id": row.get("id", row.get("guid")),
            "title": row.get("title"),
            "context": row.get("context"),
            "question": row.get("question"),
            "answers": row.get("answers"),
            "is_impossible": row.get("is_impossible"),
            "document_id": row.get("document_id"),
            "question_type": row.get("question_type"),
        }
        records.append(_RawRecord(index, where, fields))
    return records


def _records_from_saved_dataset(src: Path, split: str | None) -> list[_RawRecord]:
    """Read a ``save_to_disk`` Dataset or DatasetDict directory (boostcamp layout)."""
    if not ((src / "dataset_dict.json").is_file() or (src / "state.json").is_file()):
        found = sorted(p.name for p in src.iterdir())[:20]
        problem = f"directory is not a datasets save_to_disk directory (no dataset_dict.json or state.json; found {found})"
        fix = "point to the JSON file itself, or to a directory written by Dataset/DatasetDict.save_to_disk"
        raise DataFormatError(src, None, problem, fix)
    import datasets  # deferred: importing datasets costs ~1 s and JSON inputs never need it

    try:
        loaded = datasets.load_from_disk(os.fspath(src))
    except (OSError, ValueError) as exc:
        problem = f"datasets.load_from_disk failed: {exc}"
        raise DataFormatError(src, None, problem, "re-save the dataset with save_to_disk") from None
    dataset = _select_split(src, loaded, split) if isinstance(loaded, datasets.DatasetDict) else loaded
    return _flat_records(src, [(None, row) for row in dataset.to_list()])


def _select_split(src: Path, dataset_dict: Any, split: str | None) -> Any:
    """Pick ``split`` from a DatasetDict; the only split is used when none is given."""
    names = list(dataset_dict.keys())
    if split is None and len(names) == 1:
        return dataset_dict[names[0]]
    if split is None:
        problem = f"is a DatasetDict with splits {names} and no split was chosen"
        raise DataFormatError(src, None, problem, f"pass split=<name>, one of {names}")
    if split not in dataset_dict:
        problem = f"has no split {split!r}; available splits: {names}"
        raise DataFormatError(src, None, problem, f"pass split=<name>, one of {names}")
    return dataset_dict[split]


# --------------------------------------------------------------------------------------------------
# Validating one record
# --------------------------------------------------------------------------------------------------


def _build_example(
    src: Path, raw: _RawRecord, *, require_answers: bool, normalize: NormalForm | None
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


def _require_id(src: Path, raw: _RawRecord) -> str:
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


def _check_unique_id(src: Path, example_id: str, index: int, first_index: dict[str, int]) -> None:
    """Duplicate ids make predictions ambiguous and silently overwrite each other in dict outputs."""
    if example_id in first_index:
        problem = f"duplicate id: records #{first_index[example_id]} and #{index} both use id {example_id!r}"
        fix = "ids must be unique: rename or drop one of the duplicates"
        raise DataFormatError(src, example_id, problem, fix)
    first_index[example_id] = index
