"""The negatives step: retrieved passages that do not answer a training question, mined for the MRC datamodule.

``datamodule.negative_passages: K`` asks, per training question, for K passages a retriever ranks high but that
cannot answer it; the reader trains on them as no-answer examples (``datamodules/negatives.py``). The retriever
is the run's ``retriever`` config (the one ``task=odqa`` reads with, so the reader sees the distractors it will
meet), over ``retriever.corpus_file`` or, when that is null, the training file's contexts.

Leak-free by construction: a question's negatives never include its own passage (same ``document_id`` or the
same text), a passage holding one of its answer texts, or the passage of any validation question. Which K of the
``negative_pool`` best-ranked candidates is drawn with a generator seeded by ``(seed, question id)``: the same
negatives in every run with one seed, whatever the order or number of questions. Results are cached as JSON
under ``cache_dir/negatives``, keyed by the questions, the held-out passages, the corpus and the retriever's
settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from core.cache import build_once
from core.files import write_json
from core.records import MRCExample
from datamodules.mrc import MRCDataModule
from datamodules.negatives import NegativesRequest
from retrievals.corpus import Passage, Query, gold_passage_ids
from retrievals.rerank import model_fingerprint
from tasks.retrieve import TASK_KEYS, plain_config, prepare_retriever, read_corpus

__all__ = ["RetrievedNegatives", "attach_negatives", "question_rng"]

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def attach_negatives(datamodule: Any, retriever_cfg: DictConfig | Mapping[str, Any]) -> Any:
    """Give an MRC datamodule the miner of its ``negative_passages``; returns the datamodule."""
    if isinstance(datamodule, MRCDataModule):
        datamodule.use_negative_miner(RetrievedNegatives(retriever_cfg))
    return datamodule


def question_rng(seed: int, question_id: str) -> np.random.Generator:
    """A generator of its own per question: the draw does not depend on which other questions are mined."""
    digest = hashlib.sha256(f"{seed}\x00{question_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _query(example: MRCExample) -> Query:
    return Query(id=example["id"], question=example["question"], context=example["context"],
                 document_id=example.get("document_id"))


def _norm(text: str) -> str:
    return unicodedata.normalize("NFC", text)


class RetrievedNegatives:
    """``(NegativesRequest) -> {question id: [passage, ...]}`` with the run's retriever; see the module docstring."""

    def __init__(self, retriever_cfg: DictConfig | Mapping[str, Any]) -> None:
        self.node = retriever_cfg  # resolved when negatives are mined: a run without them never reads it

    def resolved(self) -> dict[str, Any]:
        return plain_config(self.node)

    @staticmethod
    def corpus(cfg: Mapping[str, Any], request: NegativesRequest) -> tuple[str, str | None]:
        corpus_file = cfg.get("corpus_file") or request.train_file
        if not corpus_file:
            raise ValueError(
                "datamodule.negative_passages mines passages from retriever.corpus_file (or the training file's "
                "contexts): set retriever.corpus_file=... or datamodule.train_file=..."
            )
        split = cfg.get("corpus_split") or (None if cfg.get("corpus_file") else request.train_split)
        return str(corpus_file), split

    def __call__(self, request: NegativesRequest) -> dict[str, list[dict[str, Any]]]:
        cfg = self.resolved()
        corpus_file, split = self.corpus(cfg, request)
        passages = read_corpus(corpus_file, split=split)
        if not passages:
            raise ValueError(f"the corpus {corpus_file} has no passages to mine negatives from.")
        key = {
            "v": CACHE_VERSION,
            "questions": [[ex["id"], ex["question"], ex["context"], ex.get("document_id"),
                           [a["text"] for a in ex["answers"]]] for ex in request.examples],
            "held_out": sorted({(ex["context"], str(ex.get("document_id"))) for ex in request.held_out}),
            "corpus": [[p.id, p.title, p.text, p.document_id] for p in passages],
            "retriever": _settings({k: v for k, v in cfg.items() if k not in TASK_KEYS}),
            "k": request.k, "pool": request.pool, "seed": request.seed,
        }
        rerank = _rerank_key(cfg.get("rerank"))
        if rerank is not None:
            key["rerank"] = rerank
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()
        if request.cache_dir is None:
            return self.mine(cfg, request, corpus_file, split)
        path = Path(request.cache_dir) / "negatives" / f"{digest[:24]}.json"

        def build() -> dict[str, list[dict[str, Any]]]:
            mined = self.mine(cfg, request, corpus_file, split)
            write_json(path, mined)
            return mined

        def load() -> dict[str, list[dict[str, Any]]]:
            log.info("negatives: cached %s", path)
            return json.loads(path.read_text(encoding="utf-8"))

        return build_once(path, path.is_file, build, load)

    @staticmethod
    def mine(
        cfg: Mapping[str, Any], request: NegativesRequest, corpus_file: str, split: str | None
    ) -> dict[str, list[dict[str, Any]]]:
        """Retrieve for every training question, drop what may answer it or was held out, draw ``k`` of the rest."""
        node = {**cfg, "corpus_file": corpus_file, "corpus_split": split, "allow_missing_gold": True}
        retriever, passages, _ = prepare_retriever(node)
        queries = [_query(ex) for ex in request.examples]
        own = gold_passage_ids(queries, passages)
        held = set().union(*gold_passage_ids([_query(ex) for ex in request.held_out], passages).values())
        depth = min(len(passages), 3 * request.pool + 10)  # room for what is dropped below
        by_id = {p.id: p for p in passages}
        result = retriever.search([q.question for q in queries], depth)
        mined: dict[str, list[dict[str, Any]]] = {}
        for example, ids in zip(request.examples, result.ids, strict=True):
            answers = [_norm(a["text"]).strip() for a in example["answers"] if a["text"].strip()]
            blocked = own.get(example["id"], set()) | held
            pool = [by_id[pid] for pid in ids if pid not in blocked
                    and not any(answer in _norm(by_id[pid].text) for answer in answers)][: request.pool]
            chosen = sorted(question_rng(request.seed, example["id"]).choice(len(pool), min(request.k, len(pool)),
                                                                             replace=False).tolist())
            mined[example["id"]] = [_passage(pool[i]) for i in chosen]
        short = sum(len(v) < request.k for v in mined.values())
        if short:
            log.warning("negatives: %d of %d questions got fewer than %d (the corpus ran out of candidates)",
                        short, len(mined), request.k)
        return mined


def _settings(node: Any) -> Any:
    """A retriever's settings without its cache directories (at any depth: a hybrid's sides have theirs)."""
    if isinstance(node, Mapping):
        return {k: _settings(v) for k, v in node.items() if k != "cache_dir"}
    return node


def _rerank_key(rerank: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A reranker's part of the cache key: its settings and its weights' fingerprint (None: no reranker, so
    the keys of runs without one stay what they were)."""
    if not rerank or not rerank.get("model_path"):
        return None
    return {**rerank, "fingerprint": model_fingerprint(str(rerank["model_path"]))}


def _passage(passage: Passage) -> dict[str, Any]:
    return {"id": passage.id, "title": passage.title, "text": passage.text, "document_id": passage.document_id}
