"""Tokenised corpora: a compact form (:class:`TokenizedCorpus`: a vocabulary plus flat int32 token ids and
offsets) and :func:`tokenize_corpus`, which caches it under ``<cache_dir>/retrieval/tokens/`` keyed by the
corpus and tokenizer fingerprints, so a 60k-passage corpus is tokenised once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np

from core.cache import build_lock
from core.files import write_text_atomic
from retrievals.corpus import Passage
from retrievals.tokenizers import Tokenizer

__all__ = ["PassageTexts", "TokenizedCorpus", "savez_atomic", "tokenize_ahead", "tokenize_corpus"]

log = logging.getLogger(__name__)

_PARALLEL_MIN_TEXTS = 20_000
_TOKENIZE_CHUNK = 256  # texts tokenised at once: enough for Kiwi's threads; few token strings alive at a time


# ----------------------------------------------------------------------------- tokenised corpora


@dataclass
class TokenizedCorpus:
    """Token strings of many texts in compact form: text ``i`` is ``vocab[ids[offsets[i]:offsets[i+1]]]``."""

    vocab: list[str]
    ids: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_lists(cls, token_lists: Iterable[Sequence[str]]) -> TokenizedCorpus:
        return cls.from_chunks([list(token_lists)])

    @classmethod
    def from_chunks(cls, chunks: Iterable[Sequence[Sequence[str]]]) -> TokenizedCorpus:
        """Token lists arriving a chunk at a time (e.g. from :func:`tokenize_corpus`): each chunk becomes int32
        ids at once, so the strings of only one chunk are alive at any time. Ids follow first occurrence."""
        vocab: dict[str, int] = {}
        setdefault = vocab.setdefault
        ids: list[np.ndarray] = []
        lengths: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        for lists in chunks:
            sizes = np.fromiter(map(len, lists), np.int64, len(lists))
            flat = (setdefault(t, len(vocab)) for tokens in lists for t in tokens)
            ids.append(np.fromiter(flat, np.int32, int(sizes.sum())))
            lengths.append(sizes)
        flat_ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32)
        return cls(list(vocab), flat_ids, np.cumsum(np.concatenate(lengths)))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def tokens(self, i: int) -> list[str]:
        vocab = self.vocab
        return [vocab[j] for j in self.ids[self.offsets[i] : self.offsets[i + 1]].tolist()]

    def as_lists(self) -> list[list[str]]:
        vocab, ids, offsets = self.vocab, self.ids.tolist(), self.offsets.tolist()
        return [[vocab[j] for j in ids[a:b]] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]

    def save(self, directory: Path, stem: str = "tokens") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        write_text_atomic(directory / f"{stem}.vocab.json", json.dumps(self.vocab, ensure_ascii=False))
        savez_atomic(directory / f"{stem}.npz", ids=self.ids, offsets=self.offsets)

    @classmethod
    def load(cls, directory: Path, stem: str = "tokens") -> TokenizedCorpus:
        vocab = json.loads((directory / f"{stem}.vocab.json").read_text(encoding="utf-8"))
        with np.load(directory / f"{stem}.npz", allow_pickle=False) as arrays:
            return cls(vocab, arrays["ids"], arrays["offsets"])


def tokenize_corpus(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    corpus_key: str,
    cache_dir: str | os.PathLike[str] | None = None,
) -> TokenizedCorpus:
    """Tokenise ``texts`` (the corpus identified by ``corpus_key``), reusing the on-disk cache when present.

    Concurrent runs on one cache tokenise it once: the others wait for the lock and read the result.
    """
    if not cache_dir:
        return _tokenize_texts(tokenizer, texts)
    key = hashlib.sha256(f"{corpus_key}\x00{tokenizer.fingerprint()}".encode()).hexdigest()[:24]
    folder = Path(cache_dir) / "retrieval" / "tokens" / key
    corpus = _cached_tokens(folder, len(texts))
    if corpus is not None:
        return corpus
    with build_lock(folder):
        corpus = _cached_tokens(folder, len(texts))
        if corpus is None:
            corpus = _tokenize_texts(tokenizer, texts)
            corpus.save(folder)
    return corpus


def _cached_tokens(folder: Path, size: int) -> TokenizedCorpus | None:
    """The tokenised corpus saved in ``folder``; None when absent, unreadable or of another size."""
    if not ((folder / "tokens.npz").exists() and (folder / "tokens.vocab.json").exists()):
        return None
    try:
        corpus = TokenizedCorpus.load(folder)
    except (OSError, ValueError, KeyError) as error:
        log.warning("Ignoring unreadable token cache %s (%s)", folder, error)
        return None
    if len(corpus) != size:
        return None
    log.info("Reusing tokenised corpus %s", folder)
    return corpus


def _tokenize_texts(tokenizer: Tokenizer, texts: Sequence[str]) -> TokenizedCorpus:
    start = time.perf_counter()
    # Processes only on request (num_workers >= 2): on 2 shared cores they did not pay (60k passages,
    # char bigrams: 13.9 s in one process, 16.6 s in two), as the texts travel to the workers.
    if tokenizer.python_only and tokenizer.num_workers >= 2 and len(texts) >= _PARALLEL_MIN_TEXTS:
        corpus = _parallel_tokenize(tokenizer, texts, tokenizer.num_workers)
    else:
        chunks = (
            tokenizer.tokenize(texts[i : i + _TOKENIZE_CHUNK]) for i in range(0, len(texts), _TOKENIZE_CHUNK)
        )
        corpus = TokenizedCorpus.from_chunks(chunks)
    log.info(
        "Tokenised %d passages with %s in %.1fs", len(texts), tokenizer.name, time.perf_counter() - start
    )
    return corpus


def _ids_chunk(args: tuple[dict[str, Any], list[str]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Worker: tokenise a chunk and return it as ids (cheap to send back, unlike lists of strings)."""
    config, texts = args
    part = TokenizedCorpus.from_lists(Tokenizer(config).tokenize(texts))
    return part.vocab, part.ids, part.offsets


