"""Results files shared by every task: written atomically, so a crash never leaves half a file."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temp file beside ``path``, flush it to disk, then rename it over ``path``.

    Readers (and a run that dies half-way) see the old file or the new one, never a mix. The temp name is
    unique per call, so two processes writing the same file cannot interleave; it is removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(
            tmp, "x", encoding="utf-8"
        ) as handle:  # "x": the umask's permissions, unlike mkstemp's 0600
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


def write_json(path: str | Path, payload: Any) -> Path:
    """``payload`` as indented UTF-8 JSON, atomically; it is serialised first, so a bad payload writes nothing."""
    return write_text_atomic(path, json.dumps(payload, ensure_ascii=False, indent=2))
