"""The one base of the task LightningModules: the mechanics the reader, classifier, regressor, generator and
masked LM share, written once.

:class:`TaskModule` implements ``core.contracts.TaskModel`` (what the task verbs read: ``last_predictions``,
``last_nbest``, ``export_artifacts``, ``export_blocker``) and owns

* the training step (``training_loss`` -> ``train_loss``), the optimiser and LR schedule of ``model/optimizer``
  and ``model/scheduler`` (models/optim.py), checked when the module is built;
* the evaluation loop: every step of validation, test and prediction goes to ``eval_step``; each epoch end
  gathers the outputs of every process (``eval_outputs``), keeps the predictions, logs the scores and which
  examples they cover (``val_*`` / ``test_*``; prediction logs nothing);
* the LoRA check of a checkpoint before it loads and the LoRA exports (``adapter/``, ``merged/``);
* the typed access to ``trainer.datamodule`` (:meth:`evaluation_data`): one check, one clear error.

A subclass sets ``self.encoder`` and ``self.tokenizer`` (:meth:`attach`) and adds only what is its own:
``forward``, ``eval_step``, ``eval_outputs`` and the hooks below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from lightning.pytorch import LightningModule

from models.backbone import Backbone
from models.eval_coverage import log_coverage
from models.lora import check_checkpoint, export_lora, is_peft_model, lora_enabled
from models.optim import check_optimizer, check_scheduler, optimization
from models.safe_loading import record_backbone

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
Data = TypeVar("Data")


class TaskModule(LightningModule):
    """Base class; subclasses call ``super().__init__(optimizer, scheduler)`` then ``save_hyperparameters``."""

    # the scores shown in the progress bar (names without the val_ / test_ prefix)
    progress_scores: tuple[str, ...] = ()

    def __init__(self, optimizer: Mapping[str, Any], scheduler: Mapping[str, Any]) -> None:
        super().__init__()
        # a renamed key, a missing _target_ or a class that cannot be imported stops here, before training
        check_optimizer(optimizer)
        check_scheduler(scheduler)
        self.encoder: Any = None
        self.tokenizer: Any = None
        # the class names in id order (a classifier's; written with an HF export), else None
        self.labels: list[str] | None = None
        self.uses_token_types = False
        self.last_predictions: dict[str, Any] | list[dict[str, Any]] | None = None
        self.last_nbest: dict[str, list[dict[str, Any]]] | None = None

    def attach(self, backbone: Backbone, encoder: Any) -> None:
        """Hold ``encoder`` (a transformers model, maybe LoRA-wrapped) and the backbone's tokenizer; record the
        backbone in the hyper-parameters (``ckpt_path`` is checked against it)."""
        record_backbone(self.hparams, backbone)
        self.encoder = encoder
        self.tokenizer = backbone.tokenizer
        # RoBERTa-style (type_vocab_size 1) and ModernBERT/DistilBERT-style (no segments) encoders get none
        self.uses_token_types = (getattr(backbone.config, "type_vocab_size", 1) or 1) > 1

    @property
    def hf_model(self) -> Any:
        """The transformers model under the LoRA wrapper, if any."""
        return self.encoder.get_base_model() if is_peft_model(self.encoder) else self.encoder

    def encoder_inputs(self, batch: Mapping[str, torch.Tensor], keys: Sequence[str] = MODEL_INPUTS) -> dict[str, Any]:
        """The batch's model inputs; no ``token_type_ids`` for an encoder with one segment type."""
        inputs = {key: batch[key] for key in keys if key in batch}
        if not self.uses_token_types:
            inputs.pop("token_type_ids", None)
        return inputs

    def evaluation_data(self, protocol: type[Data], why: str) -> Data:
        """``trainer.datamodule`` as ``protocol`` (core/contracts.py), or a ValueError saying ``why`` it must be."""
        datamodule = self.trainer.datamodule
        if not isinstance(datamodule, protocol):
            raise ValueError(f"{why} ({type(datamodule).__name__} does not provide {protocol.__name__}).")
        return datamodule

    # ------------------------------------------------------------------ training

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The loss to minimise on ``batch``; by default the transformers head's own."""
        return self(batch).loss

    def batch_size_of(self, batch: Mapping[str, torch.Tensor]) -> int:
        """The samples of a training batch (features; a bi-encoder's: questions), for logs and throughput."""
        return int(batch["input_ids"].size(0))

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.training_loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=self.batch_size_of(batch))
        return loss

    def configure_optimizers(self) -> Any:
        """``model.optimizer`` over every trainable parameter, with ``model.scheduler`` stepped per optimiser step."""
        return optimization(
            self, self.hparams.optimizer, self.hparams.scheduler, self.trainer.estimated_stepping_batches
        )

    # ------------------------------------------------------------------ evaluation

    def eval_step(self, batch: Mapping[str, torch.Tensor], split: str) -> Any:
        """Collect what ``eval_outputs`` needs from one batch of ``split`` (``validation`` | ``test``)."""
        raise NotImplementedError(f"{type(self).__name__} does not evaluate")

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> Any:
        return self.eval_step(batch, "validation")

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self.eval_step(batch, "test")

    def predict_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self.eval_step(batch, "test")

    def eval_outputs(self, split: str) -> Any:
        """Every process's outputs of the loop that ended, the collectors reset; None when nothing to keep."""
        raise NotImplementedError(f"{type(self).__name__} does not evaluate")

    def predictions(self, split: str, outputs: Any) -> tuple[Any, Any]:
        """``(last_predictions, last_nbest)`` of ``outputs``; default: none."""
        return None, None

    def scores(self, split: str, outputs: Any) -> dict[str, Any]:
        """The metrics of ``outputs`` (logged as ``val_<name>`` / ``test_<name>``); default: none."""
        return {}

    def coverage(self, split: str, outputs: Any) -> tuple[Sequence[str], Sequence[str], int | None] | None:
        """(ids scored, ids of the split, examples with unseen windows) for the ``*_examples*`` counts, or None."""
        return None

    def end_of_loop(self, split: str, prefix: str | None) -> None:
        """Gather, keep the predictions, then (``prefix``: validation / test) log the scores and their coverage."""
        outputs = self.eval_outputs(split)
        if outputs is None:
            return
        predictions, nbest = self.predictions(split, outputs)
        if predictions is not None:
            self.last_predictions, self.last_nbest = predictions, nbest
        if prefix is None:
            return
        for name, value in self.scores(split, outputs).items():
            self.log(f"{prefix}_{name}", value, prog_bar=name in self.progress_scores)
        covered = self.coverage(split, outputs)
        if covered is not None:
            seen, expected, partial = covered
            log_coverage(self, prefix, seen, expected, partial=partial)

    def on_validation_epoch_end(self) -> None:
        self.end_of_loop("validation", "val")

    def on_test_epoch_end(self) -> None:
        self.end_of_loop("test", "test")

    def on_predict_epoch_end(self) -> None:
        self.end_of_loop("test", None)

    # ------------------------------------------------------------------ checkpoints and exports

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_checkpoint(checkpoint, self.hparams.get("lora"))

    def prediction_table(self, ids: list[str]) -> tuple[list[str], list[list[Any]]] | None:
        """(columns, rows) of a W&B validation table for ``ids``; None: the QA table of callbacks/wandb_callbacks.py."""
        return None

    def export_blocker(self) -> str | None:
        """Why ``save_pretrained`` cannot represent this module (None: it can)."""
        if self.encoder is None or self.tokenizer is None:
            return f"{type(self).__name__} holds no transformers model (encoder) and tokenizer"
        return None

    def export_artifacts(self, output_dir: Path) -> dict[str, Any]:
        """With LoRA: the adapters (``adapter/``) and the merged model (``merged/``), from the weights held now."""
        lora = self.hparams.get("lora")
        if self.encoder is None or not lora_enabled(lora):
            return {}
        # a head outside the transformers model (entity pooling) would be lost in a merged HF model
        return export_lora(
            self.encoder, self.tokenizer, lora, Path(output_dir), counted=self, mergeable=self.export_blocker() is None
        )
