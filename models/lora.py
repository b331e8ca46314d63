"""LoRA adapters (peft) for any task head, and the exports that make an adapted model usable without peft.

One function wraps every LightningModule's HF model (reader, masked LM, later the classifier), so the
settings under ``model.lora`` mean the same thing everywhere.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedModel

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with pip install -e '.[peft]' (or pip install peft)"


def lora_enabled(settings: Mapping[str, Any] | None) -> bool:
    return bool(settings and settings.get("enabled"))


def head_modules(model: PreTrainedModel) -> list[str]:
    """The task head: the model's top-level children outside the base encoder (``qa_outputs``; ModernBERT's
    ``head`` and ``classifier``)."""
    base = getattr(model, "base_model_prefix", "")
    return [
        name for name, child in model.named_children()
        if name != base and any(p.numel() for p in child.parameters())
    ]


def count_parameters(module: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts (LoRA's point is the first being a small share of the second)."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"trainable_parameters": trainable, "total_parameters": total}


def apply_lora(model: PreTrainedModel, settings: Mapping[str, Any] | None) -> nn.Module:
    """Freeze ``model`` and add LoRA adapters (``model.lora``: r, alpha, dropout, target_modules, ...).

    ``modules_to_save: null`` keeps the task head trainable (a QA head starts random, adapters alone
    cannot learn it); ``target_modules: all-linear`` adapts every linear layer of the encoder, not the head.
    """
    if not lora_enabled(settings):
        return model
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ValueError(f"model.lora.enabled=true needs the peft package: {INSTALL_HINT}.") from None
    settings = dict(settings or {})
    heads = settings.get("modules_to_save")
    heads = head_modules(model) if heads is None else list(heads)
    target = settings.get("target_modules")
    if isinstance(target, Sequence) and not isinstance(target, str):
        target = list(target)
    config = LoraConfig(
        r=int(settings.get("r", 8)),
        lora_alpha=float(settings.get("alpha", 16)),
        lora_dropout=float(settings.get("dropout", 0.0)),
        target_modules=target,
        # peft's all-linear would also adapt (and then fail to save) the head it must train in full
        exclude_modules=heads if target == "all-linear" and heads else None,
        modules_to_save=heads or None,
        bias="none",
    )
    try:
        wrapped = get_peft_model(model, config)
    except ValueError as error:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"model.lora.target_modules={target!r} does not fit {type(model).__name__} ({error}); "
            f"its linear layers are named {linear}, or use model.lora.target_modules=all-linear."
        ) from None
    counts = count_parameters(wrapped)
    log.info(
        "LoRA r=%s on %s, training %s: %d of %d parameters (%.2f%%)",
        config.r, target, heads or "adapters only", counts["trainable_parameters"], counts["total_parameters"],
        100 * counts["trainable_parameters"] / max(counts["total_parameters"], 1),
    )
    return wrapped


def check_checkpoint(checkpoint: Mapping[str, Any], settings: Mapping[str, Any] | None) -> None:
    """A LoRA checkpoint loads only into a LoRA-wrapped model (and the reverse): say so, not a key dump."""
    trained = lora_enabled((checkpoint.get("hyper_parameters") or {}).get("lora"))
    if trained != lora_enabled(settings):
        raise ValueError(
            f"the checkpoint was trained with model.lora.enabled={str(trained).lower()}; load it with the same "
            "setting (and the same model.lora.* values), or use the run's merged/ directory as a plain model."
        )


def is_peft_model(model: nn.Module) -> bool:
    return hasattr(model, "merge_and_unload") and hasattr(model, "peft_config")


def merged_model(model: nn.Module) -> PreTrainedModel:
    """A plain transformers model with the adapters folded into its weights; ``model`` itself is untouched."""
    if not is_peft_model(model):
        return model  # type: ignore[return-value]
    return copy.deepcopy(model).merge_and_unload()


def export_pretrained(model: nn.Module, tokenizer: Any, directory: str | Path) -> Path:
    """``save_pretrained`` of the (merged) model plus its tokenizer: a directory ``backbone=local`` loads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    merged_model(model).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def export_adapter(model: nn.Module, directory: str | Path) -> Path | None:
    """The adapters and saved modules alone (peft's ``save_pretrained``: megabytes, not the whole encoder)."""
    if not is_peft_model(model):
        return None
    directory = Path(directory)
    model.save_pretrained(directory)
    return directory


def export_lora(
    encoder: Any, tokenizer: Any, lora: Mapping[str, Any], output_dir: Path, *, counted: Any = None,
    mergeable: bool = True,
) -> dict[str, Any]:
    """``adapter/`` and (unless ``export_merged: false`` or not ``mergeable``) ``merged/`` of a LoRA encoder.

    ``counted``: the module whose parameters are reported (default: the encoder).
    """
    out: dict[str, Any] = dict(count_parameters(encoder if counted is None else counted))
    out["adapter"] = str(export_adapter(encoder, Path(output_dir) / "adapter"))
    if lora.get("export_merged", True) and mergeable:
        out["merged_model"] = str(export_pretrained(encoder, tokenizer, Path(output_dir) / "merged"))
    return out
