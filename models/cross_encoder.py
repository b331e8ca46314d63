"""A cross-encoder reranker trained by the framework: (question, passage) read together by one encoder, one
relevance logit out (a transformers sequence-classification model with one label, the format of the public
rerankers such as ``BAAI/bge-reranker-base``).

Training: each question with its positive and ``hard_negatives`` first-stage negatives; the loss is the
cross-entropy of the positive among its group (listwise, as in Nogueira & Cho's monoBERT successors).
Validation re-ranks each validation question's ``datamodule.eval_candidates`` best passages of the first-stage
retriever (the run's ``retriever``, BM25 by default) and logs ``recall@k`` / ``mrr@10`` after re-ranking, and
``first_stage_recall@k`` of the same candidates before, so the gain is read off one run.
``task=fit`` writes ``<run>/reranker/``: what ``retriever.rerank.model_path=`` loads.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification

from core.contracts import RankingData
from core.ranking import index_rankings
from models.backbone import Backbone
from models.base import TaskModule
from models.encoder import build_encoder
from models.ranking_outputs import IndexedRows

__all__ = ["CrossEncoder"]

EVAL_CUTOFFS = (1, 5, 10, 20)
MRR_K = 10
SETTINGS_FILE = "reranker.json"


def one_label(backbone: Backbone) -> Backbone:
    """The backbone with a one-logit classification head (a relevance score)."""
    config = copy.deepcopy(backbone.config)
    config.num_labels = 1
    return Backbone(backbone.tokenizer, config, backbone.weights, backbone.source, backbone.extra)


class CrossEncoder(TaskModule):
    """``model=cross_encoder``: see the module docstring."""

    progress_scores = ("recall@1",)

    def __init__(
        self,
        backbone: Backbone,
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any],
        hard_negatives: int = 3,
        max_length: int = 320,
        init_from: str | None = None,
        monitor: Mapping[str, Any] | None = None,
        pairing: str = "cross",
    ) -> None:
        super().__init__(optimizer, scheduler)
        if pairing != "cross":
            raise ValueError(f"model.pairing={pairing!r}: model=cross_encoder batches are datamodule.pairing=cross.")
        self.save_hyperparameters(ignore=["backbone"])
        backbone = one_label(backbone)
        self.attach(backbone, build_encoder(AutoModelForSequenceClassification, backbone, init_from=init_from))
        self.pair_scores = IndexedRows()  # per pair: (question, candidate rank, score)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(**self.encoder_inputs(batch)).logits[:, 0].float()

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        group = int(batch["group_size"])
        if group != 1 + self.hparams.hard_negatives:
            raise ValueError(f"model.hard_negatives={self.hparams.hard_negatives} but the batch has groups of "
                             f"{group}: set datamodule.hard_negatives to model.hard_negatives.")
        logits = self(batch).view(-1, group)
        return F.cross_entropy(logits, torch.zeros(logits.size(0), dtype=torch.long, device=logits.device))

    # ------------------------------------------------------------------ validation: re-rank the candidates

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.eval_step(batch, "validation")

    def eval_step(self, batch: Mapping[str, torch.Tensor], split: str) -> None:
        rows = torch.stack([batch["question"].float(), batch["rank"].float(), self(batch)], dim=1)
        self.pair_scores.update(batch["pair"], rows)

    def eval_outputs(self, split: str) -> dict[str, Any] | None:
        """Per question seen: its candidates' ranks, re-ordered by score (stable), and the original order."""
        _, rows = self.pair_scores.compute()
        self.pair_scores.reset()
        if not len(rows):
            return None
        evaluation = self.evaluation_data(RankingData, "model=cross_encoder is validated on a passage-retrieval "
                                          "datamodule (datamodule=passage_retrieval)").ranking_evaluation(split)
        by_question: dict[int, list[tuple[int, float]]] = {}
        for question, rank, score in rows.tolist():
            by_question.setdefault(int(question), []).append((int(rank), score))
        questions = sorted(by_question)
        reranked, first_stage = [], []
        for q in questions:
            candidates = evaluation.candidates[q]
            pairs = sorted(by_question[q])
            first_stage.append([candidates[rank] for rank, _ in pairs])
            order = sorted(range(len(pairs)), key=lambda i: -pairs[i][1])  # stable: ties keep the first stage's order
            reranked.append([candidates[pairs[i][0]] for i in order])
        return {"questions": questions, "reranked": reranked, "first_stage": first_stage,
                "gold": [evaluation.gold[q] for q in questions], "evaluation": evaluation}

    def scores(self, split: str, outputs: Mapping[str, Any]) -> dict[str, float]:
        scores = index_rankings(outputs["reranked"], outputs["gold"], EVAL_CUTOFFS, MRR_K)
        before = index_rankings(outputs["first_stage"], outputs["gold"], EVAL_CUTOFFS, MRR_K)
        return {**scores, **{f"first_stage_{k}": v for k, v in before.items()},
                "examples": float(len(outputs["questions"]))}

    def predictions(self, split: str, outputs: Mapping[str, Any]) -> tuple[Any, Any]:
        """``predictions.json``: each validation question's candidates after re-ranking (passage ids)."""
        evaluation = outputs["evaluation"]
        return {evaluation.question_ids[q]: [evaluation.passages[p]["id"] for p in row]
                for q, row in zip(outputs["questions"], outputs["reranked"], strict=True)}, None

    # ------------------------------------------------------------------ export

    def export_blocker(self) -> str | None:
        return "a cross-encoder is exported as <run>/reranker/ (retriever.rerank.model_path=...)"

    def export_artifacts(self, output_dir: Path) -> dict[str, Any]:
        """``<run>/reranker/``: a one-label sequence-classification model, its tokenizer and ``reranker.json``."""
        directory = Path(output_dir) / "reranker"
        self.hf_model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        (directory / SETTINGS_FILE).write_text(json.dumps({"max_length": self.hparams.max_length}) + "\n",
                                               encoding="utf-8")
        return {"reranker_dir": str(directory)}
