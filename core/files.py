"""Results files shared by every task: written atomically, so a crash never leaves half a file.

Every writer here goes through ``atomic_open``: the bytes go to a temp file beside the target, which is
flushed to disk and renamed over the target. A process killed at any moment (even SIGKILL) leaves the old
file or the new one, plus at worst a stale temp file that ``is_temp_file`` recognises and
``remove_stale_temps`` deletes (its name starts with a dot and ends in ``.tmp``: no glob for ``*.ckpt`` or
``*.json`` ever picks it up).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

# ".<target name>.<8 hex digits>.tmp", the only names atomic_open writes to
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")


def temp_path(path: str | Path) -> Path:
    """A fresh temp name beside ``path``: unique per call, so two writers of one file never share a temp."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def is_temp_file(path: str | Path) -> bool:
    """Whether ``path`` is named like a temp file of ``atomic_open`` (a writer's, finished or killed)."""
    return bool(_TEMP_NAME.match(Path(path).name))


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete the temp files that writers killed mid-write left in ``directory``; returns what was removed.

    Only for a directory no live process writes into (a run dir at the start of its run): a live writer's temp
    would go too, and its rename then fails loudly instead of completing.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in sorted(directory.iterdir()):
        if is_temp_file(path) and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def fsync_directory(directory: str | Path) -> None:
    """Make a rename inside ``directory`` durable (a power cut, not just a killed process); a no-op where
    directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory: the rename itself is still atomic
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, binary: bool = False) -> Iterator[IO[Any]]:
    """``open(path, "w")`` that publishes the file only once it is complete: write to a temp file beside
    ``path``, fsync it, ``os.replace`` it over ``path``, fsync the directory.

    An exception inside the block removes the temp and leaves ``path`` as it was; a SIGKILL leaves ``path`` as
    it was plus the temp (``remove_stale_temps``). The temp gets the umask's permissions ("x" mode, unlike
    mkstemp's 0600), and lives in the target's directory: a rename never crosses filesystems, so it is atomic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "xb") if binary else open(tmp, "x", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_directory(path.parent)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (``atomic_open``): readers, and a run that dies half-way, see the
    old file or the new one, never a mix."""
    with atomic_open(path) as handle:
        handle.write(text)
    return Path(path)


def write_json(path: str | Path, payload: Any) -> Path:
    """``payload`` as indented UTF-8 JSON, atomically; it is serialised first, so a bad payload writes nothing."""
    return write_text_atomic(path, json.dumps(payload, ensure_ascii=False, indent=2))
