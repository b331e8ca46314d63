"""The one reader of record files: JSON, JSON Lines, CSV / TSV and ``datasets`` ``save_to_disk`` directories.

Every datamodule, the tokenizer trainer and the retrieval corpus loader read their files here, so a file means
the same thing to all of them; what the records must contain (SQuAD nesting, KLUE answers, label fields) is
checked by each caller. Errors are :class:`core.errors.DataFormatError` naming the file, the line or record
and the fix.

Which format a path is read as:

* a directory: a ``save_to_disk`` Dataset, or a DatasetDict and ``split`` (optional when it has one split);
* ``.csv`` / ``.tsv``: a header row, then one record per row (every value a string);
* ``.jsonl`` / ``.jsonlines`` / ``.ndjson``: JSON Lines;
* anything else (``.json``): one JSON document, unless the text is not one JSON value but its first non-blank
  line is a complete JSON object: then it is JSON Lines too (a JSON Lines file named ``.json``).

**The JSON Lines rule.** A JSON Lines file holds one record per non-blank line, however many lines it has: a
one-line ``.jsonl`` file is one record. A ``.json`` file whose whole text is one JSON object is a *document*,
never a one-record JSON Lines file (KorQuAD ships a one-line ``{"version", "data"}`` file): its records are
the list under ``"data"`` (``{"version": ..., "data": [...]}``); any other object is an error that says to
write a list, or to name a one-record JSON Lines file ``.jsonl``. A JSON document that is a
list holds its records directly. Blank lines and a UTF-8 byte-order mark are ignored everywhere.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.errors import DataFormatError

__all__ = [
    "JSON_LINES_SUFFIXES",
    "MissingDataError",
    "RecordFile",
    "Source",
    "read_record_file",
    "read_records",
    "iter_texts",
    "read_source",
    "record_list",
    "saved_splits",
]

JSON_LINES_SUFFIXES = frozenset({".jsonl", ".jsonlines", ".ndjson"})
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
Format = Literal["json", "jsonl", "csv", "tsv", "dataset"]
_RECORDS_FIX = (
    'write the records as a JSON list ([{...}, {...}]), under "data" ({"data": [...]}), or as JSON Lines '
    "(one object per line; a one-record JSON Lines file must be named .jsonl)"
)


class MissingDataError(DataFormatError, FileNotFoundError):
    """The data file or directory does not exist (both a DataFormatError and a FileNotFoundError)."""


@dataclass(frozen=True)
class Source:
    """A data file as parsed, before any reading of records out of it.

    ``value`` is the parsed JSON value for ``format == "json"``; for the row formats (``jsonl``, ``csv``,
    ``tsv``, ``dataset``) it is the list of rows, ``locations[i]`` saying where row ``i`` is (``line 7``
    for JSON Lines and CSV, ``#7`` for a dataset). ``features`` are a dataset's ``datasets.Features``.
    """

    path: Path
    format: Format
    value: Any
    locations: list[str] = field(default_factory=list)
    features: Any = None


@dataclass(frozen=True)
class RecordFile:
    """The records of a data file: JSON objects, each with where it is (for errors).

    ``locations[i]`` is ``line 7`` (JSON Lines, CSV), ``data[7]`` / ``[7]`` (a JSON document's list) or
    ``#7`` (a dataset); ``key`` is where a JSON document keeps its list (``data``; ``""`` for a top-level
    list; None for the row formats). ``document`` is the parsed JSON document (its ``version`` and so on).
    """

    path: Path
    format: Format
    records: list[dict[str, Any]]
    locations: list[str]
    features: Any = None
    key: str | None = None
    document: Any = None


def read_records(path: str | os.PathLike[str], *, split: str | None = None) -> list[dict[str, Any]]:
    """The records of ``path`` (see the module docstring for the formats); at least one, each an object.

    Raises:
        MissingDataError: the path does not exist.
        DataFormatError: unreadable, invalid JSON (line and column named), a JSON Lines line that is not
            JSON, no records, a record that is not an object, an unknown DatasetDict split.
    """
    return read_record_file(path, split=split).records


def read_record_file(path: str | os.PathLike[str], *, split: str | None = None) -> RecordFile:
    """:func:`read_records` with each record's location, the dataset's features and the JSON document."""
    source = read_source(path, split=split)
    key: str | None = None
    if source.format == "json":
        found = record_list(source.value)
        if found is None:
            raise DataFormatError(source.path, None, _not_records(source.value), _RECORDS_FIX)
        rows, key = found
        locations = [f"{key}[{i}]" for i in range(len(rows))]
    else:
        rows, locations = source.value, source.locations
    if not rows:
        raise DataFormatError(source.path, None, "contains no records", _RECORDS_FIX)
    for row, where in zip(rows, locations, strict=True):
        if not isinstance(row, dict):
            raise DataFormatError(
                source.path, where, f"record is a {type(row).__name__}, not a JSON object", "make every record a JSON object"
            )
    document = source.value if source.format == "json" else None
    return RecordFile(source.path, source.format, rows, locations, source.features, key, document)


def record_list(document: Any) -> tuple[list[Any], str] | None:
    """The records of a parsed JSON document and the key that holds them (``""`` for a top-level list), or None
    when it holds none: a list holds its records; an object holds them in its ``"data"`` list."""
    if isinstance(document, list):
        return document, ""
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        return document["data"], "data"
    return None


def _not_records(document: Any) -> str:
    if isinstance(document, dict):
        keys = ", ".join(repr(k) for k in list(document)[:12])
        return f"is one JSON object (keys {keys}), not a list of records"
    return f"top-level JSON value is a {type(document).__name__}, not a list of records"


# ----------------------------------------------------------------------------- parsing


def read_source(path: str | os.PathLike[str], *, split: str | None = None) -> Source:
    """Parse ``path`` without interpreting it: the JSON document, or the rows of the row formats."""
    src = Path(path)
    if not src.exists():
        raise MissingDataError(
            src, None, "file or directory does not exist",
            f"check the path (relative paths are resolved from {Path.cwd()}; the datamodule's *_file keys) "
            "or download the data first",
        )
    if src.is_dir():
        return _saved_dataset(src, split)
    text = _read_text(src)
    if not text.strip():
        raise DataFormatError(src, None, "file is empty", "re-download or re-export the file")
    suffix = src.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return _table(src, text, suffix)
    if suffix in JSON_LINES_SUFFIXES:
        return _json_lines(src, text)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and _first_line_is_object(text):
            return _json_lines(src, text)
        raise _json_error(src, text, exc) from None
    return Source(src, "json", document)


def _read_text(src: Path) -> str:
    """UTF-8 text (a BOM is tolerated: Windows editors add one)."""
    try:
        return src.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFormatError(
            src, None, f"file is not UTF-8 text ({exc.reason} at byte {exc.start})",
            "re-save the file as UTF-8 (e.g. iconv -f cp949 -t utf-8 for Korean Windows files)",
        ) from None


def _first_line_is_object(text: str) -> bool:
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def _json_reason(exc: json.JSONDecodeError) -> str:
    """json's message without its dangling position words ("Unterminated string starting at")."""
    return exc.msg.removesuffix(" starting at").removesuffix(" at")


def _json_error(src: Path, text: str, exc: json.JSONDecodeError) -> DataFormatError:
    """A JSONDecodeError as a DataFormatError with line, column and a guess at truncation."""
    problem = f"not valid JSON at line {exc.lineno}, column {exc.colno}: {_json_reason(exc)}"
    rest = text[exc.pos :].rstrip()
    if exc.pos >= len(text.rstrip()) or (exc.msg.startswith("Unterminated") and "\n" not in rest):
        problem += " (the text ends before the JSON is complete: the file looks truncated)"
        fix = "re-download or re-export the file; an interrupted copy or write leaves it cut off"
    else:
        fix = "correct the JSON at that position (`python -m json.tool FILE` points at it)"
    return DataFormatError(src, None, problem, fix)


def _json_lines(src: Path, text: str) -> Source:
    rows: list[Any] = []
    locations: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            problem = f"not valid JSON Lines at line {lineno}, column {exc.colno}: {_json_reason(exc)}"
            fix = "every line must hold one complete JSON object; fix or remove this line"
            raise DataFormatError(src, f"line {lineno}", problem, fix) from None
        locations.append(f"line {lineno}")
    return Source(src, "jsonl", rows, locations)


def _table(src: Path, text: str, suffix: str) -> Source:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=TABLE_SUFFIXES[suffix])
    rows: list[Any] = []
    locations: list[str] = []
    start = 2
    try:
        for row in reader:
            if None in row:  # more cells than the header has names
                raise DataFormatError(
                    src, f"line {start}", f"has {len(reader.fieldnames or []) + len(row[None])} cells, the header "
                    f"{len(reader.fieldnames or [])}", "quote cells that hold the delimiter, or fix the header",
                )
            rows.append(row)
            locations.append(f"line {start}")
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataFormatError(src, f"line {reader.line_num}", f"not valid {suffix[1:].upper()} ({exc})",
                              "repair or re-export the file") from None
    return Source(src, "csv" if suffix == ".csv" else "tsv", rows, locations)