def _parallel_tokenize(tokenizer: Tokenizer, texts: Sequence[str], workers: int) -> TokenizedCorpus:
    """Tokenise in ``workers`` processes and merge: the same vocabulary order and ids as one process."""
    import multiprocessing

    size = -(-len(texts) // (workers * 2))
    chunks = [(tokenizer.config, list(texts[i : i + size])) for i in range(0, len(texts), size)]
    # spawn, not fork: the caller may hold threads (Kiwi, HF tokenizers, torch) that fork would copy badly.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_ids_chunk, chunks))
    vocab: dict[str, int] = {}
    ids, offsets, shift = [], [np.zeros(1, dtype=np.int64)], 0
    for part_vocab, part_ids, part_offsets in parts:
        mapping = np.fromiter(
            (vocab.setdefault(t, len(vocab)) for t in part_vocab), np.int32, len(part_vocab)
        )
        ids.append(mapping[part_ids] if part_ids.size else part_ids)
        offsets.append(part_offsets[1:] + shift)
        shift += int(part_offsets[-1])
    return TokenizedCorpus(list(vocab), np.concatenate(ids).astype(np.int32), np.concatenate(offsets))


# ----------------------------------------------------------------------------- streaming


class PassageTexts(Sequence[str]):
    """The texts to index, made on demand: tokenising in chunks then never holds a second copy of the corpus."""

    def __init__(self, passages: Sequence[Passage], text: Callable[[Passage], str]) -> None:
        self._passages, self._text = passages, text

    def __len__(self) -> int:
        return len(self._passages)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self._text(p) for p in self._passages[index]]
        return self._text(self._passages[index])


T = TypeVar("T")


def tokenize_ahead(
    tokenizer: Tokenizer, texts: Sequence[str], chunk: int, convert: Callable[[list[list[str]]], T]
) -> Iterator[T]:
    """``convert(tokens)`` of each chunk of ``texts``, the next chunk tokenised in a worker thread while the
    caller uses this one: Kiwi's analysis (most of a query's time) and the numba kernel both release the GIL,
    so on two cores tokenising and scoring overlap. One worker: a tokenizer is never used by two threads."""
    chunks = [texts[i : i + chunk] for i in range(0, len(texts), chunk)]
    if len(chunks) <= 1:
        yield from (convert(tokenizer.tokenize(part)) for part in chunks)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="tokenize-ahead") as pool:
        pending = pool.submit(lambda part: convert(tokenizer.tokenize(part)), chunks[0])
        for part in chunks[1:]:
            done = pending.result()
            pending = pool.submit(lambda part: convert(tokenizer.tokenize(part)), part)
            yield done
        yield pending.result()


# ----------------------------------------------------------------------------- atomic writes


def savez_atomic(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` to a temp file beside ``path``, fsynced, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp.npz")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
