"""Masked-LM training (task-adaptive pre-training): any encoder with an MLM head, exported as an HF backbone.

The run's result is ``<run>/mlm_backbone/`` (``save_pretrained`` of the encoder with its MLM head, plus the
tokenizer), which ``backbone=local backbone.name_or_path=<dir>`` or ``model.init_from=<dir>`` loads for
fine-tuning. Optimiser, schedule, ``init_from``, LoRA and the evaluation loop are the same code the reader uses
(models/base.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torchmetrics import MeanMetric, SumMetric
from transformers import AutoModelForMaskedLM

from models.backbone import Backbone
from models.base import TaskModule
from models.encoder import build_encoder
from models.lora import count_parameters, export_pretrained, lora_enabled

MODEL_INPUTS = ("input_ids", "attention_mask", "labels")


def retarget_callbacks(callbacks: Sequence[Callback], monitor: Mapping[str, Any]) -> list[Callback]:
    """Copies of the configured checkpoint / early-stopping callbacks that watch this module's metric.

    ``callbacks=default`` watches the reader's ``val_exact_match``; Lightning lets a module's
    ``configure_callbacks`` replace callbacks of the same type, so every other setting is kept.
    """
    metric, mode = monitor["metric"], monitor["mode"]
    out: list[Callback] = []
    for callback in callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor not in (None, metric):
            out.append(ModelCheckpoint(
                dirpath=callback.dirpath,
                filename=monitor.get("filename"),
                monitor=metric,
                mode=mode,
                save_top_k=callback.save_top_k,
                save_last=callback.save_last,
                save_weights_only=callback.save_weights_only,
                auto_insert_metric_name=False,
                every_n_train_steps=callback._every_n_train_steps or None,
                every_n_epochs=callback._every_n_epochs,
                save_on_train_epoch_end=callback._save_on_train_epoch_end,
            ))
        elif isinstance(callback, EarlyStopping) and callback.monitor != metric:
            out.append(EarlyStopping(
                monitor=metric, mode=mode, patience=callback.patience, min_delta=abs(callback.min_delta),
                check_finite=callback.check_finite, verbose=callback.verbose, strict=callback.strict,
                # thresholds are on the old metric's scale, so they are not carried over
                check_on_train_epoch_end=callback._check_on_train_epoch_end,
                log_rank_zero_only=callback.log_rank_zero_only,
            ))
    return out


class MaskedLanguageModel(TaskModule):
    """MLM loss on dynamically masked windows; validation reports the held-out loss and its perplexity."""

    progress_scores = ("mlm_loss", "perplexity")

    def __init__(
        self,
        backbone: Backbone,
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any],
        monitor: Mapping[str, Any],
        init_from: str | None = None,
        lora: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["backbone"])
        self.attach(backbone, build_encoder(AutoModelForMaskedLM, backbone, init_from=init_from, lora=lora))
        self.val_loss = MeanMetric()
        self.val_windows = SumMetric()

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Any:
        return self.encoder(**{key: batch[key] for key in MODEL_INPUTS if key in batch})

    def eval_step(self, batch: Mapping[str, torch.Tensor], split: str) -> None:
        masked = (batch["labels"] != -100).sum()
        self.val_windows.update(batch["input_ids"].size(0))
        if masked > 0:  # the model's loss is a mean over masked tokens: weight it back to a token mean
            self.val_loss.update(self(batch).loss, weight=masked)

    def eval_outputs(self, split: str) -> dict[str, float]:
        """The token-weighted held-out MLM loss (nan when no token was masked) and the windows seen."""
        loss = float(self.val_loss.compute()) if self.val_loss.update_count else math.nan
        windows = float(self.val_windows.compute())
        self.val_loss.reset()
        self.val_windows.reset()
        return {"mlm_loss": loss, "windows": windows}

    def scores(self, split: str, outputs: dict[str, float]) -> dict[str, float]:
        loss = outputs["mlm_loss"]
        return {"mlm_loss": loss, "perplexity": math.exp(min(loss, 50.0)), "examples": outputs["windows"]}

    def configure_callbacks(self) -> list[Callback]:
        return retarget_callbacks(self.trainer.callbacks, self.hparams.monitor)

    def export_artifacts(self, output_dir: Path) -> dict[str, Any]:
        """``<run>/mlm_backbone/``: the encoder (LoRA merged in) + tokenizer, from the weights held now."""
        out: dict[str, Any] = {}
        if lora_enabled(self.hparams.get("lora")):
            out.update(count_parameters(self.encoder))
        directory = export_pretrained(self.encoder, self.tokenizer, Path(output_dir) / "mlm_backbone")
        out["mlm_backbone"] = str(directory)
        return out
