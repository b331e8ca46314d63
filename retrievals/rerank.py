"""Re-score a retriever's top passages with a cross-encoder (``retriever.rerank.model_path=...``).

A cross-encoder reranker is a transformers sequence-classification model with one label
(``AutoModelForSequenceClassification``, ``num_labels == 1``) and its tokenizer in one directory: what
``python main.py +experiment=reranker`` writes to ``<run>/reranker/`` (plus ``reranker.json``,
``{"max_length": ...}``), and the format of HF cross-encoders such as ``cross-encoder/ms-marco-MiniLM-L-6-v2``
or ``BAAI/bge-reranker-base``. The score of a (question, passage) pair is ``logits[:, 0]``.

:class:`RerankedRetriever` wraps any retriever: it searches with it, re-orders the first ``top_n`` of each list
by the cross-encoder's score and leaves the rest in the base's order below them. The index (build, save, load)
is the base's own.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.text_encoders import model_fingerprint as weights_fingerprint
from retrievals.corpus import Passage
from retrievals.protocol import Retriever, SearchResult, check_queries

__all__ = ["DEFAULT_MAX_LENGTH", "SETTINGS_FILE", "CrossEncoderReranker", "RerankedRetriever", "model_fingerprint"]

log = logging.getLogger(__name__)

SETTINGS_FILE = "reranker.json"
DEFAULT_MAX_LENGTH = 384
_KEY = "retriever.rerank.model_path"
_FIX = ("train one with `python main.py +experiment=reranker` and give its <run>/reranker directory, or a "
        "transformers cross-encoder directory (a sequence-classification model with one label)")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_FINGERPRINTED = ("config.json", SETTINGS_FILE, "model.safetensors.index.json", "pytorch_model.bin.index.json")
# Tail scores: below the lowest cross-encoder score of the query, in the base's order (see RerankedRetriever).
TAIL_GAP = 1.0
TAIL_STEP = 1e-3


def model_fingerprint(directory: str | os.PathLike[str]) -> str:
    """The fingerprint of a reranker's weights, config and ``reranker.json`` (e.g. for a cache key)."""
    return weights_fingerprint(directory, names=_FINGERPRINTED, suffixes=_WEIGHT_SUFFIXES)


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


class CrossEncoderReranker:
    """A one-label cross-encoder: :meth:`score` gives ``logits[:, 0]`` of each (query, passage) pair.

    ``max_length``: the longest pair in tokens (the passage is truncated, never the question); ``None``: the
    ``reranker.json`` beside the model, else 384 (and never past what the model's positions allow).
    ``index_title``: the passage text is ``"title\\ntext"``, as the sparse retrievers index it.
    """

    def __init__(
        self,
        model_path: str,
        top_n: int = 20,
        batch_size: int = 32,
        max_length: int | None = None,
        device: str = "auto",
        index_title: bool = True,
    ) -> None:
        for key, value in (("top_n", top_n), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"retriever.rerank.{key}={value!r}: must be a positive integer.")
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                       or max_length < 8):
            raise ValueError(f"retriever.rerank.max_length={max_length!r}: must be null or an integer >= 8.")
        self.model_path, self.top_n, self.batch_size = str(model_path or ""), top_n, batch_size
        self.index_title = bool(index_title)
        self.device = _device(device)
        self.model, self.tokenizer, self.fingerprint = self._load(self.model_path)
        self.max_length = self._max_length(max_length)

    def _load(self, name_or_path: str) -> tuple[Any, Any, str]:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not name_or_path:
            raise ValueError(f"{_KEY} is not set: {_FIX}.")
        path = Path(name_or_path)
        looks_local = (path.is_absolute() or name_or_path.startswith(".") or path.exists()
                       or name_or_path.count("/") > 1)
        if looks_local and not path.is_dir():
            raise ValueError(f"{_KEY}={name_or_path}: no such directory; {_FIX}.")
        if path.is_dir() and not (path / "config.json").is_file():
            raise ValueError(f"{_KEY}={name_or_path}: the directory holds no model (no config.json); {_FIX}.")
        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            model = AutoModelForSequenceClassification.from_pretrained(name_or_path)
        except (OSError, ValueError) as error:  # missing weights, not a model id, offline
            raise ValueError(f"{_KEY}={name_or_path}: cannot load a cross-encoder from it "
                             f"({str(error).splitlines()[0]}); {_FIX}.") from None
        if model.config.num_labels != 1:
            raise ValueError(
                f"{_KEY}={name_or_path}: the model has num_labels={model.config.num_labels}, a reranker has one "
                f"(its logit is the pair's score); {_FIX}."
            )
        model.to(self.device).eval()
        fingerprint = model_fingerprint(path) if path.is_dir() else f"hub:{name_or_path}"
        return model, tokenizer, fingerprint

    def _max_length(self, asked: int | None) -> int:
        length = asked
        settings = Path(self.model_path) / SETTINGS_FILE
        if length is None and settings.is_file():
            try:
                length = int(json.loads(settings.read_text(encoding="utf-8"))["max_length"])
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{settings}: not a valid {SETTINGS_FILE} ({error}); it should read "
                                 '{"max_length": 384}, or set retriever.rerank.max_length.') from None
        length = DEFAULT_MAX_LENGTH if length is None else length
        limits = [getattr(self.tokenizer, "model_max_length", None),
                  getattr(self.model.config, "max_position_embeddings", None)]
        limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
        if limits and length > min(limits):
            log.info("retriever.rerank.max_length=%d is longer than the model allows: using %d", length, min(limits))
            length = min(limits)
        return length

    def passage_text(self, passage: Passage) -> str:
        return f"{passage.title}\n{passage.text}" if self.index_title and passage.title else passage.text

    def score_pairs(self, pairs: Sequence[tuple[str, Passage]]) -> list[float]:
        """``logits[:, 0]`` of each (query, passage) pair, in order (batched; pairs of similar length together)."""
        import torch

        texts = [(query, self.passage_text(passage)) for query, passage in pairs]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i][0]) + len(texts[i][1]))
        out = [0.0] * len(texts)
        with torch.inference_mode():
            for begin in range(0, len(order), self.batch_size):
                chunk = order[begin : begin + self.batch_size]
                inputs = self._encode([texts[i][0] for i in chunk], [texts[i][1] for i in chunk])
                logits = self.model(**inputs).logits[:, 0].float().cpu().tolist()
                for i, value in zip(chunk, logits, strict=True):
                    out[i] = float(value)
        return out

    def _encode(self, queries: list[str], texts: list[str]) -> Any:
        """Pairs tokenised with the passage truncated; a question longer than ``max_length`` alone is cut too."""
        kwargs = {"max_length": self.max_length, "padding": True, "return_tensors": "pt"}
        try:
            inputs = self.tokenizer(queries, texts, truncation="only_second", **kwargs)
            too_long = inputs["input_ids"].shape[1] > self.max_length
        except Exception:  # noqa: BLE001 - a question that leaves no room for the passage
            too_long = True
        if too_long:
            inputs = self.tokenizer(queries, texts, truncation="longest_first", **kwargs)
        return inputs.to(self.device)

    def score(self, query: str, passages: Sequence[Passage]) -> list[float]:
        """The cross-encoder's score of ``query`` against each passage (higher is better)."""
        return self.score_pairs([(query, passage) for passage in passages])


