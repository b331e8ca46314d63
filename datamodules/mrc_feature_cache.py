"""The MRC feature cache: features built once per (data, tokenizer, settings, code), then memory-mapped.

An entry is one directory of ``.npy`` arrays (no pickle: ``np.load(allow_pickle=False)`` reads them safely):
per-token columns stored flat beside the row starts they share, per-feature columns one value a row. A hit
maps the files (:class:`RaggedColumn` reads a row on demand) instead of turning a table into Python lists,
so it costs milliseconds, as ``datasets``' own Arrow cache does.
"""

from __future__ import annotations

import itertools
import json
import operator
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import xxhash

from core.cache import build_once, publish_directory
from datamodules.mrc_example_cache import examples_digest
from datamodules.mrc_features import (
    FEATURES_VERSION,
    PER_TOKEN_KEYS,
    TABLE_ONLY_KEYS,
    Builder,
    Example,
    _backend,
)

__all__ = ["CACHE_FORMAT", "Columns", "RaggedColumn", "as_lists", "cached_features", "features_fingerprint"]

# Bump when the layout on disk changes, so an old entry is never misread (it is part of the key).
# 1: Arrow (datasets.save_to_disk), sha256 of the pickled records; 2: .npy columns, xxhash of the record fields
CACHE_FORMAT = 2
_INDEX = "columns.json"  # written last into the entry: names every column, its kind and its type
_STARTS = "row_starts.npy"


