"""Seeded text augmentation for training data: AEDA and EDA-lite, with no word lists or WordNet.

* ``aeda`` (Karimi et al., 2021): insert between 1 and ``aeda_ratio`` x words punctuation marks at random
  word boundaries. The words and their order stay, so labels stay true (also for NLI pairs).
* ``eda`` (EDA without synonyms): either swap ``swap_ratio`` x words random word pairs, or delete each word
  with probability ``delete_prob`` (one of the two per variant, chosen at random).

Protected spans (relation-extraction entities) are never split, swapped away or deleted; their new
offsets are returned, so entity markers still land on the entity.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

AUGMENT_METHODS = ("none", "aeda", "eda")
PUNCTUATION = (".", ",", "!", "?", ";", ":")
WORD = re.compile(r"\S+")


class Piece:
    """One whitespace-separated word; ``spans`` are protected spans inside it, relative to its start."""

    def __init__(self, text: str, spans: list[tuple[int, int, int]] | None = None) -> None:
        self.text = text
        self.spans = spans or []  # (span index, start, end) relative to the word

    @property
    def locked(self) -> bool:
        return bool(self.spans)


def split_words(text: str, protected: Sequence[tuple[int, int]]) -> list[Piece]:
    """Words of ``text``; a protected span that crosses spaces is kept as one piece."""
    bounds = [[m.start(), m.end()] for m in WORD.finditer(text)]
    merged: list[list[int]] = []
    for start, end in bounds:  # join words that a protected span crosses ("New York")
        if merged and any(s < merged[-1][1] and e > start for s, e in protected):
            merged[-1][1] = end
        else:
            merged.append([start, end])
    pieces = []
    for start, end in merged:
        spans = [(i, s - start, e - start) for i, (s, e) in enumerate(protected) if start <= s and e <= end]
        pieces.append(Piece(text[start:end], spans))
    covered = sorted(i for p in pieces for i, _, _ in p.spans)
    if covered != list(range(len(protected))):
        raise ValueError(f"a protected span {list(protected)} lies outside the words of {text!r}")
    return pieces


def join(pieces: Sequence[Piece], n_spans: int) -> tuple[str, list[tuple[int, int]]]:
    """The text of ``pieces`` joined by single spaces, and every protected span's new (start, end)."""
    spans: list[tuple[int, int]] = [(0, 0)] * n_spans
    out, position = [], 0
    for piece in pieces:
        for i, s, e in piece.spans:
            spans[i] = (position + s, position + e)
        out.append(piece.text)
        position += len(piece.text) + 1
    return " ".join(out), spans


def aeda(pieces: list[Piece], rng: random.Random, ratio: float, punctuation: Sequence[str]) -> list[Piece]:
    count = rng.randint(1, max(1, int(ratio * len(pieces))))
    positions = sorted(rng.sample(range(len(pieces)), min(count, len(pieces))), reverse=True)
    out = list(pieces)
    for position in positions:
        out.insert(position, Piece(rng.choice(list(punctuation))))
    return out


def random_swap(pieces: list[Piece], rng: random.Random, ratio: float) -> list[Piece]:
    free = [i for i, p in enumerate(pieces) if not p.locked]
    out = list(pieces)
    if len(free) < 2:
        return out
    for _ in range(max(1, int(ratio * len(pieces)))):
        a, b = rng.sample(free, 2)
        out[a], out[b] = out[b], out[a]
    return out


def random_deletion(pieces: list[Piece], rng: random.Random, probability: float) -> list[Piece]:
    kept = [p for p in pieces if p.locked or rng.random() >= probability]
    return kept or [rng.choice(pieces)]


def augment_text(
    text: str,
    method: str,
    rng: random.Random,
    settings: Mapping[str, Any],
    protected: Sequence[tuple[int, int]] = (),
) -> tuple[str, list[tuple[int, int]]]:
    """One augmented variant of ``text`` and the new offsets of the ``protected`` (start, end) spans."""
    pieces = split_words(text, protected)
    if not pieces:
        return text, list(protected)
    if method == "aeda":
        pieces = aeda(pieces, rng, float(settings.get("aeda_ratio", 0.3)), settings.get("punctuation") or PUNCTUATION)
    elif method == "eda":
        if rng.random() < 0.5:
            pieces = random_swap(pieces, rng, float(settings.get("swap_ratio", 0.1)))
        else:
            pieces = random_deletion(pieces, rng, float(settings.get("delete_prob", 0.1)))
    elif method != "none":
        raise ValueError(f"datamodule.augment.name={method!r} is unknown: choose one of {', '.join(AUGMENT_METHODS)}.")
    return join(pieces, len(protected))
