"""Passages to retrieve from, questions to retrieve for, and which passages answer which question.

Corpus layouts (detected from the file's content, not its name):

* ``wikipedia_documents.json`` (KLUE ODQA / boostcamp): ``{"<id>": {"text", "title", "document_id", ...}}``.
* JSON Lines (or a JSON list) of ``{"id", "title", "text"}`` records (``document_id`` optional), e.g.
  ``data/mrc_sample/corpus.jsonl``.
* CSV / TSV with ``id``, ``title``, ``text`` columns, or a ``save_to_disk`` directory of such rows.
* Any SQuAD / KorQuAD / KLUE-MRC file or ``save_to_disk`` directory: its contexts, de-duplicated, become the
  passages (:func:`passages_from_examples`). Their ids are stable (``ctx-`` + a hash of title and context), so
  an index built today matches the same file tomorrow whatever the question order. This package does not parse
  MRC formats itself: the task layer passes ``mrc_examples`` (``tasks/retrieve.py`` gives
  ``datamodules.mrc_formats.load_mrc_examples``).

Files are read by ``core.record_files`` (one rule for JSON / JSON Lines / CSV / ``save_to_disk`` everywhere).

Gold: a question's gold passages are those whose text equals its context (after NFC and stripping) or
whose ``document_id`` equals the question's ``document_id``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DataFormatError
from core.record_files import read_record_file, read_source

__all__ = [
    "Passage",
    "Query",
    "corpus_fingerprint",
    "gold_passage_ids",
    "load_corpus",
    "load_queries",
    "passages_from_examples",
    "queries_from_examples",
]

log = logging.getLogger(__name__)

CORPUS_LAYOUTS = (
    'wikipedia_documents.json {"<id>": {"text", "title", "document_id"}}; JSON Lines, a JSON list or a CSV of '
    '{"id", "title", "text"} records; or a SQuAD/KorQuAD/KLUE-MRC file whose contexts become the passages'
)


@dataclass(frozen=True)
class Passage:
    """One retrievable unit.  ``document_id`` links it to questions' ``document_id`` (may be None)."""

    id: str
    text: str
    title: str = ""
    document_id: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Query:
    """One question; ``context`` / ``document_id`` are its gold when known (None for test files)."""

    id: str
    question: str
    context: str | None = None
    document_id: str | None = None

    @property
    def has_gold(self) -> bool:
        return bool(self.context) or self.document_id is not None


# ----------------------------------------------------------------------------- corpus


def context_id(title: str, context: str) -> str:
    """Stable id of a de-duplicated MRC context: independent of question order and file layout."""
    digest = hashlib.sha1(f"{title}\x00{context}".encode()).hexdigest()[:16]
    return f"ctx-{digest}"


def passages_from_examples(examples: Iterable[Mapping[str, Any]]) -> list[Passage]:
    """The de-duplicated (title, context) pairs of MRC examples, in first-seen order."""
    seen: dict[str, Passage] = {}
    for example in examples:
        title, context = example.get("title") or "", example["context"]
        pid = context_id(title, context)
        if pid not in seen:
            doc_id = example.get("document_id")
            seen[pid] = Passage(pid, context, title, None if doc_id is None else str(doc_id))
    return list(seen.values())


# (path, split) -> the MRC examples of the file (the task layer passes datamodules.mrc_formats.load_mrc_examples)
MRCReader = Callable[[Path, str | None], Sequence[Mapping[str, Any]]]
_MRC_FIX = ("give a passage corpus, or read the MRC file through the task layer (task=retrieve does; in code: "
            "load_corpus(path, mrc_examples=...) with datamodules.mrc_formats.load_mrc_examples)")


def load_corpus(
    path: str | os.PathLike[str], *, split: str | None = None, mrc_examples: MRCReader | None = None
) -> list[Passage]:
    """Read a corpus in any layout of :data:`CORPUS_LAYOUTS`; raises :class:`DataFormatError` on bad input.

    ``mrc_examples(path, split)`` reads the file as MRC examples when it holds no passages (their contexts
    become the passages); without it such a file is refused.
    """
    src = Path(path)
    if not src.exists():
        raise FileNotFoundError(f"retriever.corpus_file={src}: no such file or directory.")
    if src.is_file() and _is_blank(src):
        raise DataFormatError(src, None, "the corpus file is empty", f"expected one of: {CORPUS_LAYOUTS}")
    source = read_source(src, split=split)
    rows: list[tuple[str, Any]] | None = None
    if source.format == "json":
        document = source.value
        if _is_wikipedia_layout(document):
            rows = [(f"key {key!r}", {**value, "id": key}) for key, value in document.items()]
        elif isinstance(document, list) and document and isinstance(document[0], dict) and _is_passage(document[0]):
            rows = [(f"#{i}", row) for i, row in enumerate(document)]
    elif source.value and isinstance(source.value[0], dict) and _is_passage(source.value[0]):
        rows = list(zip(source.locations, source.value, strict=True))
    if rows is None:
        return _mrc_passages(src, split, mrc_examples)
    passages = [_passage(src, where, row) for where, row in rows]
    _check_corpus(src, passages, [where for where, _ in rows])
    return passages


def _is_blank(src: Path) -> bool:
    """Whether the file holds only whitespace, read a megabyte at a time (not the whole corpus a second time)."""
    with open(src, encoding="utf-8-sig") as handle:
        while chunk := handle.read(1 << 20):
            if chunk.strip():
                return False
    return True


def _is_passage(row: Mapping[str, Any]) -> bool:
    return "text" in row and "question" not in row