class RerankedRetriever:
    """``base``'s search, each query's first ``reranker.top_n`` re-ordered by the cross-encoder.

    Scores: a re-ranked passage gets its cross-encoder score; the passages past ``top_n`` keep the base's order
    with scores ``lowest re-ranked score - 1 - i * 0.001`` (``i`` = 0, 1, ... down the tail), so they stay below
    every re-ranked one and in order. The index is ``base``'s: :meth:`index`, :meth:`save` and :meth:`report`
    delegate to it. To use a loaded index, load the base and wrap it, then hand the passages over with
    :meth:`use_passages` (``tasks/retrieve.py`` ``prepare_retriever`` does that).
    """

    def __init__(self, base: Retriever, reranker: CrossEncoderReranker) -> None:
        if not isinstance(base, Retriever):
            raise TypeError(f"RerankedRetriever wraps a retriever (the retrievals.protocol.Retriever members); got "
                            f"{type(base).__name__}.")
        self.base, self.reranker = base, reranker
        self.kind = f"{base.kind}+rerank"
        self._passages: dict[str, Passage] = {}

    @property
    def top_n(self) -> int:
        return self.reranker.top_n

    def use_passages(self, passages: Sequence[Passage]) -> RerankedRetriever:
        """The passages of the base's index (their texts are re-scored); returns ``self``."""
        self._passages = {p.id: p for p in passages}
        return self

    def index(self, passages: Sequence[Passage], *, source: str | None = None) -> RerankedRetriever:
        self.base.index(passages, source=source)
        return self.use_passages(passages)

    def search(self, queries: Sequence[str], k: int) -> SearchResult:
        """The base's top ``max(k, top_n)`` (at most the corpus), the first ``top_n`` re-scored; the top ``k``."""
        check_queries(queries)
        if not self._passages:
            raise RuntimeError("RerankedRetriever.search: no passages; call index(passages), or "
                               "use_passages(passages) after loading the base's index.")
        n = len(self._passages)
        valid = isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= n
        depth = min(max(k, self.top_n), n) if valid else k  # a bad k: the base's search says what is wrong
        found = self.base.search(queries, depth)
        pairs = [(query, self._passages[pid]) for query, ids in zip(queries, found.ids, strict=True)
                 for pid in ids[: self.top_n]]
        scores = iter(self.reranker.score_pairs(pairs))
        ids_out: list[list[str]] = []
        scores_out: list[list[float]] = []
        for ids in found.ids:
            head = ids[: self.top_n]
            head_scores = [next(scores) for _ in head]
            order = sorted(range(len(head)), key=lambda i: -head_scores[i])  # stable: base order on ties
            new_ids = [head[i] for i in order] + list(ids[self.top_n :])
            new_scores = [head_scores[i] for i in order]
            if head_scores:
                floor = min(head_scores) - TAIL_GAP
                new_scores += [floor - i * TAIL_STEP for i in range(len(ids) - len(head))]
            ids_out.append(new_ids[:k])
            scores_out.append(new_scores[:k])
        return SearchResult(ids_out, scores_out)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        return self.base.save(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, passages: Sequence[Passage] | None = None,
             like: Retriever | None = None) -> Retriever:
        raise TypeError("RerankedRetriever.load: a reranked retriever has no index of its own; load the base "
                        "retriever's index (type(base).load(directory, ...)) and wrap it: "
                        "RerankedRetriever(base, reranker).use_passages(passages).")

    def params(self) -> dict[str, Any]:
        return {**self.base.params(), "rerank": {
            "model_path": self.reranker.model_path, "top_n": self.top_n, "max_length": self.reranker.max_length,
            "fingerprint": self.reranker.fingerprint}}

    def report(self) -> dict[str, Any]:
        return {**self.base.report(), "rerank_device": self.reranker.device}
