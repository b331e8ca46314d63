"""Read every supported MRC input format into one validated record type.

Models, metrics and retrievers only ever see :class:`MRCExample` dicts, so format quirks (SQuAD
nesting, KLUE's dict-of-lists answers, ``save_to_disk`` directories, NFD text produced by macOS
tooling) are resolved and checked here, once, with errors that name the file, the record and the fix. The
file itself is read by ``core.record_files`` (the one reader); this module finds the questions in it (SQuAD
nesting, flat records) and ``datamodules/mrc_validation.py`` checks each one.

Supported inputs (detected automatically):

* SQuAD v1.1 / KorQuAD 1.0 JSON: ``{"version", "data": [{"title", "paragraphs": [{"context", "qas"}]}]}``
  (qa ids may be ``id`` or KLUE's ``guid``; ``document_id`` may sit on the paragraph or the article).
* KLUE-MRC / boostcamp flat records, as a JSON list, ``{"data": [...]}`` or JSON Lines, with answers
  either ``{"answer_start": [...], "text": [...]}`` or ``[{"text", "answer_start"}]``.
* ``datasets`` ``save_to_disk`` directories (a Dataset, or a DatasetDict plus ``split``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from core.errors import DataFormatError
from core.record_files import read_source, record_list
from core.records import MRCAnswer, MRCExample
from datamodules.mrc_validation import NORMAL_FORMS, NormalForm, RawRecord, build_example, check_unique_id

__all__ = [
    "MRCAnswer",
    "MRCExample",
    "NormalForm",
    "examples_by_id",
    "load_mrc_examples",
    "to_squad_json",
]

_MRC_RECORD_KEYS = ("id|guid", "title", "context", "question", "answers", "document_id")

SUPPORTED_LAYOUTS = (
    'SQuAD v1.1/KorQuAD JSON {"version", "data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}; '
    'KLUE-MRC records [{"guid", "title", "context", "question", "answers": {"answer_start": [...], '
    '"text": [...]}}] as a JSON list, {"data": [...]} or JSON Lines; or a datasets.save_to_disk '
    "directory with columns id, title, context, question, answers, document_id"
)
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
    if normalize is not None and normalize not in NORMAL_FORMS:
        raise ValueError(f"normalize must be None or one of {NORMAL_FORMS}, got {normalize!r}")
    src = Path(path)
    raws = _read_raw_records(src, split)
    if not raws:
        raise DataFormatError(src, None, "contains no MRC examples", f"expected one of: {SUPPORTED_LAYOUTS}")
    examples: list[MRCExample] = []
    first_index: dict[str, int] = {}
    for raw in raws:
        example = build_example(src, raw, require_answers=require_answers, normalize=normalize)
        check_unique_id(src, example["id"], raw.index, first_index)
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


def _read_raw_records(src: Path, split: str | None) -> list[RawRecord]:
    """Parse ``src`` with the shared reader (``core.record_files``); every format ends in raw records."""
    source = read_source(src, split=split)
    if source.format == "json":
        return _records_from_document(src, source.value)
    # JSON Lines and CSV rows are located by line; dataset rows by their index alone ("#3")
    wheres = source.locations if source.format != "dataset" else [None] * len(source.value)
    return _flat_records(src, list(zip(wheres, source.value, strict=True)))


def _records_from_document(src: Path, document: Any) -> list[RawRecord]:
    """Detect SQuAD vs flat records in a parsed JSON document (its records found by ``record_list``)."""
    if isinstance(document, dict) and "data" in document and not isinstance(document["data"], list):
        problem = f"'data' is a {type(document['data']).__name__}, expected a list of articles or records"
        raise DataFormatError(src, None, problem, f"expected one of: {SUPPORTED_LAYOUTS}")
    found = record_list(document)
    if found is None and isinstance(document, dict):
        raise _unknown_layout(src, None, "top-level keys", list(document))
    if found is None:
        problem = f"top-level JSON value is a {type(document).__name__}, expected an object or a list"
        raise DataFormatError(src, None, problem, f"expected one of: {SUPPORTED_LAYOUTS}")
    items, prefix = found
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


def _squad_records(src: Path, articles: list[Any], prefix: str) -> list[RawRecord]:
    """Flatten SQuAD articles/paragraphs/qas into one raw record per question."""
    records: list[RawRecord] = []
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
                records.append(RawRecord(len(records), q_where, fields))
    return records


def _require_list_field(src: Path, where: str, node: Any, key: str, what: str) -> None:
    """SQuAD nesting check: ``node`` must be an object whose ``key`` is a list."""
    if isinstance(node, dict) and isinstance(node.get(key), list):
        return
    found = list(node) if isinstance(node, dict) else type(node).__name__
    problem = f"{what} has no '{key}' list (found: {found})"
    raise DataFormatError(src, where, problem, f"expected one of: {SUPPORTED_LAYOUTS}")


def _flat_records(src: Path, rows: Sequence[tuple[str | None, Any]]) -> list[RawRecord]:
    """Wrap KLUE/boostcamp-style records; the first record decides whether the layout is MRC at all."""
    first = next((row for _, row in rows if isinstance(row, dict)), None)
    if first is not None and not ({"context", "question"} & first.keys()):
        first_id = first.get("id", first.get("guid"))
        raise _unknown_layout(
            src, None if first_id is None else str(first_id), "the record keys", list(first)
        )
    records: list[RawRecord] = []
    for index, (where, row) in enumerate(rows):
        raw = RawRecord(index, where, {})
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
        records.append(RawRecord(index, where, fields))
    return records
