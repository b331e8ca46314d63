"""A dense retriever trained by the framework: question and passage encoders (shared or separate) from any
backbone, DPR's loss over in-batch and hard negatives (``models/contrastive.py``), validated by retrieval.

Validation embeds every validation question and the whole evaluation corpus (the validation contexts, or
``retriever.corpus_file``), ranks the corpus by inner product for each question and logs ``recall@k`` and
``mrr@10`` (``val_recall@20`` is what ``+experiment=dense_retriever`` checkpoints on). ``task=fit`` then writes
``<run>/retriever/`` (``core/text_encoders.py``), the directory ``retriever=dense retriever.model_path=`` loads.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel

from core.contracts import RankingData
from core.ranking import index_rankings
from core.text_encoders import EncoderSettings, embed, save_dense_encoder
from models.backbone import Backbone
from models.base import TaskModule
from models.contrastive import dpr_loss, gather_passages
from models.encoder import build_encoder
from models.ranking_outputs import IndexedRows

__all__ = ["BiEncoder"]

EVAL_CUTOFFS = (1, 5, 10, 20, 100)
MRR_K = 10


class BiEncoder(TaskModule):
    """``model=biencoder``: see the module docstring."""

    progress_scores = ("recall@20",)

    def __init__(
        self,
        backbone: Backbone,
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any],
        shared: bool = True,
        pooling: str = "cls",
        normalize: bool = False,
        temperature: float = 1.0,
        hard_negatives: int = 1,
        gather_negatives: bool = True,
        query_max_length: int = 64,
        passage_max_length: int = 256,
        eval_chunk_size: int = 1024,
        init_from: str | None = None,
        monitor: Mapping[str, Any] | None = None,
        pairing: str = "biencoder",
    ) -> None:
        super().__init__(optimizer, scheduler)
        if pairing != "biencoder":
            raise ValueError(f"model.pairing={pairing!r}: model=biencoder batches are datamodule.pairing=biencoder.")
        self.save_hyperparameters(ignore=["backbone"])
        if temperature <= 0:
            raise ValueError(f"model.temperature={temperature}: must be positive (1.0: raw inner products, DPR).")
        # checked (pooling) and saved with the exported encoder
        self.settings = EncoderSettings(pooling=pooling, normalize=normalize, shared=shared,
                                        query_max_length=query_max_length, passage_max_length=passage_max_length)
        self.attach(backbone, build_encoder(AutoModel, backbone, init_from=init_from))
        # separate encoders start from the same weights (DPR initialises both from one pretrained model)
        self.passage_encoder = None if shared else copy.deepcopy(self.encoder)
        self.eval_rows = torch.nn.ModuleList([IndexedRows(), IndexedRows()])  # questions, passages
        self.last_predictions: dict[str, list[str]] | None = None

    @property
    def passage_model(self) -> Any:
        return self.encoder if self.passage_encoder is None else self.passage_encoder

    def embed_side(self, batch: Mapping[str, torch.Tensor], side: str) -> torch.Tensor:
        model = self.encoder if side == "q" else self.passage_model
        inputs = {"input_ids": batch[f"{side}_input_ids"], "attention_mask": batch[f"{side}_attention_mask"]}
        return embed(model, inputs, self.settings)

    # ------------------------------------------------------------------ training

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        questions, passages = self.embed_side(batch, "q"), self.embed_side(batch, "p")
        count = questions.size(0)
        expected = count * (1 + self.hparams.hard_negatives)
        if passages.size(0) != expected:
            raise ValueError(f"model.hard_negatives={self.hparams.hard_negatives} expects {expected} passages for "
                             f"{count} questions, the batch has {passages.size(0)}: set datamodule.hard_negatives "
                             "to model.hard_negatives.")
        keys = batch["passage_keys"]
        offset = 0
        if self.hparams.gather_negatives:
            passages, keys, offset = gather_passages(passages, keys)
        positive = offset + torch.arange(count, device=questions.device)  # positives lead each process's block
        return dpr_loss(questions, passages, positive, keys, self.hparams.temperature)

    def batch_size_of(self, batch: Mapping[str, torch.Tensor]) -> int:
        return int(batch["q_input_ids"].size(0))

    # ------------------------------------------------------------------ validation: retrieval over the corpus

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        side = "q" if int(batch["side"]) == 0 else "p"
        self.eval_rows[0 if side == "q" else 1].update(batch["index"], self.embed_side(batch, side))

    def eval_step(self, batch: Mapping[str, torch.Tensor], split: str) -> None:
        raise ValueError("model=biencoder validates by retrieval (task=fit / validate); search with "
                         "task=retrieve retriever=dense retriever.model_path=<run>/retriever")

    def eval_outputs(self, split: str) -> dict[str, Any] | None:
        """Each validation question's 100 best passages (corpus indices), from every process's embeddings."""
        (q_index, queries), (p_index, passages) = (rows.compute() for rows in self.eval_rows)
        for rows in self.eval_rows:
            rows.reset()
        if not len(q_index) or not len(p_index):
            return None
        return {"q_index": q_index.tolist(), "ranked": self.rank(queries, passages, p_index, max(EVAL_CUTOFFS))}

    def rank(self, queries: torch.Tensor, passages: torch.Tensor, p_index: torch.Tensor, depth: int) -> list[list[int]]:
        """Each query's ``depth`` best passages (their corpus indices), by inner product, in chunks of queries."""
        ranked: list[list[int]] = []
        chunk = self.hparams.eval_chunk_size
        for start in range(0, queries.size(0), chunk):
            scores = queries[start:start + chunk] @ passages.T
            top = scores.topk(min(depth, passages.size(0)), dim=1).indices
            ranked.extend(p_index[top].tolist())
        return ranked

    def evaluation(self, split: str) -> Any:
        why = "model=biencoder is validated on a passage-retrieval datamodule (datamodule=passage_retrieval)"
        return self.evaluation_data(RankingData, why).ranking_evaluation(split)

    def scores(self, split: str, outputs: Mapping[str, Any]) -> dict[str, float]:
        gold = self.evaluation(split).gold
        scores = index_rankings(outputs["ranked"], [gold[i] for i in outputs["q_index"]], EVAL_CUTOFFS, MRR_K)
        return {**scores, "examples": float(len(outputs["q_index"]))}

    def predictions(self, split: str, outputs: Mapping[str, Any]) -> tuple[Any, Any]:
        """``predictions.json``: each validation question's 20 best passage ids."""
        evaluation = self.evaluation(split)
        return {evaluation.question_ids[q]: [evaluation.passages[p]["id"] for p in row[:20]]
                for q, row in zip(outputs["q_index"], outputs["ranked"], strict=True)}, None

    # ------------------------------------------------------------------ export

    def export_blocker(self) -> str | None:
        return "a bi-encoder is exported as <run>/retriever/ (retriever=dense retriever.model_path=...)"

    def export_artifacts(self, output_dir: Path) -> dict[str, Any]:
        """``<run>/retriever/``: the encoder(s), tokenizer and settings that ``retriever=dense`` loads."""
        directory = save_dense_encoder(Path(output_dir) / "retriever", self.encoder,
                                       self.passage_encoder, self.tokenizer, self.settings)
        return {"retriever_dir": str(directory)}
