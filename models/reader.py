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
from models.qa_postprocess import decode_predictions, null_scores_at, topk_candidates
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
        shared_norm: bool = False,
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

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The HF head's loss (each window on its own); with ``shared_norm``, :func:`shared_norm_loss` over
        all windows of each question in the batch (``datamodule.group_windows=true`` puts them there)."""
        if not self.hparams.shared_norm:
            return super().training_loss(batch)
        if "question_group" not in batch:
            raise ValueError(
                "model.shared_norm=true normalises over all windows of a question, which must share a batch: "
                "set datamodule.group_windows=true (as +experiment=odqa_reader does)."
            )
        output = self({key: value for key, value in batch.items() if not key.endswith("_positions")})
        return shared_norm_loss(
            output.start_logits, output.end_logits, batch["start_positions"], batch["end_positions"],
            batch["context_mask"], batch["question_group"],
        )

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
        self.candidates.update(batch["feature_index"], *candidates, self.null_logits(batch, output))

    def null_logits(self, batch: Mapping[str, torch.Tensor], output: Any) -> torch.Tensor:
        """Each window's no-answer score: start + end logit at its CLS token (where training puts no-answer
        targets); open-domain QA weighs a span by it (``odqa.null_weight``)."""
        cls_id = self.tokenizer.cls_token_id
        position = (
            (batch["input_ids"] == cls_id).int().argmax(dim=1) if cls_id is not None
            else torch.zeros_like(batch["input_ids"][:, 0])
        )
        return null_scores_at(output.start_logits, output.end_logits, position)

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
        null_of = dict(zip(state["feature_index"].tolist(), state["null_val"].tolist(), strict=True))
        for entries in nbest.values():  # the no-answer score of the window each span came from
            for entry in entries:
                if entry.get("start_logit") is not None:
                    entry["null_score"] = null_of[entry["feature_index"]]
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


def shared_norm_loss(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    start_positions: torch.Tensor,
    end_positions: torch.Tensor,
    context_mask: torch.Tensor,
    question_group: torch.Tensor,
) -> torch.Tensor:
    """Shared normalisation (Clark & Gardner 2018): the start (and end) distribution of a question is one softmax
    over the context tokens of *all* its windows, and the loss is minus the log of the probability mass on its
    gold positions, summed over every window that holds the answer. Windows without the answer (negatives, or
    windows the answer is cut from; their target is the CLS position) only add to the normaliser. A question
    none of whose windows holds the answer adds nothing. Returns the mean of the start and end losses over the
    questions that count (0 with a gradient when none does).

    ``question_group`` numbers the questions of the batch 0..G-1; ``context_mask`` marks where a span may lie.
    """
    groups = int(question_group.max()) + 1
    answered = context_mask.gather(1, start_positions[:, None])[:, 0] > 0  # the CLS target lies outside the context
    losses = []
    for logits, positions in ((start_logits, start_positions), (end_logits, end_positions)):
        masked = logits.float().masked_fill(context_mask == 0, float("-inf"))
        window_total = torch.logsumexp(masked, dim=-1)  # (B,)
        gold = masked.gather(1, positions[:, None])[:, 0].masked_fill(~answered, float("-inf"))
        total = _group_logsumexp(window_total, question_group, groups)
        numerator = _group_logsumexp(gold, question_group, groups)
        losses.append(total - numerator)
    counts = torch.isfinite(losses[0]) & torch.isfinite(losses[1])
    if not bool(counts.any()):
        return start_logits.sum() * 0.0
    return ((losses[0] + losses[1]) / 2)[counts].mean()


def _group_logsumexp(values: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
    """``logsumexp`` of ``values`` within each group (``-inf`` for a group whose values are all ``-inf``)."""
    # the shift by each group's maximum is a constant for the gradient (detached), as in torch.logsumexp
    top = torch.full((groups,), float("-inf"), dtype=values.dtype, device=values.device)
    top = top.scatter_reduce(0, group, values.detach(), reduce="amax")
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    sums = torch.zeros_like(top).scatter_add(0, group, torch.exp(values - top[group]))
    empty = sums == 0
    # log(1) where the group is empty keeps the backward pass finite; the value is then set to -inf
    return (torch.log(torch.where(empty, torch.ones_like(sums), sums)) + top).masked_fill(empty, float("-inf"))
