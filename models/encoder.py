"""The HF model behind every LightningModule: backbone weights, then ``model.init_from``, then LoRA.

``init_from`` loads weights only (the optimizer and LR schedule start fresh), which is what
two-stage fine-tuning and task-adaptive pre-training hand from one stage to the next:

* a Lightning ``.ckpt`` of any module of this framework: the encoder must match exactly; a head that is
  missing or of another shape (an MLM head into a QA reader) is left freshly initialised and logged;
* a Hugging Face model directory (``save_pretrained``: a TAPT ``mlm_backbone/``, a LoRA ``merged/``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedModel

from models.backbone import Backbone
from models.lora import apply_lora
from models.safe_loading import pretrained_load_error

log = logging.getLogger(__name__)

MODULE_PREFIX = "encoder."  # the attribute every LightningModule of the framework keeps its HF model under


def build_encoder(
    model_class: Any,
    backbone: Backbone,
    init_from: str | None = None,
    lora: Mapping[str, Any] | None = None,
) -> torch.nn.Module:
    """``model_class`` (an ``AutoModelFor...``) for the backbone; weights from ``init_from`` if given."""
    if init_from:
        path = Path(init_from)
        if not path.exists():
            raise FileNotFoundError(f"model.init_from={init_from}: no such file or directory.")
        if path.is_dir():
            model = load_pretrained_dir(model_class, backbone, path)
        else:
            model = model_class.from_config(backbone.config)
            load_checkpoint_weights(model, path, backbone)
    elif backbone.weights:
        model = from_pretrained_weights(model_class, backbone)
    else:
        model = model_class.from_config(backbone.config)
    model.train()  # from_pretrained returns eval mode and Lightning keeps a module's mode: no dropout
    return apply_lora(model, lora)


def from_pretrained_weights(model_class: Any, backbone: Backbone) -> PreTrainedModel:
    """The backbone's pretrained weights; an unreachable name is a clear error, never random weights.

    Code shipped with a Hub model runs only when the backbone says so (``extra["trust_remote_code"]``);
    transformers then refuses such a model with its own message.
    """
    try:
        return model_class.from_pretrained(
            backbone.weights,
            config=backbone.config,
            trust_remote_code=bool(backbone.extra.get("trust_remote_code", False)),
        )
    except OSError as error:
        raise pretrained_load_error("backbone.name_or_path", str(backbone.weights), error) or error from None


def check_vocabulary(source: Path, backbone: Backbone) -> None:
    """Weights are only meaningful with the tokenizer they were trained with: refuse another vocabulary."""
    if not any((source / name).exists() for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        return
    theirs = AutoTokenizer.from_pretrained(str(source)).get_vocab()
    if theirs != backbone.tokenizer.get_vocab():
        raise ValueError(
            f"model.init_from: the weights were trained with the tokenizer in {source}, which differs from "
            f"backbone={backbone.source}'s ({len(theirs)} vs {len(backbone.tokenizer)} tokens); load that "
            f"tokenizer too: backbone=local backbone.name_or_path={source}"
        )


def load_pretrained_dir(model_class: Any, backbone: Backbone, path: Path) -> PreTrainedModel:
    """``from_pretrained`` of a saved model directory; encoder weights must all be there."""
    check_vocabulary(path, backbone)
    model, info = model_class.from_pretrained(
        str(path), config=backbone.config, output_loading_info=True, ignore_mismatched_sizes=True
    )
    mismatched = [item[0] if isinstance(item, tuple) else item for item in info.get("mismatched_keys", [])]
    report(model, path, missing=list(info.get("missing_keys", [])), mismatched=mismatched,
           unused=list(info.get("unexpected_keys", [])))
    return model


def checkpoint_state(path: Path) -> dict[str, torch.Tensor]:
    """The HF model's tensors in a Lightning checkpoint of this framework (``encoder.*`` keys)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and format errors all mean "not a checkpoint we can read"
        raise ValueError(
            f"model.init_from={path}: not a readable Lightning checkpoint ({type(error).__name__}: {error}); "
            "give a .ckpt written by this framework or a save_pretrained directory."
        ) from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"model.init_from={path}: the file has no state_dict (is it a Lightning checkpoint?).")
    weights = {k.removeprefix(MODULE_PREFIX): v for k, v in state.items() if k.startswith(MODULE_PREFIX)}
    if not weights:
        raise ValueError(f"model.init_from={path}: no '{MODULE_PREFIX}*' weights in its state_dict.")
    if any(k.startswith("base_model.model.") for k in weights):
        raise ValueError(
            f"model.init_from={path} holds LoRA adapters on a frozen encoder; start from the merged model that "
            "run exported instead: model.init_from=<that run>/merged"
        )
    return weights


def load_checkpoint_weights(model: PreTrainedModel, path: Path, backbone: Backbone) -> None:
    """Copy a checkpoint's weights into ``model``: strict about the encoder, lenient about the head."""
    backbone_dir = path.parent.parent / "backbone"  # <run>/checkpoints/x.ckpt -> <run>/backbone
    if backbone_dir.is_dir():
        check_vocabulary(backbone_dir, backbone)
    weights = checkpoint_state(path)
    own = model.state_dict()
    usable = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    mismatched = [k for k in weights if k in own and own[k].shape != weights[k].shape]
    missing = [k for k in own if k not in weights]
    report(model, path, missing=missing, mismatched=mismatched, unused=[k for k in weights if k not in own],
           loaded=len(usable))
    model.load_state_dict(usable, strict=False)


def report(
    model: PreTrainedModel,
    source: Path,
    missing: list[str],
    mismatched: list[str],
    unused: list[str],
    loaded: int | None = None,
) -> None:
    """Log what ``init_from`` loaded and skipped; a gap or shape change in the encoder itself is an error."""
    base = f"{model.base_model_prefix}."
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    encoder_gaps = [k for k in missing + mismatched if k.startswith(base) and k not in tied]
    if encoder_gaps:
        raise ValueError(
            f"model.init_from={source} does not fit this encoder: {len(encoder_gaps)} encoder weights are "
            f"missing or of another shape (e.g. {encoder_gaps[:3]}); it was trained with another backbone, so "
            "load that run's backbone too (backbone=local backbone.name_or_path=<that run>/backbone)."
        )
    fresh = sorted(set(missing + mismatched) - tied)
    if loaded is None:
        loaded = len(model.state_dict()) - len(fresh)
    log.info("model.init_from=%s: loaded %d tensors (the whole encoder)", source, loaded)
    if fresh:
        log.info("model.init_from: freshly initialised head weights (absent or of another shape): %s", fresh)
    if unused:
        log.info("model.init_from: weights not used by %s: %s", type(model).__name__, sorted(unused))
