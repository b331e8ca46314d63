"""Extractive QA reader: a span-prediction head over any HF encoder, scored with KorQuAD EM/F1."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from transformers import AutoModelForQuestionAnswering

from core.contracts import SpanEvaluationData
from models.backbone import Backbone
from models.base import TaskModule
from models.encoder import build_encoder
from models.eval_coverage import window_coverage
from models.qa_metrics import SquadScores
from models.qa_postprocess import decode_predictions, topk_candidates
from models.span_candidates import SpanCandidates


class ExtractiveReader(TaskModule):
    """Trains start/end logits; validation decodes every window of an example back to context text.

    The eval examples and their offsets live in the datamodule (``trainer.datamodule.eval_set``):
    only per-feature top-k candidates travel through the loop, so nothing is re-tokenised per epoch.
    """

    progress_scores = ("exact_match", "f1")

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
        super().__init__(optimizer, scheduler)
        # Only plain containers go into the checkpoint (torch>=2.6 loads with weights_only=True).
        self.save_hyperparameters(ignore=["backbone"])
        self.attach(backbone, build_encoder(AutoModelForQuestionAnswering, backbone, init_from=init_from, lora=lora))
        self.candidates = SpanCandidates()
        self.squad_scores = SquadScores()
        self.last_predictions: dict[str, str] = {}
        self.last_nbest: dict[str, list[dict[str, Any]]] = {}
        self.last_partial = 0  # examples of the last decoded epoch with some of their windows unseen

    # ------------------------------------------------------------------ steps

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Any:
        inputs = self.encoder_inputs(batch)
        if "start_positions" in batch:
            inputs["start_positions"] = batch["start_positions"]
            inputs["end_positions"] = batch["end_positions"]
        return self.encoder(**inputs)

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

    def eval_step(self, batch: Mapping[str, torch.Tensor], split: str) -> None:
        output = self(batch)
        candidates = topk_candidates(
            output.start_logits, output.end_logits, batch["context_mask"], self.hparams.n_best_size
        )
        self.candidates.update(batch["feature_index"], *candidates)

    # ------------------------------------------------------------------ epoch ends

    def eval_set(self, split: str) -> Any:
        data = self.evaluation_data(SpanEvaluationData, "model=reader needs the eval windows of an MRC datamodule")
        return data.eval_set(split)

    def eval_outputs(self, split: str) -> dict[str, Any]:
        """Gather candidates from every process, then turn them into answer strings (and n-best spans)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "compute before update" when a rank saw nothing
            state = self.candidates.compute()
        self.candidates.reset()
        self.last_partial = 0
        if not state:
            return {"predictions": {}, "nbest": {}}
        eval_set = self.eval_set(split)
        self.last_partial = len(window_coverage(eval_set.example_index, state["feature_index"].tolist())[1])
        predictions, nbest = decode_predictions(
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
        return {"predictions": predictions, "nbest": nbest}

    def predictions(self, split: str, outputs: dict[str, Any]) -> tuple[Any, Any]:
        return outputs["predictions"], outputs["nbest"]

    def scores(self, split: str, outputs: dict[str, Any]) -> dict[str, Any]:
        """KorQuAD EM / F1; each rank scores a disjoint share of the decoded examples, summed across ranks."""
        predictions = outputs["predictions"]
        examples = self.eval_set(split).examples_by_id
        ids = sorted(predictions)[self.global_rank :: self.trainer.world_size]
        self.squad_scores.update(
            [predictions[i] for i in ids], [[a["text"] for a in examples[i]["answers"]] for i in ids]
        )
        scores = self.squad_scores.compute()
        self.squad_scores.reset()
        return {"exact_match": scores["exact_match"], "f1": scores["f1"]}

    def coverage(self, split: str, outputs: dict[str, Any]) -> tuple[Any, Any, int]:
        # partial validation (sanity check, limit_val_batches): the scores cover the decoded examples only
        return outputs["predictions"], [ex["id"] for ex in self.eval_set(split).examples], self.last_partial