def _is_wikipedia_layout(document: Any) -> bool:
    if not isinstance(document, dict) or not document or "data" in document:
        return False
    first = next(iter(document.values()))
    return isinstance(first, dict) and "text" in first


def _passage(src: Path, where: str, row: Any) -> Passage:
    if not isinstance(row, dict):
        raise DataFormatError(src, where, f"a passage must be a JSON object, got {type(row).__name__}",
                              f"expected one of: {CORPUS_LAYOUTS}")
    pid = row.get("id", row.get("document_id"))
    if pid is None or str(pid).strip() == "":
        raise DataFormatError(src, where, "the passage has no id", 'give every passage a unique "id"')
    text = row.get("text")
    if not isinstance(text, str):
        raise DataFormatError(src, where, f'"text" must be a string, got {type(text).__name__}',
                              'give every passage a "text" string')
    title = row.get("title") or ""
    if not isinstance(title, str):
        raise DataFormatError(src, where, f'"title" must be a string, got {type(title).__name__}',
                              'write "title" as a string or leave it out')
    doc_id = row.get("document_id", pid)
    meta = {k: v for k, v in row.items() if k not in {"id", "text", "title", "document_id", "html"}}
    return Passage(str(pid), text, title, None if doc_id is None else str(doc_id), meta)


def _mrc_passages(src: Path, split: str | None, mrc_examples: MRCReader | None) -> list[Passage]:
    if mrc_examples is None:
        raise DataFormatError(src, None, f"holds no passages (expected one of: {CORPUS_LAYOUTS})", _MRC_FIX)
    examples = mrc_examples(src, split)
    passages = passages_from_examples(examples)
    log.info("Corpus %s: %d distinct contexts of %d questions", src, len(passages), len(examples))
    _check_corpus(src, passages, [p.id for p in passages])
    return passages


def _check_corpus(src: Path, passages: Sequence[Passage], where: Sequence[str]) -> None:
    if not passages:
        raise DataFormatError(src, None, "the corpus has no passages", f"expected one of: {CORPUS_LAYOUTS}")
    first: dict[str, int] = {}
    for i, passage in enumerate(passages):
        if passage.id in first:
            raise DataFormatError(
                src, where[i], f"duplicate passage id {passage.id!r} (first at {where[first[passage.id]]})",
                "give every passage a unique id (retrieval results are keyed by it)",
            )
        first[passage.id] = i


def corpus_fingerprint(passages: Sequence[Passage]) -> str:
    """Hash of every passage's id, title and text, in order: an index is valid only for this corpus."""
    digest = hashlib.sha256()
    for p in passages:
        for part in (p.id, p.title, p.text):
            digest.update(part.encode("utf-8"))
            digest.update(b"\x00")
        digest.update(b"\x01")
    return digest.hexdigest()[:24]


# ----------------------------------------------------------------------------- queries and gold


def queries_from_examples(examples: Iterable[Mapping[str, Any]]) -> list[Query]:
    """One :class:`Query` per MRC example (``id``, ``question``; its ``context`` / ``document_id`` are gold)."""
    return [
        Query(str(ex["id"]), ex["question"], ex.get("context") or None,
              None if ex.get("document_id") is None else str(ex["document_id"]))
        for ex in examples
    ]


def load_queries(
    path: str | os.PathLike[str], *, split: str | None = None, mrc_examples: MRCReader | None = None
) -> list[Query]:
    """Questions of an MRC file read by ``mrc_examples(path, split)`` (with gold context / document_id), or of a
    questions-only file: ``{"id" | "guid", "question"}`` records (JSON list, ``{"data": [...]}``, JSON Lines,
    CSV or a ``save_to_disk`` directory), whose questions have no gold.
    """
    src = Path(path)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such questions file (set datamodule.validation_file).")
    if mrc_examples is None:
        queries = _question_rows(src, split)
        if queries is None:
            raise DataFormatError(src, None, 'holds no {"id", "question"} records', _MRC_FIX)
        return queries
    try:
        return queries_from_examples(mrc_examples(src, split))
    except DataFormatError as error:
        queries = _question_rows(src, split)
        if queries is None:
            raise error from None
        return queries


def _question_rows(src: Path, split: str | None) -> list[Query] | None:
    """Questions-only records, or None when the file is not in that layout."""
    try:
        found = read_record_file(src, split=split)
    except DataFormatError:
        return None
    queries, seen = [], set()
    for row, where in zip(found.records, found.locations, strict=True):
        qid, question = row.get("id", row.get("guid")), row.get("question")
        if qid is None or not isinstance(question, str):
            return None
        if str(qid) in seen:
            raise DataFormatError(src, where, f"duplicate question id {qid!r}", "give every question a unique id")
        seen.add(str(qid))
        doc_id = row.get("document_id")
        queries.append(Query(str(qid), question, row.get("context") or None, None if doc_id is None else str(doc_id)))
    return queries


def _norm(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def gold_passage_ids(queries: Sequence[Query], passages: Sequence[Passage]) -> dict[str, set[str]]:
    """question id -> ids of the passages that hold its gold context or share its document_id.

    Only questions with known gold appear; their set is empty when the corpus lacks the gold passage.
    """
    by_text: dict[str, list[str]] = {}
    by_doc: dict[str, list[str]] = {}
    for p in passages:
        by_text.setdefault(_norm(p.text), []).append(p.id)
        if p.document_id is not None:
            by_doc.setdefault(p.document_id, []).append(p.id)
    gold: dict[str, set[str]] = {}
    for q in queries:
        if not q.has_gold:
            continue
        ids = set(by_text.get(_norm(q.context), [])) if q.context else set()
        if q.document_id is not None:
            ids.update(by_doc.get(q.document_id, []))
        gold[q.id] = ids
    return gold