def saved_splits(path: str | os.PathLike[str]) -> list[str]:
    """The splits of a ``save_to_disk`` DatasetDict directory (``[]`` for a single Dataset)."""
    manifest = Path(path) / "dataset_dict.json"
    if not manifest.is_file():
        return []
    return list(json.loads(manifest.read_text(encoding="utf-8"))["splits"])


def _saved_dataset(src: Path, split: str | None) -> Source:
    """A ``save_to_disk`` Dataset, or one split of a DatasetDict."""
    if not ((src / "dataset_dict.json").is_file() or (src / "state.json").is_file()):
        found = sorted(p.name for p in src.iterdir())[:20]
        problem = f"directory is not a datasets save_to_disk directory (no dataset_dict.json or state.json; found {found})"
        fix = "point to the data file itself, or to a directory written by Dataset/DatasetDict.save_to_disk"
        raise DataFormatError(src, None, problem, fix)
    import datasets  # deferred: importing datasets costs ~1 s and file inputs never need it

    try:
        loaded = datasets.load_from_disk(os.fspath(src))
    except (OSError, ValueError) as exc:
        raise DataFormatError(src, None, f"datasets.load_from_disk failed: {exc}",
                              "re-save the dataset with save_to_disk") from None
    if isinstance(loaded, datasets.DatasetDict):
        loaded = _select_split(src, loaded, split)
    rows = loaded.to_list()
    return Source(src, "dataset", rows, [f"#{i}" for i in range(len(rows))], loaded.features)


