"""Index directories: ``manifest.json``, the checks every retriever makes on load, and :func:`load_retriever`.

A saved index is a directory whose ``manifest.json`` is written last (so a directory with one is complete)::

    {"format": "kornlp-retrieval-index", "format_version": 3,
     "retriever": "bm25", "target": "retrievals.bm25.BM25Retriever",      # the class: Hydra's _target_
     "params": {...}, "corpus": {"fingerprint": "...", "passages": 1200}, "created_utc": "...", ...}

``target`` is the one registry: :func:`load_retriever` imports that class and calls its ``load``, so a
retriever of your own loads the same way with no name table to edit. Each implementation adds its own keys
(the sparse engine: tokenizer, vocabulary size and array names; Elasticsearch: the server index) and files
(JSON, ``.npy`` read with ``allow_pickle=False``; never pickle).
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.errors import DataFormatError
from core.files import write_text_atomic
from retrievals.corpus import Passage, corpus_fingerprint

__all__ = [
    "INDEX_FORMAT",
    "INDEX_FORMAT_VERSION",
    "REBUILD_FIX",
    "check_corpus",
    "check_params",
    "check_setting",
    "check_target",
    "load_retriever",
    "manifest_header",
    "read_manifest",
    "resolve_target",
    "target_name",
    "write_manifest",
]

INDEX_FORMAT = "kornlp-retrieval-index"
# 2: BM25 / TF-IDF indexes store their common terms as dense rows and record retriever.dtype; a version-1
# index (all sparse, float64) still loads. 3: one index.<name>.npy per array (listed under "arrays"), so that
# an index opens memory-mapped; versions 1 and 2 (one index.npz) still load, into RAM.
INDEX_FORMAT_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)
MANIFEST = "manifest.json"
_PROTOCOL = ("kind", "index", "search", "save", "load", "params", "report")
REBUILD_FIX = "delete that directory (or point retriever.index_dir elsewhere) to build a new index"


def target_name(cls: type | object) -> str:
    """``module.QualName`` of a class (or of an object's class): what ``_target_`` and the manifest name."""
    kind = cls if isinstance(cls, type) else type(cls)
    return f"{kind.__module__}.{kind.__qualname__}"


def manifest_header(retriever: Any, *, fingerprint: str | None, passages: int) -> dict[str, Any]:
    """The keys every manifest has: format, kind, target class, ``params()``, corpus fingerprint and size."""
    return {
        "format": INDEX_FORMAT,
        "format_version": INDEX_FORMAT_VERSION,
        "retriever": retriever.kind,
        "target": target_name(retriever),
        "params": retriever.params(),
        "corpus": {"fingerprint": fingerprint, "passages": int(passages)},
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_manifest(directory: str | os.PathLike[str], manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` atomically; call it after every other file of the index."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=2))
    return out


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of an index directory; a :class:`DataFormatError` naming the fix when there is none."""
    src = Path(directory)
    path = src / MANIFEST
    if not path.exists():
        raise DataFormatError(
            src,
            None,
            "not a retrieval index directory (no manifest.json)",
            "build one first (retriever.save / task=retrieve retriever.index_dir=...), or check the path",
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataFormatError(path, None, f"not valid JSON ({error.msg})", REBUILD_FIX) from None
    if not isinstance(manifest, dict) or manifest.get("format") != INDEX_FORMAT:
        raise DataFormatError(path, None, f"not a {INDEX_FORMAT} manifest", REBUILD_FIX)
    if manifest.get("format_version") not in _READABLE_VERSIONS:
        raise DataFormatError(
            path,
            None,
            f"index format version {manifest.get('format_version')} is not one of "
            f"{', '.join(map(str, _READABLE_VERSIONS))}",
            REBUILD_FIX,
        )
    if manifest["format_version"] == 1 and manifest.get("retriever") in ("bm25", "tfidf"):
        manifest["params"] = {**manifest.get("params", {}), "dtype": "float64"}  # before retriever.dtype
    manifest.setdefault("target", manifest.get("class"))  # indexes saved before "target" named it "class"
    return manifest


def resolve_target(directory: str | os.PathLike[str], manifest: Mapping[str, Any]) -> type:
    """The retriever class the manifest names (imported), checked to have the protocol's members: only a
    retriever's own ``load`` is ever called on a manifest."""
    src = Path(directory)
    target = manifest.get("target")
    module, _, name = str(target or "").rpartition(".")
    cls: Any = None
    if module:
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError as error:
            raise DataFormatError(
                src / MANIFEST,
                None,
                f"cannot import the retriever class {target!r} ({error})",
                "put its module on PYTHONPATH, or " + REBUILD_FIX,
            ) from None
    if not isinstance(cls, type) or not all(hasattr(cls, name) for name in _PROTOCOL):
        raise DataFormatError(
            src / MANIFEST,
            None,
            f"names no retriever class ({target!r} lacks the retrievals.protocol.Retriever members)",
            REBUILD_FIX,
        )
    return cls


def check_target(src: Path, manifest: Mapping[str, Any], cls: type, fix: str = REBUILD_FIX) -> None:
    """Refuse to load another class's index (a TF-IDF index as BM25, a server index as a local one)."""
    if manifest.get("target") != target_name(cls):
        kind = manifest.get("retriever")
        raise DataFormatError(
            src,
            None,
            f"this is a {kind} index, not a {getattr(cls, 'kind', cls.__name__)} one",
            f"load it with retriever={kind}, or {fix}",
        )


def check_corpus(
    src: Path, manifest: Mapping[str, Any], passages: Sequence[Passage] | None, fix: str = REBUILD_FIX
) -> None:
    """Refuse an index built from another corpus (ids, titles and texts, in order)."""
    if passages is None:
        return
    have = corpus_fingerprint(passages)
    built = manifest["corpus"]
    if have != built["fingerprint"]:
        raise DataFormatError(
            src,
            None,
            f"the index was built from a different corpus ({built['passages']} passages, fingerprint "
            f"{built['fingerprint']}) than the one given ({len(passages)} passages, fingerprint {have})",
            fix,
        )


def check_params(
    src: Path, manifest: Mapping[str, Any], params: Mapping[str, Any] | None, fix: str = REBUILD_FIX
) -> None:
    """Refuse an index whose recorded ``params()`` differ from ``params`` (every differing key named)."""
    if params is None:
        return
    built = manifest.get("params", {})
    diff = {k: (built.get(k), v) for k, v in params.items() if built.get(k) != v}
    if diff:
        shown = ", ".join(f"{k}: index {a!r} vs asked {b!r}" for k, (a, b) in diff.items())
        raise DataFormatError(
            src,
            None,
            f"the index was built with other parameters ({shown})",
            f"set them to the index's, or {fix}",
        )


def check_setting(
    src: Path, manifest: Mapping[str, Any], key: str, value: Any, fix: str = REBUILD_FIX, default: Any = None
) -> None:
    """Refuse an index whose top-level manifest ``key`` (e.g. ``index_title``) differs from ``value``."""
    if value is None:
        return
    built = manifest.get(key, default)
    if built != value:
        raise DataFormatError(
            src, None, f"the index was built with {key}={built}", f"set retriever.{key} to match, or {fix}"
        )


def load_retriever(directory: str | os.PathLike[str], **checks: Any) -> Any:
    """Load any saved index with the class its manifest names; ``checks`` go to that class's ``load``
    (``passages=``, ``like=``; the sparse engine and Elasticsearch also take ``tokenizer=`` / ``params=`` /
    ``index_title=``)."""
    return resolve_target(directory, read_manifest(directory)).load(directory, **checks)
