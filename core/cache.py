"""Cache entries shared by concurrent runs (two terminals, an Optuna sweep's workers, DDP ranks).

One rule for every cache under ``paths.cache_dir`` (trained tokenizers, feature tables, difficulty scores,
tokenised corpora) and for a saved retrieval index: an entry is read only once it is complete, and it is
built by one process at a time. The others wait on a lock file beside it (``filelock``: an OS lock, freed
by the kernel even when its holder is killed with SIGKILL) and then read what was built. Writers still
write to a temporary name and rename into place, so a reader without the lock never sees half an entry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

T = TypeVar("T")


@contextlib.contextmanager
def build_lock(target: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the lock for building ``target`` (a file or a directory), across processes and threads."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.parent / f".{target.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("Waiting for another run that is building %s", target)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def build_once(
    target: str | os.PathLike[str], ready: Callable[[], bool], build: Callable[[], T], load: Callable[[], T]
) -> T:
    """``load()`` when the entry is ``ready()``; else build it under the lock, checking again once it is held
    (another process may have built it while this one waited)."""
    if ready():
        return load()
    with build_lock(target):
        if ready():
            return load()
        return build()


def publish_directory(write: Callable[[Path], None], final: str | os.PathLike[str]) -> Path:
    """``write(tmp)`` fills a temporary directory beside ``final``, which is then renamed to ``final``.

    A crash (even SIGKILL) leaves the old entry or none, never a half-written directory under the final name.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # a directory is already there (written without this lock): it is complete
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
