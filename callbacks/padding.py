"""Padding share of the training batches, per epoch: what length ordering buys in speed.

Batches are padded to their longest row, so an order that puts similar lengths together (sorted,
length-grouped) pads less and trains faster; the curriculum study reports it beside EM/F1.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer

from callbacks.run_metrics import RunMetricsCallback


class PaddingFraction(RunMetricsCallback):
    """Padded tokens / all tokens of the training batches of each epoch (``attention_mask`` zeros).

    Logged as ``train_padding_fraction`` at each epoch end and kept as a list (``run_metrics()``, which
    ``task=fit`` puts in metrics.json). The counts are summed over DDP processes; the list is saved in
    checkpoints, so a resumed run reports every epoch. It is restored only when training resumes: the
    ``validate(ckpt_path=best)`` after a fit loads an earlier epoch's checkpoint, whose list is shorter.
    """

    def __init__(self) -> None:
        self.per_epoch: list[float] = []
        self._restored: list[float] | None = None
        self._real = 0
        self._total = 0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._restored is not None:
            self.per_epoch, self._restored = self._restored, None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._real = self._total = 0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        mask = batch["attention_mask"]
        self._real += int(mask.sum())
        self._total += mask.numel()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        counts = torch.tensor([self._real, self._total], dtype=torch.float64, device=pl_module.device)
        real, total = trainer.strategy.reduce(counts, reduce_op="sum").tolist()
        fraction = 1.0 - real / total if total else 0.0
        self.per_epoch.append(fraction)
        pl_module.log("train_padding_fraction", fraction, sync_dist=True)  # the same on every rank already

    def run_metrics(self) -> dict[str, Any]:
        return {"train_padding_fraction": list(self.per_epoch)}

    def state_dict(self) -> dict[str, Any]:
        return {"per_epoch": list(self.per_epoch)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = list(state_dict.get("per_epoch", []))
