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
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerFast

from datamodules.errors import DataFormatError

log = logging.getLogger(__name__)

SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
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


# ----------------------------------------------------------------------------- text for training a tokenizer


def iter_texts(paths: Sequence[str | Path], fields: Sequence[str]) -> Iterator[str]:
    """Yield the string values stored under ``fields`` in JSON, JSON Lines or ``save_to_disk`` data.

    Walking the JSON generically keeps the tokenizer trainer independent of each task's format.
    """
    wanted = set(fields)
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            from datasets import load_from_disk

            data = load_from_disk(str(path))
            splits = data.values() if hasattr(data, "values") else [data]
            for split in splits:
                for name in wanted & set(split.column_names):
                    yield from (t for t in split[name] if isinstance(t, str))
            continue
        if path.suffix.lower() in (".csv", ".tsv"):
            from datamodules.classification import read_records

            yield from _walk_strings(read_records(path)[0], wanted)
            continue
        yield from _walk_strings(_read_json_records(path), wanted)


def _read_json_records(path: Path) -> Any:
    """JSON or JSON Lines; a syntax error names the file and line (the tokenizer reads data first)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (check datamodule.train_file).")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataFormatError(
            path, f"line {error.lineno}, column {error.colno}", f"not valid JSON ({error.msg})",
            "repair or re-export the file (a truncated download is the usual cause)",
        ) from None


def _walk_strings(node: Any, wanted: set[str], key: str | None = None) -> Iterator[str]:
    if isinstance(node, dict):
        for child_key, child in node.items():
            yield from _walk_strings(child, wanted, child_key)
    elif isinstance(node, list):
        for child in node:
            yield from _walk_strings(child, wanted, key)
    elif isinstance(node, str) and key in wanted:
        yield node


# ----------------------------------------------------------------------------- tokenizer training


def train_tokenizer(
    texts: Iterable[str],
    *,
    algorithm: str = "wordpiece",
    vocab_size: int = 8000,
    min_frequency: int = 2,
    limit_alphabet: int = 4000,
    lowercase: bool = False,
    model_max_length: int = 512,
    pre_tokenizer: str = "bert",
    initial_alphabet: str = "",
) -> PreTrainedTokenizerFast:
    """Train a BERT-style subword tokenizer with HF ``tokenizers`` and wrap it as a fast tokenizer.

    ``limit_alphabet`` is large on purpose: Korean has thousands of syllables and WordPiece's
    default of 1,000 would turn rare syllables (and so whole words) into ``[UNK]``.
    ``pre_tokenizer: metaspace`` (BPE only) marks word starts with ``▁`` as SentencePiece (KoGPT2, KoBART) does,
    so decoding gives back the exact spacing: what a generator's output text needs. ``bert`` splits off
    punctuation, and its decoder cannot tell ``30 %`` from ``30%``. ``initial_alphabet``: characters kept in
    the vocabulary even if the training text lacks them (a prompt template's newline and colon).
    """
    alphabet = {"initial_alphabet": list(dict.fromkeys(initial_alphabet))} if initial_alphabet else {}
    if pre_tokenizer not in ("bert", "metaspace"):
        raise ValueError(f"backbone.tokenizer.pre_tokenizer={pre_tokenizer!r}: use 'bert' or 'metaspace'")
    if pre_tokenizer == "metaspace" and algorithm != "bpe":
        raise ValueError("backbone.tokenizer.pre_tokenizer=metaspace needs backbone.tokenizer.algorithm=bpe")
    if pre_tokenizer == "metaspace":
        model = models.BPE(unk_token=SPECIAL_TOKENS["unk_token"])
        trainer: Any = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            limit_alphabet=limit_alphabet,
            special_tokens=list(SPECIAL_TOKENS.values()),
            **alphabet,
        )
        decoder: Any = decoders.Metaspace()
    elif algorithm == "wordpiece":
        model = models.WordPiece(unk_token=SPECIAL_TOKENS["unk_token"])
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            limit_alphabet=limit_alphabet,
            special_tokens=list(SPECIAL_TOKENS.values()),
            **alphabet,
        )
        decoder = decoders.WordPiece()
    elif algorithm == "bpe":
        model = models.BPE(unk_token=SPECIAL_TOKENS["unk_token"], continuing_subword_prefix="##")
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            limit_alphabet=limit_alphabet,
            continuing_subword_prefix="##",
            special_tokens=list(SPECIAL_TOKENS.values()),
            **alphabet,
        )
        decoder = decoders.WordPiece()
    else:
        raise ValueError(f"backbone.tokenizer.algorithm={algorithm!r}: use 'wordpiece' or 'bpe'")

    tokenizer = Tokenizer(model)
    steps = [normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else [])
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = (
        pre_tokenizers.Metaspace() if pre_tokenizer == "metaspace" else pre_tokenizers.BertPreTokenizer()
    )
    tokenizer.decoder = decoder
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if algorithm == "wordpiece":
        # The trainer numbers tokens of equal frequency in hash-map order, which differs between
        # processes: the same vocabulary then gets other ids, so the same seed trains another model.
        # WordPiece only looks tokens up by string, so sorted ids change nothing but reproducibility.
        specials = list(SPECIAL_TOKENS.values())
        ordered = specials + sorted(set(tokenizer.get_vocab()) - set(specials))
        tokenizer.model = models.WordPiece(
            {token: i for i, token in enumerate(ordered)}, unk_token=SPECIAL_TOKENS["unk_token"]
        )
    cls_id = tokenizer.token_to_id(SPECIAL_TOKENS["cls_token"])
    sep_id = tokenizer.token_to_id(SPECIAL_TOKENS["sep_token"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    # BertTokenizerFast(vocab_file=...) would rebuild a special-tokens-only vocab in transformers 5.x,
    # so wrap the trained object directly.
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, model_max_length=model_max_length, **SPECIAL_TOKENS
    )


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
TOKENIZER_VERSION = 2


def _fingerprint(texts: list[str], settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps({**settings, "version": TOKENIZER_VERSION}, sort_keys=True).encode())
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


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
    cached = Path(cache_dir) / "tokenizers" / _fingerprint(texts, settings) if cache_dir else None
    if cached is not None and (cached / "tokenizer.json").exists():
        tok = AutoTokenizer.from_pretrained(str(cached))
        log.info("Reusing cached tokenizer %s", cached)
    else:
        tok = train_tokenizer(texts, **tokenizer)
        if cached is not None:
            tok.save_pretrained(cached)
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
