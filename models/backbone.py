"""Tokenizer + encoder configuration, from a hub name, a local directory, or built offline.

The offline ``tiny`` backbone trains a subword tokenizer on the task's own training text and
describes a small randomly initialised encoder, so the whole framework runs with no network.
Weights are created by the LightningModule (``from_config`` or ``from_pretrained``), never here:
the backbone only says *which* weights to use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerFast

from core.cache import build_once, publish_directory
from core.record_files import iter_texts  # the generic text walk; also imported from here
from core.tokenizer_training import SPECIAL_TOKENS, train_tokenizer

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


class Backbone:
    """What a LightningModule needs to build its encoder, and what a run saves to be reloadable.

    A plain class, not a dataclass: Hydra's instantiate would turn a dataclass argument into a config.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerFast,
        config: PretrainedConfig,
        weights: str | None = None,
        source: str = "tiny",
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.weights = weights  # hub name or directory passed to from_pretrained; None = random init
        self.source = source
        self.extra = extra or {}

    def save(self, directory: str | Path) -> Path:
        """Write tokenizer + config so ``backbone=local backbone.name_or_path=<dir>`` reloads this run."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        self.config.save_pretrained(directory)
        return directory


# ----------------------------------------------------------------------------- tokenizer quality


def unknown_token_rate(tokenizer: PreTrainedTokenizerFast, texts: Iterable[str]) -> float:
    """Share of produced tokens that are ``[UNK]``: a trained Korean tokenizer should be near 0."""
    unk, total = 0, 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        unk += sum(1 for i in ids if i == tokenizer.unk_token_id)
        total += len(ids)
    return unk / max(total, 1)


# ----------------------------------------------------------------------------- builders used by Hydra


# Bump when train_tokenizer changes what it produces, so cached tokenizers are not reused.
TOKENIZER_VERSION = 3


def _fingerprint(texts: list[str], settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps({**settings, "version": TOKENIZER_VERSION}, sort_keys=True).encode())
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def cached_tokenizer(directory: Path, texts: list[str], settings: dict[str, Any]) -> PreTrainedTokenizerFast:
    """The tokenizer saved in ``directory``, trained and saved there first by one run at a time."""

    def load() -> PreTrainedTokenizerFast:
        return AutoTokenizer.from_pretrained(str(directory))

    def build() -> PreTrainedTokenizerFast:
        publish_directory(train_tokenizer(texts, **settings).save_pretrained, directory)
        return load()  # as every later run reads it: the run that trains it gets the very same object

    return build_once(directory, lambda: (directory / "tokenizer.json").exists(), build, load)


def tiny_backbone(
    train_files: Sequence[str | Path],
    text_fields: Sequence[str],
    model_type: str,
    config: dict[str, Any],
    tokenizer: dict[str, Any],
    cache_dir: str | Path | None = None,
) -> Backbone:
    """Train (or reuse from cache) a tokenizer on the training text and describe a small encoder."""
    files = [str(f) for f in train_files if f]
    if not files:
        raise ValueError(
            "backbone=tiny trains its tokenizer on the training data, but no training file was given: "
            "set datamodule.train_file (or backbone.train_files)."
        )
    missing = [f for f in files if not Path(f).exists()]
    if missing:
        raise FileNotFoundError(f"backbone.train_files: {missing} not found: check datamodule.train_file.")
    texts = [unicodedata.normalize("NFC", t) for t in iter_texts(files, text_fields)]
    if not texts:
        raise ValueError(f"backbone=tiny found no text under fields {list(text_fields)} in {files}.")
    # Deduplicate (contexts repeat once per question) while keeping a stable order.
    texts = list(dict.fromkeys(texts))
    settings = {"tokenizer": dict(tokenizer), "fields": list(text_fields)}
    if cache_dir is None:
        tok = train_tokenizer(texts, **tokenizer)
    else:
        tok = cached_tokenizer(Path(cache_dir) / "tokenizers" / _fingerprint(texts, settings), texts, tokenizer)
    unk = unknown_token_rate(tok, texts[:500])
    if unk > 0.01:
        log.warning("Tiny tokenizer maps %.1f%% of training tokens to [UNK]: raise limit_alphabet", 100 * unk)
    model_config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        # encoders that read these from their config (ModernBERT) must agree with the trained tokenizer
        cls_token_id=tok.cls_token_id,
        sep_token_id=tok.sep_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
        **dict(config),
    )
    # A generator (model=generator) starts and ends sequences with the tokenizer's bos/eos: the same [CLS]/[SEP]
    # the config names above. An encoder-decoder starts decoding at eos, as BART does (labels are [CLS] ... [SEP]).
    tok.bos_token, tok.eos_token = SPECIAL_TOKENS["cls_token"], SPECIAL_TOKENS["sep_token"]
    if model_config.is_encoder_decoder:
        for key in ("decoder_start_token_id", "forced_eos_token_id"):
            if key not in config:
                setattr(model_config, key, tok.sep_token_id)
    return Backbone(tokenizer=tok, config=model_config, weights=None, source="tiny", extra={"unk_rate": unk})


def pretrained_backbone(
    name_or_path: str,
    config_overrides: dict[str, Any] | None = None,
    load_weights: bool = True,
    trust_remote_code: bool = False,
) -> Backbone:
    """Hub name (``klue/roberta-large``) or a local directory, e.g. a previous run's ``backbone/``.

    A directory without weight files (what an offline run saves) gives a randomly initialised
    encoder of that shape; its trained weights then come from a checkpoint (``ckpt_path=``).
    ``trust_remote_code`` runs Python shipped with a hub model: off unless the config turns it on.
    """
    tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if not getattr(tok, "is_fast", False):
        raise ValueError(
            f"backbone.name_or_path={name_or_path!r} has no fast tokenizer; span decoding needs offsets "
            "(offset_mapping), which only fast tokenizers provide."
        )
    model_config = AutoConfig.from_pretrained(
        name_or_path, trust_remote_code=trust_remote_code, **dict(config_overrides or {})
    )
    local = Path(name_or_path)
    has_weights = not local.is_dir() or any((local / name).exists() for name in WEIGHT_FILES)
    weights = name_or_path if (load_weights and has_weights) else None
    return Backbone(tokenizer=tok, config=model_config, weights=weights, source=name_or_path,
                    extra={"trust_remote_code": bool(trust_remote_code)})  # fmt: skip
