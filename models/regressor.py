"""Sequence regressor: one real value per text or text pair (KLUE-STS's 0-5 similarity, ``labels.real-label``).

It is the classifier (models/classifier.py) with one output: the encoder's sequence-classification head
with ``num_labels=1`` (transformers' regression head, so exports load as ``AutoModelForSequenceClassification``
with ``problem_type="regression"``), LoRA, ``init_from``, optimiser and schedule, the de-duplicated gathering
of validation outputs and the checkpoint checks all come from there. What differs: the loss (``model/loss=mse``
or ``huber``, models/losses.py), the metrics (``pearson``, ``spearman``, ``mse``, ``f1``: models/regression_metrics.py) and the
``predictions.json`` records, ``{id, prediction, gold}`` with ``gold`` null where the file has no score.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from models.backbone import Backbone
from models.classifier import SequenceClassifier
from models.losses import Loss, build_loss
from models.regression_metrics import RegressionOutputs, regression_scores

# the name of the one output (the exported config's id2label, label_map.json)
OUTPUT = "score"
# model.loss when a module is built without one (conf/model/loss/mse.yaml)
MEAN_SQUARED_ERROR = {"_target_": "models.losses.MSELoss"}


def build_regression_loss(settings: Mapping[str, Any] | None) -> Loss:
    """The ``model/loss`` option of a regressor (``mse`` when none is given): one output per example."""
    return build_loss(settings or MEAN_SQUARED_ERROR, 1)


class SequenceRegressor(SequenceClassifier):
    """One output trained on a real-valued label; validation reports correlations and the squared error."""

    progress_scores = ("pearson",)
    default_loss = MEAN_SQUARED_ERROR

    def __init__(
        self,
        backbone: Backbone,
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any],
        loss: Mapping[str, Any] | None = None,
        binary_threshold: float | None = 3.0,
        monitor: Mapping[str, Any] | None = None,
        init_from: str | None = None,
        lora: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(backbone, optimizer, scheduler, labels=[OUTPUT], loss=loss, monitor=monitor,
                         init_from=init_from, lora=lora)
        self.hf_model.config.problem_type = "regression"
        self.outputs = RegressionOutputs()
        self.binary_threshold = binary_threshold

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One prediction per example."""
        return super().forward(batch).squeeze(-1)

    def per_sample_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Each example's squared error: a teacher's difficulty score (``curriculum.difficulty=loss``)."""
        return (self(batch).float() - batch["labels"].float()) ** 2

    def eval_values(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float()

    def scores(self, split: str, outputs: Mapping[str, torch.Tensor]) -> dict[str, float]:
        return regression_scores(outputs["prediction"], outputs["target"], self.binary_threshold)

    def prediction_records(self, split: str, state: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
        """``predictions.json``: id, prediction and the gold score (null when the record has none)."""
        examples = self.eval_examples(split)
        return [
            {"id": examples[index]["id"], "prediction": prediction, "gold": examples[index]["label"]}
            for index, prediction in zip(state["index"].tolist(), state["prediction"].tolist(), strict=True)
        ]
