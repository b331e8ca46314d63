"""What every LightningModule that keeps its transformers model under ``self.encoder`` shares.

The optimiser and LR schedule (models/optim.py over the encoder's parameters), the LoRA check of a
checkpoint before it loads, and the LoRA exports (``adapter/``, ``merged/``): one implementation for the
reader, the masked LM and the generator, so ``model.optimizer``, ``model.scheduler`` and ``model.lora``
mean the same thing in each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule

from models.lora import check_checkpoint, export_lora, lora_enabled
from models.optim import optimization


class EncoderModule(LightningModule):
    """Base class: subclasses set ``self.encoder`` (``build_encoder``) and ``self.tokenizer``, and save
    ``optimizer``, ``scheduler`` and ``lora`` as hyper-parameters."""

    def configure_optimizers(self) -> Any:
        return optimization(
            self.encoder, self.hparams.optimizer, self.hparams.scheduler, self.trainer.estimated_stepping_batches
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_checkpoint(checkpoint, self.hparams.get("lora"))

    def export_artifacts(self, output_dir: Path) -> dict[str, Any]:
        """With LoRA: the adapters (``adapter/``) and the merged model (``merged/``) of the current weights."""
        lora = self.hparams.get("lora")
        if not lora_enabled(lora):
            return {}
        return export_lora(self.encoder, self.tokenizer, lora, Path(output_dir))
