"""Errors raised when an input data file does not have the expected format.

Loaders raise :class:`DataFormatError` at the edge (while reading the file) instead of letting a
KeyError or IndexError surface deep inside tokenisation or training.  The message names the file,
the record and what to do about it, so ``main.py`` can print it without a traceback.  Nothing here
is MRC-specific: classification, RE, STS, ... loaders raise the same error.
"""

from __future__ import annotations

import os

__all__ = ["DataFormatError"]


class DataFormatError(ValueError):
    """A data file (or one record in it) is not in a format the loader accepts.

    Attributes:
        path: the file or directory that was being read.
        record: the offending record's id (or ``#<index>``, a line number, ...); None when the
            problem concerns the whole file.
        problem: what is wrong, in one sentence or two.
        fix: what the user should do about it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        record: str | int | None,
        problem: str,
        fix: str,
    ) -> None:
        self.path = os.fspath(path)
        self.record = record
        self.problem = problem
        self.fix = fix
        # Passing every field to ValueError keeps the exception picklable (multiprocessing workers).
        super().__init__(self.path, record, problem, fix)

    def __str__(self) -> str:
        where = self.path if self.record is None else f"{self.path}: record {self.record}"
        return f"{where}: {self.problem}\n  fix: {self.fix}"
