"""The fields of classification records: the example type, dotted field lookup, label names and label maps.

``datamodules/classification.py`` (and the RE, STS and summarisation datamodules built on it) read records with
``core.record_files`` and their fields with these helpers; a label map comes from ``datamodule.label_map`` (a list,
a ``{name: id}`` mapping, or a file such as KLUE-RE's ``relation_list.json``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from core.errors import DataFormatError


class Entity(TypedDict):
    """A character span of one of the example's texts: ``end`` is exclusive (``text[start:end] == word``)."""

    role: str
    word: str
    start: int
    end: int
    type: str
    text_index: int


class ClassificationExample(TypedDict):
    id: str
    texts: list[str]
    # a class name; a real number for datamodules/regression.py
    label: str | float | None
    entities: list[Entity]


# ----------------------------------------------------------------------------- fields


MISSING = object()


def lookup(record: Mapping[str, Any], dotted: str) -> Any:
    """``record[dotted]``, else the nested value at the dotted path (``labels.binary-label``); MISSING if absent."""
    if dotted in record:
        return record[dotted]
    node: Any = record
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


def nested_feature(features: Any, dotted: str) -> Any:
    """The HF feature at a dotted path (a ClassLabel tells the class names of integer labels)."""
    node = features
    for part in ([dotted] if features is not None and dotted in features else dotted.split(".")):
        try:
            node = node[part]
        except (KeyError, TypeError):
            return None
    return node


def label_name(value: Any, src: Path, record: str, field: str, class_names: Sequence[str] | None) -> str:
    """A label value as its class name: strings as they are, integers as text (or their ClassLabel name)."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise DataFormatError(
                src, record, f"{field}={value} is a real-valued score, not a class",
                "classify a discrete field instead (KLUE-STS: datamodule.label_field=labels.binary-label), or "
                "regress the score: model=regressor datamodule=regression (docs/sts.md)",
            )
        value = int(value)
    if isinstance(value, int):
        if class_names is not None:
            if not 0 <= value < len(class_names):
                raise DataFormatError(src, record, f"{field}={value} is outside the dataset's {len(class_names)} classes",
                                      "correct the record")
            return class_names[value]
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise DataFormatError(src, record, f"{field}={value!r} is not a label", "give every record a class name or number")


def sort_labels(names: set[str]) -> list[str]:
    """Numeric names in numeric order (``0, 1, 2, 10``), others alphabetically."""
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


# ----------------------------------------------------------------------------- label maps


def parse_label_map(spec: Any) -> list[str]:
    """``label_map`` as class names in id order: a list, ``{name: id}``, ``{id: name}``, or a JSON / text file.

    A JSON file may hold any of those or one list under a single key (KLUE-RE's ``relation_list.json``:
    ``{"relations": [...]}``); a ``.txt`` file lists one class per line.
    """
    if isinstance(spec, str | Path):
        path = Path(spec)
        if not path.exists():
            raise FileNotFoundError(f"datamodule.label_map={spec}: no such file.")
        if path.suffix.lower() in (".pkl", ".pickle"):
            raise ValueError(
                f"datamodule.label_map={spec}: pickle files are not read (loading one can run code); write the "
                "mapping as JSON, e.g. json.dump(pickle.load(f), open('label_map.json', 'w'), ensure_ascii=False)."
            )
        text = path.read_text(encoding="utf-8-sig")
        if path.suffix.lower() == ".json":
            try:
                spec = json.loads(text)
            except json.JSONDecodeError as error:
                raise DataFormatError(path, f"line {error.lineno}", f"not valid JSON ({error.msg})", "repair the file") from None
            if isinstance(spec, dict) and len(spec) == 1 and isinstance(next(iter(spec.values())), list):
                spec = next(iter(spec.values()))
        else:
            spec = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
        if all(isinstance(v, int) for _, v in items):
            ids = sorted(v for _, v in items)
            if ids != list(range(len(items))):
                raise ValueError(f"datamodule.label_map: the ids {ids[:10]} must be 0..{len(items) - 1}, each once.")
            names = [name for name, _ in sorted(items, key=lambda kv: kv[1])]
        elif all(k.isdigit() for k, _ in items):
            names = [str(v) for _, v in sorted(items, key=lambda kv: int(kv[0]))]
        else:
            raise ValueError("datamodule.label_map: give a list of class names, {name: id} or {id: name}.")
    elif isinstance(spec, Sequence) and not isinstance(spec, str):
        names = [str(v) for v in spec]
    else:
        raise ValueError(f"datamodule.label_map={spec!r}: give a list of class names, a mapping, or a file path.")
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"datamodule.label_map: need at least two distinct class names (got {names[:10]}).")
    return names
