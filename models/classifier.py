"""Sequence classifier: one label per text or text pair (NLI, STS-binary, topic) or per entity pair (KLUE-RE).

``pooling: cls`` uses the encoder's own sequence-classification head (``AutoModelForSequenceClassification``,
so LoRA, ``init_from`` and exports behave as for the reader); ``pooling: entity`` concatenates the hidden
states of the subject and object start tokens (Zhou & Chen 2021) into a head of its own, and the unused HF
head is frozen. Loss: ``ce | focal | label_smoothing`` (models/losses.py); optimiser and LR schedule: the
framework's shared ``models/optim.py``. ``type_constraint`` (KLUE-RE) zeroes the relations training never saw for
an example's subject/object entity types before anything is scored or written. Validation logs ``val_accuracy``, ``val_macro_f1``, ``val_auprc``
and, for KLUE-RE, ``val_micro_f1`` (models/cls_metrics.py), and keeps ``last_predictions`` (id, label,
class probabilities, gold) for ``predictions.json``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import nn
from transformers import AutoModelForSequenceClassification

from models.backbone import Backbone
from models.cls_metrics import ClassificationOutputs, classification_scores
from models.encoder import build_encoder
from models.eval_coverage import log_coverage
from models.lora import (
    check_checkpoint,
    export_lora,
    head_modules,
    is_peft_model,
    lora_enabled,
)
from models.losses import build_loss, class_weights
from models.optim import optimization
from models.safe_loading import record_backbone

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
POOLINGS = ("cls", "entity")


def with_labels(backbone: Backbone, labels: Sequence[str]) -> Backbone:
    """The backbone with a config that knows the classes (``num_labels``, ``id2label``: saved with exports)."""
    config = copy.deepcopy(backbone.config)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    return Backbone(backbone.tokenizer, config, backbone.weights, backbone.source, backbone.extra)


class SequenceClassifier(LightningModule):
    """Cross-entropy / focal / label-smoothing training; validation scores every example once."""

    # the validation scores shown in the progress bar
    progress_scores: tuple[str, ...] = ("accuracy", "micro_f1")

    def __init__(
        self,
        backbone: Backbone,
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any],
        labels: Sequence[str] | None = None,
        loss: Mapping[str, Any] | None = None,
        pooling: str = "cls",
        dropout: float = 0.1,
        no_relation_label: str | None = None,
        monitor: Mapping[str, Any] | None = None,
        init_from: str | None = None,
        lora: Mapping[str, Any] | None = None,
        type_constraint: bool = False,
    ) -> None:
        super().__init__()
        if not labels:
            raise ValueError(
                "model=classifier needs the classes from a classification datamodule: use datamodule=classification, "
                "klue_re, nli_sample or re_sample (real-valued labels such as KLUE-STS's labels.real-label: "
                "model=regressor datamodule=regression)."
            )
        if pooling not in POOLINGS:
            raise ValueError(f"model.pooling={pooling!r} is unknown: choose one of {', '.join(POOLINGS)}.")
        labels = list(labels)
        # Only plain containers go into the checkpoint (torch>=2.6 loads with weights_only=True).
        self.save_hyperparameters(ignore=["backbone"])
        self.hparams["labels"] = labels
        record_backbone(self.hparams, backbone)
        self.labels = labels
        self.no_relation_index = labels.index(no_relation_label) if no_relation_label in labels else None
        self.tokenizer = backbone.tokenizer
        self.encoder = build_encoder(AutoModelForSequenceClassification, with_labels(backbone, labels),
                                     init_from=init_from, lora=lora)
        hf_model = self.hf_model
        if len(self.tokenizer) > hf_model.get_input_embeddings().num_embeddings:  # entity markers were added
            hf_model.resize_token_embeddings(len(self.tokenizer))
        self.uses_token_types = getattr(backbone.config, "type_vocab_size", 1) > 1
        self.entity_head: nn.Module | None = None
        if pooling == "entity":
            hidden = hf_model.config.hidden_size
            self.entity_head = nn.Sequential(
                nn.Dropout(dropout), nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Dropout(dropout),
                nn.Linear(hidden, len(labels)),
            )
            for name in head_modules(hf_model):  # the HF head never sees a gradient: keep it out of the optimiser
                getattr(hf_model, name).requires_grad_(False)
        self.loss_fn = build_loss(loss, len(labels))
        self.outputs = ClassificationOutputs()
        self.last_predictions: list[dict[str, Any]] = []

    @property
    def hf_model(self) -> Any:
        """The transformers model under the LoRA wrapper, if any."""
        return self.encoder.get_base_model() if is_peft_model(self.encoder) else self.encoder

    def setup(self, stage: str) -> None:
        """``loss.alpha: balanced`` weighs classes by the training data's counts, known once the data is read."""
        if stage == "fit" and (self.hparams.loss or {}).get("alpha") == "balanced":
            counts = getattr(self.trainer.datamodule, "class_counts", None)
            if not counts:
                raise ValueError("model.loss.alpha=balanced needs the class counts of a classification datamodule.")
            self.loss_fn.weight = class_weights("balanced", len(self.labels), counts)

    # ------------------------------------------------------------------ steps

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Class logits."""
        inputs = {key: batch[key] for key in MODEL_INPUTS if key in batch}
        if not self.uses_token_types:  # RoBERTa / ModernBERT-style encoders have one segment type
            inputs.pop("token_type_ids", None)
        if self.entity_head is None:
            return self.encoder(**inputs).logits
        if "subject_index" not in batch:
            raise ValueError("model.pooling=entity needs entity positions: use datamodule=klue_re (or re_sample).")
        hidden = self.hf_model.base_model(**inputs).last_hidden_state
        rows = torch.arange(hidden.size(0), device=hidden.device)
        pooled = torch.cat([hidden[rows, batch["subject_index"]], hidden[rows, batch["object_index"]]], dim=-1)
        return self.entity_head(pooled)

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss_fn(self(batch), batch["labels"])
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["input_ids"].size(0))
        return loss

    def per_sample_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Each example's cross-entropy (whatever ``model.loss`` trains with): a teacher's difficulty score
        (``curriculum.difficulty=loss``)."""
        return torch.nn.functional.cross_entropy(self(batch).float(), batch["labels"], reduction="none")

    def _collect(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        logits = self(batch)
        self.outputs.update(batch["index"], self.eval_values(logits), batch.get("labels"))
        return logits

    def eval_values(self, logits: torch.Tensor) -> torch.Tensor:
        """What evaluation keeps of each example's output: its class probabilities."""
        return logits.float().softmax(dim=-1)

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        logits = self._collect(batch)
        self.log("val_loss", self.loss_fn(logits, batch["labels"]), batch_size=batch["input_ids"].size(0))

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._collect(batch)

    def predict_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._collect(batch)

    # ------------------------------------------------------------------ epoch ends

    def _gather(self, split: str) -> dict[str, torch.Tensor]:
        state = self.outputs.compute()
        self.outputs.reset()
        if state and self.hparams.get("type_constraint"):
            state = {**state, "probs": self.constrained(split, state["index"], state["probs"])}
        if state:
            self.last_predictions = self.prediction_records(split, state)
        return state

    def constrained(self, split: str, index: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """``model.type_constraint``: relations training never saw for an example's subject/object types get
        probability 0, the rest are renormalised (the table: the datamodule's ``type_constraints``)."""
        allowed_labels = getattr(self.trainer.datamodule, "allowed_labels", None)
        if allowed_labels is None:
            raise ValueError("model.type_constraint needs entity types: use datamodule=klue_re (or re_sample).")
        allowed = torch.tensor(allowed_labels(split), dtype=torch.bool, device=probs.device)[index.long()]
        kept = probs.masked_fill(~allowed, 0.0)
        total = kept.sum(dim=1, keepdim=True)
        return torch.where(total > 0, kept / total.clamp(min=torch.finfo(kept.dtype).tiny), probs)

    def prediction_records(self, split: str, state: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
        """``predictions.json``: id, predicted label, every class's probability, and the gold label when known."""
        examples = self.trainer.datamodule.eval_examples(split)
        records = []
        for index, probs in zip(state["index"].tolist(), state["probs"].tolist(), strict=True):
            example = examples[index]
            record: dict[str, Any] = {
                "id": example["id"],
                "label": self.labels[max(range(len(probs)), key=probs.__getitem__)],
                "probabilities": {name: round(p, 6) for name, p in zip(self.labels, probs, strict=True)},
            }
            if example["label"] is not None:
                record["gold"] = example["label"]
            records.append(record)
        return records

    def _score(self, split: str, prefix: str) -> None:
        state = self._gather(split)
        if not state:
            return
        for name, value in self.scores(state).items():
            self.log(f"{prefix}_{name}", value, prog_bar=name in self.progress_scores)
        examples = self.trainer.datamodule.eval_examples(split)
        seen = [examples[i]["id"] for i in state["index"].tolist()]  # de-duplicated: DDP padding counts once
        log_coverage(self, prefix, seen, [ex["id"] for ex in examples])

    def scores(self, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """The validation / test metrics of the gathered outputs (models/cls_metrics.py)."""
        return classification_scores(state["probs"], state["target"], self.no_relation_index)

    def on_validation_epoch_end(self) -> None:
        self._score("validation", "val")

    def on_test_epoch_end(self) -> None:
        self._score("test", "test")

    def on_predict_epoch_end(self) -> None:
        self._gather("test")

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> Any:
        return optimization(
            self, self.hparams.optimizer, self.hparams.scheduler, self.trainer.estimated_stepping_batches
        )  # encoder and, with entity pooling, its head

    # ------------------------------------------------------------------ checkpoints and exports

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_checkpoint(checkpoint, self.hparams.get("lora"))
        theirs = (checkpoint.get("hyper_parameters") or {}).get("labels")
        if theirs is not None and list(theirs) != self.labels:
            raise ValueError(
                f"the checkpoint was trained with {len(theirs)} classes {list(theirs)[:6]}..., this run's datamodule "
                f"gives {len(self.labels)} {self.labels[:6]}...: load the training run's classes with "
                "datamodule.label_map=<that run>/label_map.json"
            )

    def export_artifacts(self, output_dir: Path) -> dict[str, Any]:
        """With LoRA: the adapters (``adapter/``) and the merged model (``merged/``), from the weights held now."""
        lora = self.hparams.get("lora")
        if not lora_enabled(lora):
            return {}
        # the entity head is not an HF module, so a merged HF model would lose it
        return export_lora(
            self.encoder, self.tokenizer, lora, Path(output_dir), counted=self, mergeable=self.entity_head is None
        )
