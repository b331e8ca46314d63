"""Extractive QA reader: a span-prediction head over any HF encoder, scored with KorQuAD EM/F1."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from transformers import AutoModelForQuestionAnswering

from models.backbone import Backbone
from models.encoder import build_encoder
from models.eval_coverage import log_coverage, window_coverage
from models.hf_module import EncoderModule
from models.qa_metrics import SquadScores
from models.qa_postprocess import decode_predictions, topk_candidates
from models.safe_loading import record_backbone
from models.span_candidates import SpanCandidates

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class ExtractiveReader(EncoderModule):  # optimiser, LoRA checks and exports: models/hf_module.py
    """Trains start/end logits; validation decodes every window of an example back to context text.

    The eval examples and their offsets live in the datamodule (``trainer.datamodule.eval_set``):
    only per-feature top-k candidates travel through the loop, so nothing is re-tokenised per epoch.
    """

    def __init__(
        self,
        backbone: Backbone,
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any],
        n_best_size: int = 20,
        max_answer_length: int = 30,
        init_from: str | None = None,
        lora: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Only plain containers go into the checkpoint (torch>=2.6 loads with weights_only=True).
        self.save_hyperparameters(ignore=["backbone"])
        record_backbone(self.hparams, backbone)
        self.encoder = build_encoder(AutoModelForQuestionAnswering, backbone, init_from=init_from, lora=lora)
        self.tokenizer = backbone.tokenizer
        # RoBERTa-style (type_vocab_size 1) and ModernBERT/DistilBERT-style (no segments) encoders get none
        self.uses_token_types = getattr(backbone.config, "type_vocab_size", 1) > 1
        self.candidates = SpanCandidates()
        self.scores = SquadScores()
        self.last_predictions: dict[str, str] = {}
        self.last_nbest: dict[str, list[dict[str, Any]]] = {}
        self.last_partial = 0  # examples of the last decoded epoch with some of their windows unseen

    # ------------------------------------------------------------------ steps

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Any:
        inputs = {key: batch[key] for key in MODEL_INPUTS if key in batch}
        if not self.uses_token_types:  # RoBERTa-style encoders (klue/roberta-*) have one segment type
            inputs.pop("token_type_ids", None)
        if "start_positions" in batch:
            inputs["start_positions"] = batch["start_positions"]
            inputs["end_positions"] = batch["end_positions"]
        return self.encoder(**inputs)

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self(batch).loss
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["input_ids"].size(0))
        return loss

    def per_sample_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Each feature's span loss, as the HF head computes it for the feature alone (mean of the start and
        end cross-entropies): a teacher's difficulty score (``curriculum.difficulty=loss``). Padding positions
        are masked out, which the HF head does not do, so the score does not depend on the batch's padding."""
        output = self({key: value for key, value in batch.items() if not key.endswith("_positions")})
        ignored = output.start_logits.size(1)
        padding = batch["attention_mask"] == 0
        losses = [
            torch.nn.functional.cross_entropy(
                logits.float().masked_fill(padding, torch.finfo(torch.float32).min), batch[key].clamp(0, ignored),
                ignore_index=ignored, reduction="none",
            )
            for logits, key in ((output.start_logits, "start_positions"), (output.end_logits, "end_positions"))
        ]
        return (losses[0] + losses[1]) / 2

    def _collect(self, batch: Mapping[str, torch.Tensor]) -> None:
        output = self(batch)
        candidates = topk_candidates(
            output.start_logits, output.end_logits, batch["context_mask"], self.hparams.n_best_size
        )
        self.candidates.update(batch["feature_index"], *candidates)

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._collect(batch)

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._collect(batch)

    def predict_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._collect(batch)

    # ------------------------------------------------------------------ epoch ends

    def _decode(self, split: str) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]]]:
        """Gather candidates from every process, then turn them into answer strings."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "compute before update" when a rank saw nothing
            state = self.candidates.compute()
        self.candidates.reset()
        self.last_partial = 0
        if not state:
            return {}, {}
        eval_set = self.trainer.datamodule.eval_set(split)
        self.last_partial = len(window_coverage(eval_set.example_index, state["feature_index"].tolist())[1])
        return decode_predictions(
            eval_set.examples,
            eval_set.example_index,
            eval_set.offset_mapping,
            state["feature_index"],
            state["start_idx"],
            state["start_val"],
            state["end_idx"],
            state["end_val"],
            n_best_size=self.hparams.n_best_size,
            max_answer_length=self.hparams.max_answer_length,
        )

    def _score(self, split: str, prefix: str) -> None:
        predictions, nbest = self._decode(split)
        self.last_predictions, self.last_nbest = predictions, nbest
        eval_set = self.trainer.datamodule.eval_set(split)
        examples = eval_set.examples_by_id
        # Each rank scores a disjoint share of the decoded examples; SquadScores sums them across ranks.
        ids = sorted(predictions)[self.global_rank :: self.trainer.world_size]
        self.scores.update(
            [predictions[i] for i in ids], [[a["text"] for a in examples[i]["answers"]] for i in ids]
        )
        scores = self.scores.compute()
        self.scores.reset()
        self.log(f"{prefix}_exact_match", scores["exact_match"], prog_bar=True)
        self.log(f"{prefix}_f1", scores["f1"], prog_bar=True)
        # partial validation (sanity check, limit_val_batches): the scores cover the decoded examples only
        log_coverage(self, prefix, predictions, [ex["id"] for ex in eval_set.examples], partial=self.last_partial)

    def on_validation_epoch_end(self) -> None:
        self._score("validation", "val")

    def on_test_epoch_end(self) -> None:
        self._score("test", "test")

    def on_predict_epoch_end(self) -> None:
        self.last_predictions, self.last_nbest = self._decode("test")
