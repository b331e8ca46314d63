"""What training a retriever or reranker needs from retrieval, joined here (the datamodule imports no retriever).

* hard negatives: :class:`tasks.negatives.RetrievedNegatives` with the run's ``retriever`` (BM25 by default),
  leak-free and cached exactly as the reader's ``negative_passages``;
* the validation corpus (:class:`RetrievalEvaluation`): ``retriever.corpus_file`` or, when null, the validation
  file's contexts; each validation question's gold passages (its ``document_id`` or its context) and, for a
  reranker, the first-stage retriever's top ``datamodule.eval_candidates`` passages of each question.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from core.ranking import RankingEvaluation
from datamodules.passage_retrieval import EvaluationRequest, PassageRetrievalDataModule
from retrievals.corpus import Query, gold_passage_ids
from tasks.negatives import RetrievedNegatives
from tasks.retrieve import check_gold_in_corpus, plain_config, prepare_retriever, read_corpus

__all__ = ["RetrievalEvaluation", "attach_retrieval_data"]

log = logging.getLogger(__name__)


def attach_retrieval_data(datamodule: Any, retriever_cfg: DictConfig | Mapping[str, Any]) -> Any:
    """Give a passage-retrieval datamodule its negatives miner and evaluation corpus; returns the datamodule."""
    if isinstance(datamodule, PassageRetrievalDataModule):
        datamodule.use_retrieval_data(RetrievedNegatives(retriever_cfg), RetrievalEvaluation(retriever_cfg))
    return datamodule


class RetrievalEvaluation:
    """``(EvaluationRequest) -> RankingEvaluation`` over the run's corpus, with the run's retriever's candidates."""

    def __init__(self, retriever_cfg: DictConfig | Mapping[str, Any]) -> None:
        self.node = retriever_cfg

    def resolved(self) -> dict[str, Any]:
        return plain_config(self.node)

    def __call__(self, request: EvaluationRequest) -> RankingEvaluation:
        cfg = self.resolved()
        corpus_file = cfg.get("corpus_file") or request.validation_file
        split = cfg.get("corpus_split") or (None if cfg.get("corpus_file") else request.validation_split)
        passages = read_corpus(corpus_file, split=split)
        if not passages:
            raise ValueError(f"the evaluation corpus {corpus_file} has no passages: set retriever.corpus_file=... "
                             "to a corpus with passages (or null: the validation contexts).")
        queries = [Query(id=ex["id"], question=ex["question"], context=ex["context"],
                         document_id=ex.get("document_id")) for ex in request.examples]
        check_gold_in_corpus(queries, passages, corpus_file, request.validation_file)
        position = {p.id: i for i, p in enumerate(passages)}
        gold_ids = gold_passage_ids(queries, passages)
        gold = [sorted(position[pid] for pid in gold_ids.get(q.id, ())) for q in queries]
        candidates = None
        kind = None
        if request.candidates:
            # the first stage as configured, without any reranker of its own
            node = {**cfg, "corpus_file": corpus_file, "corpus_split": split, "allow_missing_gold": True,
                    "rerank": {**(cfg.get("rerank") or {}), "model_path": None}}
            retriever, _, _ = prepare_retriever(node)
            kind = retriever.kind
            depth = min(request.candidates, len(passages))
            result = retriever.search([q.question for q in queries], depth)
            candidates = [[position[pid] for pid in ids] for ids in result.ids]
            log.info("reranker validation: %d questions x %d %s candidates", len(queries), depth, kind)
        return RankingEvaluation(
            question_ids=[q.id for q in queries],
            passages=[{"id": p.id, "title": p.title, "text": p.text} for p in passages],
            gold=gold, candidates=candidates, retriever=kind,
        )