def _select_split(src: Path, dataset_dict: Any, split: str | None) -> Any:
    """Pick ``split`` from a DatasetDict; its only split is used when none is given."""
    names: Sequence[str] = list(dataset_dict.keys())
    if split is None and len(names) == 1:
        return dataset_dict[names[0]]
    if split is None:
        problem = f"is a DatasetDict with splits {names} and no split was chosen"
        raise DataFormatError(src, None, problem, f"pass split=<name>, one of {names}")
    if split not in dataset_dict:
        problem = f"has no split {split!r}; available splits: {names}"
        raise DataFormatError(src, None, problem, f"pass split=<name>, one of {names}")
    return dataset_dict[split]


# ----------------------------------------------------------------------------- texts of any record file


def iter_texts(paths: Sequence[str | os.PathLike[str]], fields: Sequence[str]) -> Iterator[str]:
    """The string values stored under ``fields`` in each file of ``paths`` (tokenizer training, MLM text).

    A JSON document is walked whole, so nested fields count (SQuAD's ``context`` inside ``paragraphs``);
    JSON Lines and CSV rows likewise; a ``save_to_disk`` directory gives its columns named in ``fields``, from
    every split of a DatasetDict. Walking generically keeps the callers independent of each task's format.
    """
    wanted = set(fields)
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for split in saved_splits(path) or [None]:
                source = read_source(path, split=split)
                for name in (n for n in source.features if n in wanted):
                    yield from (row[name] for row in source.value if isinstance(row[name], str))
            continue
        yield from _walk_strings(read_source(path).value, wanted)


def _walk_strings(node: Any, wanted: set[str], key: str | None = None) -> Iterator[str]:
    if isinstance(node, dict):
        for child_key, child in node.items():
            yield from _walk_strings(child, wanted, child_key)
    elif isinstance(node, list):
        for child in node:
            yield from _walk_strings(child, wanted, key)
    elif isinstance(node, str) and key in wanted:
        yield node
