"""Parsed MRC files cached by their bytes: a second run memory-maps the validated records instead of reading
and checking the JSON again.

run_qa's ``load_dataset("json")`` keeps an Arrow copy of the file, so its second run starts in milliseconds;
ours used to parse and validate the whole file (``load_mrc_examples``) on every run, ~30 µs a question. An
entry here is keyed by the file's bytes (xxhash), the load options and the source of the code that reads
and checks a file, so an edited file or loader is never served stale; only a file that loaded without error
is ever cached, so a hit is as valid as a fresh read.

An entry is a directory of ``.npy`` arrays (no pickle): every text column is one UTF-8 buffer beside its
byte offsets, contexts and titles stored once however many questions share them. :class:`ExampleTable`
builds a question's dict when it is read, as ``datasets`` builds a row, so a hit costs what mapping the files
costs, whatever the size of the file. The table also carries the digest of what the feature builders read
(:func:`examples_digest`), so the feature cache's key needs no pass over the records either.
"""

from __future__ import annotations

import itertools
import json
import operator
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import xxhash

from core import record_files, records
from core.cache import build_once, publish_directory
from core.records import MRCExample
from datamodules import mrc_formats, mrc_validation
from datamodules.mrc_formats import load_mrc_examples
from datamodules.mrc_validation import NormalForm

__all__ = ["EXAMPLES_FORMAT", "ExampleTable", "cached_mrc_examples", "examples_digest"]

# Bump when the layout on disk changes (it is part of the key)
EXAMPLES_FORMAT = 1
_INDEX = "examples.json"  # written last: its presence marks the entry complete
# The modules whose code decides which records a file yields: their source is part of the key (with this one's)
_LOADER_MODULES = (mrc_formats, mrc_validation, record_files, records)


# ----------------------------------------------------------------------------- what the builders read


def examples_digest(examples: Sequence[MRCExample]) -> str:
    """xxhash of what the feature builders read of the records (question, context, answers), a column at a
    time: with ``map`` and joins the work runs in C, and a passage shared by several questions is hashed once.

    The id is left out: it only names a record in an error, and a failed build caches nothing. A builder that
    reads another field must add it here (the feature cache's format then changes). A table read from the
    cache carries the digest it was written with.
    """
    if isinstance(examples, ExampleTable):
        return examples.digest
    digest = xxhash.xxh3_128()

    def texts(values: Sequence[str]) -> None:
        # NUL-separated UTF-32: unambiguous unless a string holds a NUL itself, and then its length is added
        joined = "\x00".join(values)
        plain = joined.count("\x00") == max(len(values) - 1, 0)
        digest.update(len(values).to_bytes(8, "little") + (b"s" if plain else b"n"))
        if not plain:
            digest.update(np.fromiter(map(len, values), np.int64, len(values)).tobytes())
        digest.update(joined.encode("utf-32-le", "surrogatepass"))

    def numbers(values: Iterable[int], count: int) -> None:
        digest.update(np.fromiter(values, np.int64, count).tobytes())

    contexts = list(map(operator.itemgetter("context"), examples))
    passages = dict(zip(dict.fromkeys(contexts), itertools.count()))
    texts(list(passages))
    numbers(map(passages.__getitem__, contexts), len(contexts))
    texts(list(map(operator.itemgetter("question"), examples)))
    answers = [e.get("answers") or () for e in examples]
    numbers(map(len, answers), len(answers))
    flat = list(itertools.chain.from_iterable(answers))
    texts(list(map(operator.itemgetter("text"), flat)))
    numbers(map(operator.itemgetter("answer_start"), flat), len(flat))  # fromiter makes each an int64
    return digest.hexdigest()


# ----------------------------------------------------------------------------- the table


class _Texts:
    """A column of strings (``None`` where ``missing``) as one UTF-8 buffer and its byte offsets."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray, missing: np.ndarray | None) -> None:
        self.blob, self.offsets, self.missing = blob, offsets.tolist(), missing

    def __getitem__(self, index: int) -> str | None:
        if self.missing is not None and self.missing[index]:
            return None
        return self.blob[self.offsets[index] : self.offsets[index + 1]].tobytes().decode("utf-8", "surrogatepass")


def _save_texts(directory: Path, name: str, values: Sequence[str | None]) -> None:
    encoded = [(value or "").encode("utf-8", "surrogatepass") for value in values]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
    np.save(directory / f"{name}.npy", np.frombuffer(b"".join(encoded), np.uint8), allow_pickle=False)
    np.save(directory / f"{name}.offsets.npy", offsets, allow_pickle=False)
    if any(value is None for value in values):
        np.save(directory / f"{name}.missing.npy", np.array([v is None for v in values]), allow_pickle=False)


def _load_texts(directory: Path, name: str) -> _Texts:
    offsets = np.load(directory / f"{name}.offsets.npy", allow_pickle=False)
    # an empty file cannot be memory-mapped; a plain ndarray over the mapped buffer slices fastest
    blob = np.load(directory / f"{name}.npy", mmap_mode="r" if offsets[-1] else None, allow_pickle=False)
    missing_file = directory / f"{name}.missing.npy"
    missing = np.load(missing_file, allow_pickle=False) if missing_file.exists() else None
    return _Texts(blob.view(np.ndarray), offsets, missing)


def _shared(values: Sequence[str]) -> tuple[list[str], list[int]]:
    """Each distinct value once, and the position of every row's value among them."""
    position = dict(zip(dict.fromkeys(values), itertools.count()))
    return list(position), list(map(position.__getitem__, values))


