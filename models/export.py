"""Hugging Face format export of a trained module: a ``save_pretrained`` directory usable without this framework.

The directory holds the transformers model (``config.json`` + safetensors), its tokenizer and, for a
classifier, the label map (``config.id2label`` and ``label_map.json``), so that
``AutoModelForQuestionAnswering.from_pretrained(dir)`` (or ``...ForSequenceClassification`` / ``...ForMaskedLM``)
reproduces the checkpoint's logits, and a later run starts from it with ``backbone=local
backbone.name_or_path=<dir>`` or ``model.init_from=<dir>``. LoRA adapters are folded into the weights when
``merge_lora`` (the default); otherwise the directory holds the base weights and ``adapter/`` (peft format).
``export.json`` records what was exported from which checkpoint.

``task=fit`` exports its best checkpoint to ``<run>/hf_model/`` (``export.*`` in ``conf/config.yaml``);
``task=export ckpt_path=...`` does it for an existing checkpoint.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

from core.files import write_json
from models.base import TaskModule
from models.lora import export_adapter, export_pretrained, is_peft_model

__all__ = ["export_hf", "load_weights", "unexportable"]

MANIFEST = "export.json"


def load_weights(module: TaskModule, ckpt_path: str | os.PathLike[str]) -> None:
    """A checkpoint's weights into ``module`` (``weights_only`` torch.load; the module's own checks first)."""
    from models.safe_loading import load_checkpoint

    checkpoint = load_checkpoint(ckpt_path)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])


def unexportable(module: TaskModule) -> str | None:
    """Why ``module`` has no HF-format equivalent (None: it has one): the module says (``export_blocker``)."""
    return module.export_blocker()


def export_hf(
    module: TaskModule, directory: str | os.PathLike[str], *, merge_lora: bool = True, source: str | None = None
) -> dict[str, Any]:
    """Write ``module``'s HF model + tokenizer (+ label map) to ``directory``; returns ``{"hf_model": path}``.

    Written to a sibling temp dir and renamed, so a crash never leaves a half directory; an existing
    ``directory`` is refused rather than overwritten.
    """
    directory = Path(directory)
    if directory.exists():
        raise ValueError(f"{directory} already exists: export to a new directory (nothing is overwritten).")
    reason = module.export_blocker()
    if reason:
        raise ValueError(f"task=export: {reason}.")
    encoder, tokenizer = module.encoder, module.tokenizer
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a temp dir left by an interrupted export is ours to replace
    lora = None
    if is_peft_model(encoder) and not merge_lora:
        lora = "adapter"
        tmp.mkdir(parents=True)
        copy.deepcopy(encoder).unload().save_pretrained(tmp)  # the frozen base weights, adapters taken out
        tokenizer.save_pretrained(tmp)
        export_adapter(encoder, tmp / "adapter")
    else:
        lora = "merged" if is_peft_model(encoder) else None
        export_pretrained(encoder, tokenizer, tmp)  # LoRA folded in: a plain transformers model
    labels = module.labels
    if labels:
        write_json(tmp / "label_map.json", {name: i for i, name in enumerate(labels)})
    model = encoder.get_base_model() if is_peft_model(encoder) else encoder
    write_json(
        tmp / MANIFEST,
        {"source": source, "model_class": type(model).__name__, "lora": lora, "labels": list(labels or [])},
    )
    tmp.rename(directory)
    return {"hf_model": str(directory)}
