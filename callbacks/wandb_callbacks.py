"""What a team's W&B dashboard shows beyond scalars: sample predictions and the LR-finder plot.

A module with a ``prediction_table(ids) -> (columns, rows)`` method (the generator) builds its own rows;
the reader's are questions, context snippets and answers with per-row EM/F1.

Both callbacks do nothing when the run has no WandbLogger, so they can stay configured with any logger.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from models.base import TaskModule
from models.qa_metrics import exact_match_score, f1_score, metric_max_over_ground_truths

TABLE_COLUMNS = ["epoch", "global_step", "id", "question", "context", "prediction", "gold", "exact_match", "f1"]


def find_wandb_logger(trainer: Trainer) -> WandbLogger | None:
    return next((logger for logger in trainer.loggers if isinstance(logger, WandbLogger)), None)


def context_snippet(context: str, start: int, length: int, window: int) -> str:
    """``window`` characters either side of the gold answer, with ellipses where the context was cut."""
    left, right = max(0, start - window), min(len(context), start + length + window)
    return ("…" if left > 0 else "") + context[left:right] + ("…" if right < len(context) else "")


class WandbValPredictions(Callback):
    """Logs a ``wandb.Table`` of validation predictions after every validation (not the sanity check).

    The same ``sample_size`` questions every time (drawn once with ``seed``), so the table shows how their
    answers change over training. Per-row EM and F1 use the official KorQuAD 1.0 formulas on the 0-100
    scale, so a full-size table's column means equal ``val_exact_match`` / ``val_f1``.
    """

    def __init__(
        self, sample_size: int = 32, context_window: int = 120, seed: int = 0, key: str = "val_predictions"
    ) -> None:
        if sample_size < 1:
            raise ValueError(f"WandbValPredictions.sample_size={sample_size}: log at least one row.")
        self.sample_size = sample_size
        self.context_window = context_window
        self.seed = seed
        self.key = key
        self._ids: list[str] | None = None

    def sample_ids(self, predictions: dict[str, str]) -> list[str]:
        """The same ``sample_size`` ids every validation (drawn again only if the predicted ids change)."""
        if self._ids is None or not set(self._ids) <= set(predictions):
            ids = sorted(predictions)
            self._ids = sorted(random.Random(self.seed).sample(ids, min(self.sample_size, len(ids))))
        return self._ids

    def rows(self, trainer: Trainer, predictions: dict[str, str]) -> list[list[Any]]:
        examples = trainer.datamodule.eval_set("validation").examples_by_id
        self.sample_ids(predictions)
        rows = []
        for qid in self._ids:
            example, prediction = examples[qid], predictions[qid]
            golds = [a["text"] for a in example["answers"]]
            first = example["answers"][0] if example["answers"] else {"answer_start": 0, "text": ""}
            rows.append(
                [
                    trainer.current_epoch,
                    trainer.global_step,
                    qid,
                    example["question"],
                    context_snippet(example["context"], first["answer_start"], len(first["text"]), self.context_window),
                    prediction,
                    " | ".join(golds),
                    100.0 * float(metric_max_over_ground_truths(exact_match_score, prediction, golds)) if golds else None,
                    100.0 * metric_max_over_ground_truths(f1_score, prediction, golds) if golds else None,
                ]
            )
        return rows

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = find_wandb_logger(trainer)
        predictions = pl_module.last_predictions if isinstance(pl_module, TaskModule) else None
        if logger is None or trainer.sanity_checking or not trainer.is_global_zero or not predictions:
            return
        own = pl_module.prediction_table(self.sample_ids(predictions))  # predictions that are not QA spans
        if own is not None:
            columns, data = own
            logger.log_table(key=self.key, columns=columns, data=data)
            return
        logger.log_table(key=self.key, columns=TABLE_COLUMNS, data=self.rows(trainer, predictions))


class WandbLRFinderPlot(Callback):
    """Logs ``<run dir>/<filename>`` (the LR finder's plot) as a W&B image once it exists."""

    def __init__(self, filename: str = "lr_finder.png", key: str = "lr_finder") -> None:
        self.filename = filename
        self.key = key
        self._logged_mtime: float | None = None

    def _log_if_new(self, trainer: Trainer) -> None:
        logger = find_wandb_logger(trainer)
        path = Path(trainer.default_root_dir) / self.filename
        if logger is None or not trainer.is_global_zero or not path.exists():
            return
        mtime = path.stat().st_mtime
        if mtime != self._logged_mtime:
            logger.log_image(key=self.key, images=[str(path)])
            self._logged_mtime = mtime

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_if_new(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_if_new(trainer)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_if_new(trainer)