class RaggedColumn(Sequence[list[Any]]):
    """A per-token column stored flat: row ``i`` is ``values[starts[i]:starts[i + 1]]``, turned into a list
    (``[a, b]`` pairs for offsets) only when it is read."""

    def __init__(self, values: np.ndarray, starts: np.ndarray) -> None:
        self.values, self.starts = values, starts

    def __len__(self) -> int:
        return len(self.starts) - 1

    @overload
    def __getitem__(self, index: int) -> list[Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[list[Any]]: ...

    def __getitem__(self, index: int | slice) -> list[Any] | list[list[Any]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        row = operator.index(index)
        if row < 0:
            row += len(self)
        if not 0 <= row < len(self):
            raise IndexError(f"row {index} of a column of {len(self)}")
        return self.values[self.starts[row] : self.starts[row + 1]].tolist()

    def __iter__(self) -> Iterator[list[Any]]:
        bounds = self.starts.tolist()
        return (self.values[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:], strict=True))

    def row(self, index: int) -> np.ndarray:
        """Row ``index`` as a (read-only, memory-mapped) array, without making a list."""
        return self.values[self.starts[index] : self.starts[index + 1]]

    def lengths(self) -> np.ndarray:
        """Tokens per row, without reading a row."""
        return np.diff(self.starts)


Columns = dict[str, Sequence[Any]]


def as_lists(columns: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """Every column as plain Python lists (what the builders return): for comparisons and small tables."""
    return {key: list(column) for key, column in columns.items()}


def _narrowest(values: np.ndarray) -> np.ndarray:
    """The smallest integer type that holds ``values`` (masks in one byte, ids in two or four)."""
    if values.size:
        low, high = values.min(), values.max()
        for dtype in (np.int8, np.int16, np.int32):
            bounds = np.iinfo(dtype)
            if bounds.min <= low and high <= bounds.max:
                return values.astype(dtype)
    return values


def _save_columns(columns: Mapping[str, Sequence[Any]], directory: Path) -> None:
    """One ``.npy`` file per column, then ``columns.json`` (its presence marks the entry complete)."""
    directory.mkdir(parents=True)
    rows = len(columns["input_ids"])
    lengths = np.fromiter(map(len, columns["input_ids"]), np.int64, rows)
    starts = np.zeros(rows + 1, np.int64)
    np.cumsum(lengths, out=starts[1:])
    tokens = int(starts[-1])
    np.save(directory / _STARTS, starts)
    kinds = {}
    for key, column in columns.items():
        if key in PER_TOKEN_KEYS or key in TABLE_ONLY_KEYS:
            width = 2 if key in TABLE_ONLY_KEYS else 1  # offsets are [start, end] pairs
            flat: Iterable[Any] = itertools.chain.from_iterable(column)
            if width == 2:
                flat = itertools.chain.from_iterable(flat)
            try:
                values = np.fromiter(flat, np.int64, width * tokens)
            except ValueError as error:  # fewer values than tokens
                raise ValueError(f"column {key!r} does not have one value per token of input_ids") from error
            if not np.array_equal(np.fromiter(map(len, column), np.int64, rows), lengths):
                raise ValueError(f"column {key!r} does not have one value per token of input_ids")
            values = values.reshape(-1, 2) if width == 2 else values
            kinds[key] = "tokens"
        else:
            values = np.asarray(column, dtype=np.int64).reshape(-1)
            kinds[key] = "rows"
        np.save(directory / f"{key}.npy", _narrowest(values), allow_pickle=False)
    index = {"format": CACHE_FORMAT, "rows": rows, "columns": kinds}
    (directory / _INDEX).write_text(json.dumps(index), encoding="utf-8")


def _load_columns(directory: Path) -> Columns:
    """Per-token columns memory-mapped (:class:`RaggedColumn`), per-feature ones as lists of ints."""
    index = json.loads((directory / _INDEX).read_text(encoding="utf-8"))
    starts = np.load(directory / _STARTS, allow_pickle=False)
    columns: Columns = {}
    for key, kind in index["columns"].items():
        path = directory / f"{key}.npy"
        if kind == "rows":
            columns[key] = np.load(path, allow_pickle=False).tolist()
        else:  # an empty file cannot be memory-mapped
            values = np.load(path, mmap_mode="r" if starts[-1] else None, allow_pickle=False)
            # a plain ndarray over the mapped buffer: np.memmap's slices cost microseconds each
            columns[key] = RaggedColumn(values.view(np.ndarray), starts)
    return columns


# ----------------------------------------------------------------------------- the key


def _tokenizer_state(tokenizer: Any) -> bytes:
    """The Rust tokenizer's definition (vocabulary, normaliser, pre-tokeniser, template) as saved.

    A fast tokenizer also records the truncation and padding of its last call, which would change the key
    between identical runs: ``_backend`` clears them first (each builder call sets its own).
    """
    return _backend(tokenizer).to_str().encode("utf-8")


def features_fingerprint(
    builder: Builder, examples: Sequence[Example], tokenizer: Any, settings: Mapping[str, Any]
) -> str:
    """Everything that changes the features: data, tokenizer (vocab, normaliser, ...), its sides and inputs,
    settings, code and the layout on disk. xxhash (what ``datasets`` fingerprints with): the key must cost
    little next to a hit."""
    digest = xxhash.xxh3_128()
    digest.update(examples_digest(examples).encode("ascii"))  # a cached table's digest costs nothing
    calls = {
        "padding_side": getattr(tokenizer, "padding_side", "right"),
        "truncation_side": tokenizer.truncation_side,
        "split_special_tokens": tokenizer.split_special_tokens,
        "model_input_names": list(tokenizer.model_input_names),
        "cls_token_id": tokenizer.cls_token_id,
    }
    parts = [
        _tokenizer_state(tokenizer),
        json.dumps(calls, sort_keys=True).encode("utf-8"),
        json.dumps(dict(settings), sort_keys=True, default=str).encode("utf-8"),
        f"{builder.__module__}.{builder.__qualname__}\x00{FEATURES_VERSION}\x00{CACHE_FORMAT}".encode(),
    ]
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def cached_features(
    builder: Builder,
    examples: Sequence[Example],
    tokenizer: Any,
    cache_dir: str | Path | None,
    **settings: Any,
) -> Columns:
    """Build features once per (data, tokenizer, settings); later runs memory-map them.

    Without ``cache_dir`` the builder's lists come back as they are. The entry is written to a temporary
    directory and renamed into place, so an interrupted run leaves no half-written cache behind; concurrent
    runs build it once (``core.cache``).
    """
    if cache_dir is None:
        return builder(examples, tokenizer, **settings)
    final = Path(cache_dir) / "features" / features_fingerprint(builder, examples, tokenizer, settings)

    def build() -> Columns:
        shutil.rmtree(final, ignore_errors=True)  # under the lock and not ready: a damaged entry
        columns = builder(examples, tokenizer, **settings)
        publish_directory(lambda tmp: _save_columns(columns, tmp), final)
        return _load_columns(final)

    return build_once(final, (final / _INDEX).exists, build, lambda: _load_columns(final))