class ExampleTable(Sequence[MRCExample]):
    """Validated MRC records read from a cache entry; a record's dict is built when it is read (a new dict
    each time: change a copy, not the table)."""

    def __init__(self, directory: Path) -> None:
        index = json.loads((directory / _INDEX).read_text(encoding="utf-8"))
        self.digest: str = index["digest"]
        self.rows: int = index["rows"]
        self.source: str = index["source"]
        self._text = {name: _load_texts(directory, name) for name in ("id", "question", "document_id",
                                                                        "context", "title", "answer_text")}
        load = np.load
        self._context_of = load(directory / "context_of.npy", allow_pickle=False).tolist()
        self._title_of = load(directory / "title_of.npy", allow_pickle=False).tolist()
        self._answers_from = load(directory / "answers_from.npy", allow_pickle=False).tolist()
        self._answer_start = load(directory / "answer_start.npy", allow_pickle=False).tolist()

    def __len__(self) -> int:
        return self.rows

    def _row(self, row: int) -> MRCExample:
        text = self._text
        answer_text = text["answer_text"]
        first, end = self._answers_from[row], self._answers_from[row + 1]
        return {
            "id": text["id"][row],
            "title": text["title"][self._title_of[row]],
            "context": text["context"][self._context_of[row]],
            "question": text["question"][row],
            "answers": [{"text": answer_text[a], "answer_start": self._answer_start[a]} for a in range(first, end)],
            "document_id": text["document_id"][row],
        }  # type: ignore[typeddict-item]  # every text but document_id is present

    @overload
    def __getitem__(self, index: int) -> MRCExample: ...

    @overload
    def __getitem__(self, index: slice) -> list[MRCExample]: ...

    def __getitem__(self, index: int | slice) -> MRCExample | list[MRCExample]:
        if isinstance(index, slice):
            return [self._row(i) for i in range(*index.indices(self.rows))]
        row = operator.index(index)
        if row < 0:
            row += self.rows
        if not 0 <= row < self.rows:
            raise IndexError(f"record {index} of {self.rows} in the cached {self.source}")
        return self._row(row)

    def __iter__(self) -> Iterator[MRCExample]:
        return map(self._row, range(self.rows))


def _save_table(examples: Sequence[MRCExample], source: Path, directory: Path) -> None:
    directory.mkdir(parents=True)
    contexts, context_of = _shared([ex["context"] for ex in examples])
    titles, title_of = _shared([ex["title"] for ex in examples])
    answers = [ex["answers"] for ex in examples]
    answers_from = np.zeros(len(examples) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, answers), np.int64, len(answers)), out=answers_from[1:])
    flat = list(itertools.chain.from_iterable(answers))
    columns: dict[str, Sequence[str | None]] = {
        "id": [ex["id"] for ex in examples],
        "question": [ex["question"] for ex in examples],
        "document_id": [ex["document_id"] for ex in examples],
        "context": contexts,
        "title": titles,
        "answer_text": [answer["text"] for answer in flat],
    }
    for name, values in columns.items():
        _save_texts(directory, name, values)
    for name, numbers in (("context_of", context_of), ("title_of", title_of), ("answers_from", answers_from),
                          ("answer_start", [answer["answer_start"] for answer in flat])):
        np.save(directory / f"{name}.npy", np.asarray(numbers, np.int64), allow_pickle=False)
    index = {"format": EXAMPLES_FORMAT, "rows": len(examples), "digest": examples_digest(examples),
             "source": str(source)}
    (directory / _INDEX).write_text(json.dumps(index), encoding="utf-8")


# ----------------------------------------------------------------------------- the loader


def _entry_key(path: Path, options: dict[str, Any]) -> str:
    """The file's bytes, the load options, the loader's own source and the layout on disk."""
    digest = xxhash.xxh3_128()
    size = 0
    with path.open("rb") as file:  # in blocks: a KorQuAD-sized file need not sit in memory twice
        for block in iter(lambda: file.read(1 << 23), b""):
            digest.update(block)
            size += len(block)
    digest.update(size.to_bytes(8, "little"))  # where the file ends and the other parts begin
    parts = [json.dumps(options, sort_keys=True).encode("utf-8"), str(EXAMPLES_FORMAT).encode()]
    parts += [Path(module.__file__).read_bytes() for module in _LOADER_MODULES if module.__file__]
    parts.append(Path(__file__).read_bytes())  # this module: the layout and the stored digest's algorithm
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def cached_mrc_examples(
    path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None,
    *,
    require_answers: bool = True,
    split: str | None = None,
    normalize: NormalForm | None = None,
) -> Sequence[MRCExample]:
    """:func:`~datamodules.mrc_formats.load_mrc_examples`, read once per file content.

    The first run reads, validates (errors name the file and the record, as ever) and writes the entry;
    later runs on the same bytes map it (:class:`ExampleTable`). Without ``cache_dir``, and for a
    ``save_to_disk`` directory (already Arrow, already cheap to reopen), it is ``load_mrc_examples`` itself.
    """
    source = Path(path)
    if cache_dir is None or not source.is_file():
        return load_mrc_examples(source, require_answers=require_answers, split=split, normalize=normalize)
    options = {"require_answers": require_answers, "split": split, "normalize": normalize}
    final = Path(cache_dir) / "examples" / _entry_key(source, options)

    def build() -> ExampleTable:
        shutil.rmtree(final, ignore_errors=True)  # under the lock and not ready: a damaged entry
        examples = load_mrc_examples(source, **options)
        publish_directory(lambda tmp: _save_table(examples, source, tmp), final)
        return ExampleTable(final)

    return build_once(final, (final / _INDEX).exists, build, lambda: ExampleTable(final))
