"""The internal records every layer shares.

An MRC question is one :class:`MRCExample` whatever its file format (``core/record_files.py`` reads the files,
``datamodules/mrc_formats.py`` finds the questions in them); models, metrics and retrievers only see these dicts.
"""

from __future__ import annotations

from typing import TypedDict


class MRCAnswer(TypedDict):
    """One gold span: ``context[answer_start:answer_start + len(text)] == text`` is guaranteed."""

    text: str
    answer_start: int


class MRCExample(TypedDict):
    """The single internal MRC record; ``answers == []`` means unanswerable or unlabelled (test)."""

    id: str
    title: str
    context: str
    question: str
    answers: list[MRCAnswer]
    document_id: str | None
