"""Dense text encoders on disk: the one format that training (``models/biencoder.py``) writes and search
(``retrievals/dense.py``) reads, so neither imports the other.

A dense-encoder directory (``<run>/retriever/``, what ``retriever.model_path`` names) holds::

    dense_encoder.json          {"format": "kornlp-dense-encoder", "shared": true, "pooling": "cls", ...}
    tokenizer.json ...          the tokenizer (save_pretrained)
    encoder/                    shared: one transformers model (save_pretrained, safetensors) for both sides
    query/  passage/            separate: a model per side

A plain transformers or sentence-transformers model directory (or a hub name, when online) works too: one
shared model, pooling read from sentence-transformers' ``1_Pooling/config.json`` when there is one, else the
caller's default; embeddings normalised when it has a ``Normalize`` module.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "ENCODER_FILE",
    "EncoderSettings",
    "LoadedEncoder",
    "POOLINGS",
    "embed",
    "encoder_fingerprint",
    "load_dense_encoder",
    "model_fingerprint",
    "pool",
    "save_dense_encoder",
]

ENCODER_FILE = "dense_encoder.json"
ENCODER_FORMAT = "kornlp-dense-encoder"
POOLINGS = ("cls", "mean")
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass
class EncoderSettings:
    """How text becomes a vector: which token(s) pool into it, whether it is L2-normalised (cosine), the
    longest question and passage in tokens, and text put before each side (e5-style ``"query: "``)."""

    pooling: str = "cls"
    normalize: bool = False
    shared: bool = True
    query_max_length: int = 64
    passage_max_length: int = 384
    query_prefix: str = ""
    passage_prefix: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r}: choose one of {', '.join(POOLINGS)}.")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per sequence: the first token's state (``cls``) or the mean over real tokens (``mean``)."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def embed(model: nn.Module, inputs: dict[str, torch.Tensor], settings: EncoderSettings) -> torch.Tensor:
    """The pooled (and, with ``normalize``, unit-length) embeddings of a tokenised batch, in float32."""
    hidden = model(**inputs).last_hidden_state
    vectors = pool(hidden, inputs["attention_mask"], settings.pooling).float()
    return nn.functional.normalize(vectors, dim=-1) if settings.normalize else vectors


def save_dense_encoder(
    directory: str | os.PathLike[str],
    query_model: Any,
    passage_model: Any | None,
    tokenizer: Any,
    settings: EncoderSettings,
) -> Path:
    """Write the directory described in the module docstring; ``passage_model`` None means shared weights.
    ``dense_encoder.json`` is written last: a directory with it is complete."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    settings = EncoderSettings(**{**asdict(settings), "shared": passage_model is None})
    tokenizer.save_pretrained(out)
    if passage_model is None:
        query_model.save_pretrained(out / "encoder")
    else:
        query_model.save_pretrained(out / "query")
        passage_model.save_pretrained(out / "passage")
    (out / ENCODER_FILE).write_text(
        json.dumps({"format": ENCODER_FORMAT, "version": 1, **asdict(settings)}, indent=2) + "\n", encoding="utf-8"
    )
    return out


@dataclass
class LoadedEncoder:
    """A dense encoder ready to embed: the query model, the passage model (the same object when shared),
    the tokenizer, the settings, and a fingerprint of the weights (what a saved index is checked against)."""

    query_model: nn.Module
    passage_model: nn.Module
    tokenizer: Any
    settings: EncoderSettings
    fingerprint: str


def _sentence_transformers_settings(path: Path, default_pooling: str) -> dict[str, Any]:
    """Pooling and normalisation of a sentence-transformers directory (its modules.json), else the default."""
    settings: dict[str, Any] = {"pooling": default_pooling, "normalize": False}
    modules = path / "modules.json"
    if not modules.is_file():
        return settings
    for module in json.loads(modules.read_text(encoding="utf-8")):
        kind = str(module.get("type", ""))
        if kind.endswith("Normalize"):
            settings["normalize"] = True
        if kind.endswith("Pooling"):
            config = json.loads((path / module.get("path", "") / "config.json").read_text(encoding="utf-8"))
            settings["pooling"] = "cls" if config.get("pooling_mode_cls_token") else "mean"
    return settings


def model_fingerprint(directory: str | os.PathLike[str], names: Sequence[str] = (),
                      suffixes: Sequence[str] = (".safetensors", ".bin")) -> str:
    """sha256 (16 hex digits) of the files under ``directory`` named in ``names`` or ending in ``suffixes``
    (weights), with their relative paths: a retrained or replaced model gives another fingerprint, so an index
    or a cache built with the old one is refused or rebuilt."""
    root = Path(directory)
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and (p.name in names or p.name.endswith(tuple(suffixes))))
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def encoder_fingerprint(directory: str | os.PathLike[str]) -> str:
    """:func:`model_fingerprint` of a dense encoder: its weights and ``dense_encoder.json``."""
    return model_fingerprint(directory, names=(ENCODER_FILE,), suffixes=_WEIGHTS)


def load_dense_encoder(
    name_or_path: str,
    *,
    key: str = "retriever.model_path",
    default_pooling: str = "cls",
    device: str | torch.device = "cpu",
) -> LoadedEncoder:
    """The encoder in a dense-encoder directory, a transformers / sentence-transformers directory, or a hub name.

    A path that does not exist and is not a hub name, or that holds no model, is a ``ValueError`` naming
    ``key`` and the fix.
    """
    from transformers import AutoModel, AutoTokenizer

    fix = ("train one with `python main.py +experiment=dense_retriever` and give its <run>/retriever directory, "
           "or a transformers / sentence-transformers model directory")
    if not name_or_path:
        raise ValueError(f"{key} is not set: {fix}.")
    path = Path(name_or_path)
    looks_local = path.is_absolute() or name_or_path.startswith(".") or path.exists() or name_or_path.count("/") > 1
    if looks_local and not path.is_dir():
        raise ValueError(f"{key}={name_or_path}: no such directory; {fix}.")
    manifest = path / ENCODER_FILE
    try:
        if manifest.is_file():
            saved = json.loads(manifest.read_text(encoding="utf-8"))
            if saved.pop("format", None) != ENCODER_FORMAT:
                raise ValueError(f"{key}={name_or_path}: {ENCODER_FILE} is not a {ENCODER_FORMAT} file; {fix}.")
            saved.pop("version", None)
            settings = EncoderSettings(**saved)
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            if settings.shared:
                query = passage = AutoModel.from_pretrained(str(path / "encoder"))
            else:
                query = AutoModel.from_pretrained(str(path / "query"))
                passage = AutoModel.from_pretrained(str(path / "passage"))
            fingerprint = encoder_fingerprint(path)
        else:
            if path.is_dir() and not any((path / name).exists() for name in (*_WEIGHTS, "model.safetensors.index.json")):
                raise ValueError(f"{key}={name_or_path}: the directory holds no {ENCODER_FILE} and no model weights; "
                                 f"{fix}.")
            settings = EncoderSettings(**_sentence_transformers_settings(path, default_pooling))
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            query = passage = AutoModel.from_pretrained(name_or_path)
            fingerprint = encoder_fingerprint(path) if path.is_dir() else f"hub:{name_or_path}"
    except OSError as error:  # transformers' "not a valid model identifier" / offline errors
        raise ValueError(f"{key}={name_or_path}: cannot load a model from it ({str(error).splitlines()[0]}); "
                         f"{fix}.") from None
    for model in {id(query): query, id(passage): passage}.values():
        model.to(device).eval()
    return LoadedEncoder(query, passage, tokenizer, settings, fingerprint)
