"""Sequence classifier: one label per text or text pair (NLI, STS-binary, topic) or per entity pair (KLUE-RE).

``pooling: cls`` uses the encoder's own sequence-classification head (``AutoModelForSequenceClassification``,
so LoRA, ``init_from`` and exports behave as for the reader); ``pooling: entity`` concatenates the hidden
states of the subject and object start tokens (Zhou & Chen 2021) into a head of its own, and the unused HF
head is frozen. Loss: the ``model/loss`` option (``ce | focal | label_smoothing`` or a user's own
:class:`models.losses.Loss`); optimiser, LR schedule, the evaluation loop and exports: ``models/base.py``. ``type_constraint`` (KLUE-RE) zeroes the relations training never saw for
an example's subject/object entity types before anything is scored or written. Validation logs ``val_accuracy``, ``val_macro_f1``, ``val_auprc``
and, for KLUE-RE, ``val_micro_f1`` (models/cls_metrics.py), and keeps ``last_predictions`` (id, label,
class probabilities, gold) for ``predictions.json``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from core.contracts import ClassStatistics, EvaluationData, TypeConstraints
from models.backbone import Backbone
from models.base import TaskModule
from models.cls_metrics import ClassificationOutputs, classification_scores
from models.encoder import build_encoder
from models.lora import head_modules
from models.losses import build_loss

POOLINGS = ("cls", "entity")
# model.loss when a module is built without one (the config's default option, conf/model/loss/ce.yaml)
CROSS_ENTROPY = {"_target_": "models.losses.CrossEntropyLoss"}


def with_labels(backbone: Backbone, labels: Sequence[str]) -> Backbone:
    """The backbone with a config that knows the classes (``num_labels``, ``id2label``: saved with exports)."""
    config = copy.deepcopy(backbone.config)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    return Backbone(backbone.tokenizer, config, backbone.weights, backbone.source, backbone.extra)


class SequenceClassifier(TaskModule):
    """The ``model/loss`` option's training; validation scores every example once."""

    # the validation scores shown in the progress bar
    progress_scores: tuple[str, ...] = ("accuracy", "micro_f1")
    default_loss: Mapping[str, Any] = CROSS_ENTROPY

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
        super().__init__(optimizer, scheduler)
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
        self.attach(backbone, build_encoder(AutoModelForSequenceClassification, with_labels(backbone, labels),
                                            init_from=init_from, lora=lora))
        self.labels = labels
        self.no_relation_index = labels.index(no_relation_label) if no_relation_label in labels else None
        hf_model = self.hf_model
        if len(self.tokenizer) > hf_model.get_input_embeddings().num_embeddings:  # entity markers were added
            hf_model.resize_token_embeddings(len(self.tokenizer))
        self.entity_head: nn.Module | None = None
        if pooling == "entity":
            hidden = hf_model.config.hidden_size
            self.entity_head = nn.Sequential(
                nn.Dropout(dropout), nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Dropout(dropout),
                nn.Linear(hidden, len(labels)),
            )
            for name in head_modules(hf_model):  # the HF head never sees a gradient: keep it out of the optimiser
                getattr(hf_model, name).requires_grad_(False)
        self.loss_fn = build_loss(loss or self.default_loss, len(labels))
        self.outputs = ClassificationOutputs()
        self.last_predictions: list[dict[str, Any]] = []

    def setup(self, stage: str) -> None:
        """``loss.alpha: balanced`` weighs classes by the training data's counts, known once the data is read."""
        if stage == "fit" and self.loss_fn.needs_class_counts:
            why = "model.loss.alpha=balanced needs the class counts of a classification datamodule"
            counts = self.evaluation_data(ClassStatistics, why).class_counts
            if not counts:
                raise ValueError(f"{why}.")
            self.loss_fn.use_class_counts(counts)

    # ------------------------------------------------------------------ steps

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Class logits."""
        inputs = self.encoder_inputs(batch)
        if self.entity_head is None:
            return self.encoder(**inputs).logits
        if "subject_index" not in batch:
            raise ValueError("model.pooling=entity needs entity positions: use datamodule=klue_re (or re_sample).")
        hidden = self.hf_model.base_model(**inputs).last_hidden_state
        rows = torch.arange(hidden.size(0), device=hidden.device)
        pooled = torch.cat([hidden[rows, batch["subject_index"]], hidden[rows, batch["object_index"]]], dim=-1)
        return self.entity_head(pooled)

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.loss_fn(self(batch), batch["labels"])

    def per_sample_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Each example's cross-entropy (whatever ``model.loss`` trains with): a teacher's difficulty score
        (``curriculum.difficulty=loss``)."""
        return torch.nn.functional.cross_entropy(self(batch).float(), batch["labels"], reduction="none")

    def eval_step(self, batch: Mapping[str, torch.Tensor], split: str) -> torch.Tensor:
        logits = self(batch)
        self.outputs.update(batch["index"], self.eval_values(logits), batch.get("labels"))
        return logits

    def eval_values(self, logits: torch.Tensor) -> torch.Tensor:
        """What evaluation keeps of each example's output: its class probabilities."""
        return logits.float().softmax(dim=-1)

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        logits = self.eval_step(batch, "validation")
        self.log("val_loss", self.loss_fn(logits, batch["labels"]), batch_size=batch["input_ids"].size(0))

    # ------------------------------------------------------------------ epoch ends

    def eval_examples(self, split: str) -> Sequence[Mapping[str, Any]]:
        why = f"model={type(self).__name__} needs the evaluation examples of a classification datamodule"
        return self.evaluation_data(EvaluationData, why).eval_examples(split)

    def eval_outputs(self, split: str) -> dict[str, torch.Tensor] | None:
        state = self.outputs.compute()
        self.outputs.reset()
        if state and self.hparams.get("type_constraint"):
            state = {**state, "probs": self.constrained(split, state["index"], state["probs"])}
        return state or None

    def constrained(self, split: str, index: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """``model.type_constraint``: relations training never saw for an example's subject/object types get
        probability 0, the rest are renormalised (the table: the datamodule's ``type_constraints``)."""
        why = "model.type_constraint needs entity types: use datamodule=klue_re (or re_sample)"
        table = self.evaluation_data(TypeConstraints, why).allowed_labels(split)
        allowed = torch.tensor(table, dtype=torch.bool, device=probs.device)[index.long()]
        kept = probs.masked_fill(~allowed, 0.0)
        total = kept.sum(dim=1, keepdim=True)
        return torch.where(total > 0, kept / total.clamp(min=torch.finfo(kept.dtype).tiny), probs)

    def predictions(self, split: str, outputs: Mapping[str, torch.Tensor]) -> tuple[Any, Any]:
        return self.prediction_records(split, outputs), None

    def prediction_records(self, split: str, state: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
        """``predictions.json``: id, predicted label, every class's probability, and the gold label when known."""
        examples = self.eval_examples(split)
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

    def scores(self, split: str, outputs: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """The validation / test metrics of the gathered outputs (models/cls_metrics.py)."""
        return classification_scores(outputs["probs"], outputs["target"], self.no_relation_index)

    def coverage(self, split: str, outputs: Mapping[str, torch.Tensor]) -> tuple[Any, Any, None]:
        examples = self.eval_examples(split)
        seen = [examples[i]["id"] for i in outputs["index"].tolist()]  # de-duplicated: DDP padding counts once
        return seen, [ex["id"] for ex in examples], None

    # ------------------------------------------------------------------ checkpoints and exports

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        theirs = (checkpoint.get("hyper_parameters") or {}).get("labels")
        if theirs is not None and list(theirs) != self.labels:
            raise ValueError(
                f"the checkpoint was trained with {len(theirs)} classes {list(theirs)[:6]}..., this run's datamodule "
                f"gives {len(self.labels)} {self.labels[:6]}...: load the training run's classes with "
                "datamodule.label_map=<that run>/label_map.json"
            )

    def export_blocker(self) -> str | None:
        if self.entity_head is not None:
            return (
                "model.pooling=entity puts the classification head outside the transformers model, so an HF "
                "directory would lose it; export a model.pooling=cls classifier, or use the checkpoint itself"
            )
        return super().export_blocker()
