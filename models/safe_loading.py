"""Loading what a run did not write itself: checkpoints and pretrained names, safely and checked.

* Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a
  checkpoint from elsewhere cannot run code while it loads. ``main.py`` passes ``weights_only=True`` to
  Lightning too.
* Before Lightning restores ``ckpt_path``, :func:`check_checkpoint` compares the file with the model about
  to receive it. Lightning alone fails on another backbone with a page of size mismatches, and loads a
  checkpoint trained with another tokenizer of the same size *silently*: the weights then read other token
  ids and predict nonsense. Every module stores its tokenizer's :func:`tokenizer_fingerprint` in its
  hyperparameters for this check.
* A pretrained name that cannot be loaded (offline, a typo, a missing directory) is an error naming it
  (:func:`pretrained_load_error`), never a fallback to other or random weights.

Nothing here imports torch or transformers at module level: ``main.py`` checks paths before paying for them.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import DataFormatError

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule

__all__ = [
    "check_checkpoint",
    "existing_checkpoint",
    "load_checkpoint",
    "pretrained_load_error",
    "tokenizer_fingerprint",
]

# ckpt_path values Lightning resolves itself (from the trainer's callbacks), not files.
LIGHTNING_KEYWORDS = ("best", "last", "hpc", "registry")
_OFFLINE = ("1", "true", "yes", "on")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash of the vocabulary (token -> id): weights only make sense with the ids they were trained on."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def record_backbone(hparams: Any, backbone: Any) -> None:
    """What every module's checkpoint says about its backbone: where it came from and its vocabulary
    (``ckpt_path`` is checked against it: same-sized vocabularies with other ids load silently otherwise)."""
    hparams["backbone_source"] = backbone.source
    hparams["tokenizer_fingerprint"] = tokenizer_fingerprint(backbone.tokenizer)


# ----------------------------------------------------------------------------- checkpoint files


def _nearby_checkpoints(directory: Path) -> list[str]:
    """``*.ckpt`` files in ``directory`` and its ``checkpoints/`` (a run dir), never a deep scan."""
    found = [*directory.glob("*.ckpt"), *(directory / "checkpoints").glob("*.ckpt")]
    return [str(p) for p in sorted(found)[:5]]


def existing_checkpoint(value: str | os.PathLike[str], key: str = "ckpt_path") -> str:
    """``value`` if it is a checkpoint file (or a keyword Lightning resolves); else an error naming what exists.

    Checked before anything slow runs, so a typo in the path costs a second, not a tokenizer and a model load.
    """
    text = os.fspath(value)
    if text in LIGHTNING_KEYWORDS:
        return text
    path = Path(text)
    if path.is_file():
        return text
    if path.is_dir():
        problem, found = "is a directory, not a checkpoint file", _nearby_checkpoints(path)
    else:
        anchor = next((p for p in path.parents if p.is_dir()), None)
        problem = "no such checkpoint file"
        found = _nearby_checkpoints(anchor) if anchor is not None and anchor != Path(anchor.anchor) else []
    if found:
        fix = f"give one of the checkpoints there, e.g. {key}={found[-1]} (all: {', '.join(found)})"
    else:
        fix = f"give the path of a .ckpt file written by a fit run: {key}=<run dir>/checkpoints/last.ckpt"
    raise DataFormatError(path, None, problem, fix)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's contents with ``weights_only=True`` (memory-mapped: checking a large one is cheap)."""
    import torch

    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # the legacy (non-zip) format cannot be memory-mapped
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if unsafe is None:
            raise _unreadable(path, error) from None
        raise DataFormatError(
            path,
            None,
            f"holds pickled Python objects ({unsafe.group(1)}) that torch.load(weights_only=True) refuses to "
            "load, because loading them could run any code",
            "load checkpoints written by this framework (tensors and plain values only); if you trust this "
            "file, re-save its weights: torch.save({'state_dict': torch.load(f, weights_only=False)"
            "['state_dict']}, 'clean.ckpt')",
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise _unreadable(path, error) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise DataFormatError(
            path,
            None,
            "has no state_dict: it is not a Lightning checkpoint",
            "give a .ckpt written by a run of this framework (<run dir>/checkpoints/last.ckpt); a Hugging Face "
            "model directory goes to backbone=local backbone.name_or_path=... or model.init_from=...",
        )
    return checkpoint


def _unreadable(path: str | os.PathLike[str], error: BaseException) -> DataFormatError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return DataFormatError(
        path,
        None,
        f"is not a readable checkpoint ({reason[:200]})",
        "copy it again (an interrupted copy or download truncates it) or pick another checkpoint",
    )


# ----------------------------------------------------------------------------- does it fit this run?


def check_checkpoint(path: str | os.PathLike[str], module: LightningModule, tokenizer: Any) -> None:
    """Refuse a checkpoint that does not fit ``module``: its own checks, then the tokenizer, then every tensor."""
    if os.fspath(path) in LIGHTNING_KEYWORDS:
        return
    path = Path(path)
    checkpoint = load_checkpoint(path)
    try:  # the module's own checks (LoRA setting, class list) read only the checkpoint; Lightning runs them again
        module.on_load_checkpoint(checkpoint)
    except ValueError as error:
        raise ValueError(f"ckpt_path={path}: {error}") from None
    backbone_dir = path.parent.parent / "backbone"  # <run>/checkpoints/x.ckpt -> <run>/backbone
    if backbone_dir.is_dir():
        fix = f"load the backbone it was trained with: backbone=local backbone.name_or_path={backbone_dir}"
    else:
        fix = (
            "load the backbone of the run that wrote it (backbone=local backbone.name_or_path=<that run>/backbone) "
            "with the same backbone.* and model.* settings"
        )
    _check_tokenizer(path, checkpoint, tokenizer, backbone_dir, fix)
    _check_weights(path, checkpoint["state_dict"], module, fix)


def _check_tokenizer(
    path: Path, checkpoint: Mapping[str, Any], tokenizer: Any, backbone_dir: Path, fix: str
) -> None:
    saved = (checkpoint.get("hyper_parameters") or {}).get("tokenizer_fingerprint")
    # a checkpoint older than the fingerprint: compare with the tokenizer saved beside it
    if saved is None and (backbone_dir / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        saved = tokenizer_fingerprint(AutoTokenizer.from_pretrained(str(backbone_dir)))
    ours = tokenizer_fingerprint(tokenizer)
    if saved is not None and saved != ours:
        problem = (
            f"was trained with another tokenizer than this run's (vocabulary fingerprint {saved}, this run's "
            f"{ours}, {len(tokenizer)} tokens): its weights would read other token ids and predict nonsense"
        )
        raise DataFormatError(path, None, problem, fix)


def _check_weights(path: Path, state: Mapping[str, Any], module: LightningModule, fix: str) -> None:
    own = module.state_dict()
    strict = module.strict_loading
    missing = [k for k in own if k not in state] if strict else []
    unexpected = [k for k in state if k not in own] if strict else []
    reshaped = [
        f"{k}: {tuple(state[k].shape)} in it, {tuple(own[k].shape)} here"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    if reshaped:
        parts.append(f"{len(reshaped)} tensors have another shape, e.g. {reshaped[0]}")
    if missing:
        parts.append(f"{len(missing)} of this model's tensors are not in it, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} of its tensors are not in this model, e.g. {unexpected[0]}")
    if parts:
        problem = f"does not fit this run's model ({'; '.join(parts)}): it was trained with another backbone or model"
        raise DataFormatError(path, None, problem, fix)


# ----------------------------------------------------------------------------- pretrained names


def pretrained_load_error(key: str, name: str, error: BaseException) -> ValueError | None:
    """A clear error for a pretrained name or directory that could not be loaded, or None if ``error`` is another.

    transformers raises OSError when a name is neither a directory nor cached and the Hub is unreachable (or
    ``HF_HUB_OFFLINE=1``), and various errors for a directory without the files it needs. The message names
    the key, says which case it is and how to make the name loadable, and that nothing falls back.
    """
    local = Path(name).expanduser()
    incomplete = local.is_dir() and not (
        (local / "config.json").is_file() and any((local / f).is_file() for f in TOKENIZER_FILES)
    )
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if cause is None and not incomplete:
        return None
    shown = cause or error
    while shown.__cause__ is not None:  # Hydra's instantiate wraps the loader's error: show the loader's
        shown = shown.__cause__
    reason = (str(shown).strip().splitlines() or [type(shown).__name__])[0][:200]
    # Hub ids are "name" or "org/name"; anything else is meant as a directory
    if incomplete:
        files = sorted(p.name for p in local.iterdir())[:10]
        problem = (
            f"the directory holds {files or 'nothing'}, not a saved model (config.json and tokenizer files)"
        )
        fix = "give a directory written by save_pretrained (a run's backbone/, mlm_backbone/ or merged/)"
    elif name.startswith((".", "/", "~")) or name.count("/") > 1 or local.exists():
        problem = "there is no such directory"
        fix = "check the path: a run's backbone/ directory is <run dir>/backbone"
    else:
        offline = any(
            os.environ.get(v, "").lower() in _OFFLINE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
        )
        problem = "it is not in the local Hugging Face cache and " + (
            "HF_HUB_OFFLINE forbids downloading it" if offline else "the Hub could not be reached"
        )
        cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
        fix = (
            f"check the name (a Hub id such as klue/roberta-large); to run offline, download it once where there "
            f"is network (hf download {name}) and copy the cache ({cache}) here, or save it with "
            "save_pretrained and give that directory"
        )
    return ValueError(
        f"{key}={name!r} could not be loaded: {problem} ({reason}). Nothing falls back to other or random "
        f"weights.\n  fix: {fix}"
    )
