"""``datamodule.curriculum``: which difficulty score orders the training data, and how the order is paced.

Shared by the MRC and classification datamodules. The config is a mapping (``pacing``, ``difficulty``,
their settings) or the MRC slice's plain string (``datamodule.curriculum=none|length``); the older keys
``name`` (none | length) and ``key`` still work and map onto ``pacing`` (none | sorted) and ``difficulty``.

Difficulty scores are per example (larger = harder unless ``ascending: false``); a datamodule computes the
ones it knows (:data:`MRC_DIFFICULTIES`, :data:`TEXT_DIFFICULTIES`, ``loss`` for either) and spreads an
example's score over its features. Scores that cost something (BM25, a teacher model's loss) are cached
under ``cache_dir/difficulty`` next to the features, keyed by the data, the tokenizer and the teacher file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from core.cache import build_once
from core.files import write_json
from datamodules.samplers import BabyStepsSampler, CompetenceSampler, CurriculumSampler, SeededShuffleSampler

log = logging.getLogger(__name__)

PACINGS = ("none", "sorted", "baby_steps", "competence", "anti")
# The MRC slice's curriculum names and what they mean now.
LEGACY_NAMES = {"none": "none", "length": "sorted"}
OPTIONS = {
    "name", "key", "pacing", "difficulty", "ascending", "ordered_epochs", "num_buckets", "bucket_epochs", "c0", "T",
    "teacher_ckpt", "bm25_tokenizer",
}
CACHE_VERSION = 1


@dataclass(frozen=True)
class CurriculumSpec:
    """The resolved ``datamodule.curriculum``."""

    pacing: str = "none"
    difficulty: str = "context_length"
    ascending: bool = True
    ordered_epochs: int | None = None
    num_buckets: int = 5
    bucket_epochs: int = 1
    c0: float = 0.01
    T: float = 1.0
    teacher_ckpt: str | None = None
    bm25_tokenizer: str = "char_ngram"

    @property
    def ordered(self) -> bool:
        """Whether the difficulty scores are needed at all (``none`` only shuffles)."""
        return self.pacing != "none"


def curriculum_spec(value: str | Mapping[str, Any] | None, known: Sequence[str], default: str) -> CurriculumSpec:
    """``datamodule.curriculum`` (a mapping, a plain name, or None) checked against the difficulties ``known``."""
    if value is None:
        value = {}
    elif isinstance(value, str):
        value = {"name": value}
    elif not isinstance(value, Mapping):
        raise ValueError(f"datamodule.curriculum={value!r}: give a pacing name or a mapping (pacing, difficulty, ...).")
    unknown = sorted(set(value) - OPTIONS)
    if unknown:
        raise ValueError(f"datamodule.curriculum has unknown option(s) {unknown}: known are {sorted(OPTIONS)}.")
    pacing = value.get("pacing")
    if pacing is None:
        name = value.get("name") or "none"
        if name not in LEGACY_NAMES and name not in PACINGS:
            choices = ", ".join(dict.fromkeys([*LEGACY_NAMES, *PACINGS]))
            raise ValueError(f"datamodule.curriculum.name={name!r} is unknown: use one of {choices}.")
        pacing = LEGACY_NAMES.get(name, name)
    if pacing not in PACINGS:
        raise ValueError(f"datamodule.curriculum.pacing={pacing!r} is unknown: use one of {', '.join(PACINGS)}.")
    difficulty = value.get("difficulty") or value.get("key") or default
    if difficulty not in known:
        raise ValueError(
            f"datamodule.curriculum.difficulty={difficulty!r} is unknown here: choose one of {', '.join(known)} "
            "(datamodule.curriculum.key is its older name)."
        )
    fields = {k: value[k] for k in ("ordered_epochs", "num_buckets", "bucket_epochs", "c0", "T",
                                    "teacher_ckpt", "bm25_tokenizer") if value.get(k) is not None}  # fmt: skip
    spec = CurriculumSpec(pacing=pacing, difficulty=difficulty, ascending=bool(value.get("ascending", True)), **fields)
    if spec.ordered and difficulty == "loss" and not spec.teacher_ckpt:
        raise ValueError(
            "datamodule.curriculum.difficulty=loss needs the model of a previous run: "
            "datamodule.curriculum.teacher_ckpt=<run dir>/checkpoints/<best>.ckpt"
        )
    return spec


def build_sampler(
    spec: CurriculumSpec, difficulties: Sequence[float], shuffle: SeededShuffleSampler, seed: int
) -> Sampler[int]:
    """The training sampler for ``spec``; ``shuffle`` is the plain (maybe length-grouped) seeded shuffle."""
    descending = not spec.ascending
    if spec.pacing == "none":
        return shuffle
    if spec.pacing in ("sorted", "anti"):
        return CurriculumSampler(
            difficulties, descending=descending != (spec.pacing == "anti"), ordered_epochs=spec.ordered_epochs,
            then=shuffle,
        )
    if spec.pacing == "baby_steps":
        return BabyStepsSampler(difficulties, spec.num_buckets, spec.bucket_epochs, seed=seed, descending=descending)
    return CompetenceSampler(difficulties, c0=spec.c0, horizon=spec.T, seed=seed, descending=descending)


def per_feature(per_example: Sequence[float], example_index: Sequence[int]) -> list[float]:
    """An example's score for each of its features (doc-stride windows share their example's difficulty)."""
    return [float(per_example[i]) for i in example_index]


def mean_by_example(values: Sequence[float], example_index: Sequence[int], n_examples: int) -> list[float]:
    """The mean of each example's feature values (an example without features gets the overall mean)."""
    sums = np.bincount(example_index, weights=values, minlength=n_examples)
    counts = np.bincount(example_index, minlength=n_examples)
    fallback = float(np.mean(values)) if len(values) else 0.0
    return np.where(counts > 0, sums / np.maximum(counts, 1), fallback).tolist()


# ----------------------------------------------------------------------------- scores


def _answer_start(ex: Mapping[str, Any]) -> float:
    return float(min((a["answer_start"] for a in ex["answers"]), default=0))


def _token_counts(tokenizer: Any, texts: list[str]) -> list[float]:
    return [float(len(ids)) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]


def _text_tokens(examples: Sequence[Mapping[str, Any]], tokenizer: Any) -> list[float]:
    """Tokens of every text of each example (both sides of a pair), without special tokens."""
    totals = np.zeros(len(examples))
    for position in range(max((len(ex["texts"]) for ex in examples), default=0)):
        texts = [ex["texts"][position] if position < len(ex["texts"]) else "" for ex in examples]
        totals += np.array(_token_counts(tokenizer, texts))
    return totals.tolist()


# name -> (examples, tokenizer) -> one score per example. Characters and the run's own tokens.
MRC_DIFFICULTIES: dict[str, Callable[[Sequence[Mapping[str, Any]], Any], list[float]]] = {
    "context_length": lambda exs, tok: [float(len(ex["context"])) for ex in exs],
    "context_tokens": lambda exs, tok: _token_counts(tok, [ex["context"] for ex in exs]),
    "question_length": lambda exs, tok: [float(len(ex["question"])) for ex in exs],
    "question_tokens": lambda exs, tok: _token_counts(tok, [ex["question"] for ex in exs]),
    "answer_start": lambda exs, tok: [_answer_start(ex) for ex in exs],
    "answer_position": lambda exs, tok: [_answer_start(ex) / max(len(ex["context"]), 1) for ex in exs],
}
# Both texts of a pair count.
TEXT_DIFFICULTIES: dict[str, Callable[[Sequence[Mapping[str, Any]], Any], list[float]]] = {
    "text_length": lambda exs, tok: [float(sum(len(t) for t in ex["texts"])) for ex in exs],
    "text_tokens": lambda exs, tok: _text_tokens(exs, tok),
}
EXPENSIVE = ("bm25", "loss")


def bm25_difficulty(examples: Sequence[Mapping[str, Any]], tokenizer_name: str) -> list[float]:
    """Minus the BM25 score of each question's own context, among the training set's distinct contexts:
    a question that shares few (rare) words with its passage is hard to ground. The project's BM25
    (``retrievals``, rank-bm25's Okapi) over ``tokenizer_name`` tokens (``retriever.tokenizer.name`` values)."""
    from retrievals import BM25Retriever, Passage

    contexts = list(dict.fromkeys(ex["context"] for ex in examples))
    position = {text: i for i, text in enumerate(contexts)}
    retriever = BM25Retriever(tokenizer=tokenizer_name, index_title=False, engine="numpy")
    retriever.index([Passage(id=str(i), text=text) for i, text in enumerate(contexts)])
    token_lists = retriever.tokenizer.tokenize([ex["question"] for ex in examples])
    return [-float(retriever.get_scores(tokens)[position[ex["context"]]]) for tokens, ex in
            zip(token_lists, examples, strict=True)]  # fmt: skip


def file_identity(path: str, key: str = "datamodule.curriculum.teacher_ckpt") -> dict[str, Any]:
    """What changes when a checkpoint file is replaced: its resolved path, size and modification time
    (a missing file is a clear error naming ``key`` and the checkpoints nearby)."""
    from models.safe_loading import existing_checkpoint

    stat = os.stat(existing_checkpoint(path, key=key))
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cached_scores(cache_dir: str | None, key: Mapping[str, Any], compute: Callable[[], list[float]]) -> list[float]:
    """``compute()`` once per ``key`` (the data, tokenizer, difficulty and its inputs), kept as JSON under
    ``cache_dir/difficulty`` (atomic writes: a crash leaves no half file; concurrent runs compute it once)."""
    if cache_dir is None:
        return compute()
    digest = hashlib.sha256(json.dumps({"v": CACHE_VERSION, **key}, sort_keys=True, default=str).encode()).hexdigest()
    path = Path(cache_dir) / "difficulty" / f"{key.get('difficulty', 'scores')}-{digest[:20]}.json"

    def load() -> list[float]:
        scores = json.loads(path.read_text(encoding="utf-8"))
        log.info("difficulty %s: %d cached scores from %s", key.get("difficulty"), len(scores), path)
        return scores

    def build() -> list[float]:
        scores = compute()
        write_json(path, scores)
        return scores

    return build_once(path, path.is_file, build, load)


def data_fingerprint(examples: Sequence[Mapping[str, Any]], tokenizer: Any) -> str:
    """A hash of the examples (as the datamodule holds them) and the tokenizer's vocabulary."""
    from models.safe_loading import tokenizer_fingerprint

    digest = hashlib.sha256(json.dumps(list(examples), sort_keys=True, ensure_ascii=False, default=str).encode())
    digest.update(tokenizer_fingerprint(tokenizer).encode())
    return digest.hexdigest()[:32]


# ----------------------------------------------------------------------------- a teacher's loss


def teacher_losses(spec: CurriculumSpec, module_class: type, tokenizer: Any, loader: Any) -> list[float]:
    """Per-sample loss of a previous run's model (``spec.teacher_ckpt``) over ``loader`` (in dataset order).

    The teacher is rebuilt from its run's ``backbone/`` config and the checkpoint's hyper-parameters, and
    its checkpoint checked like ``ckpt_path`` (weights only; the vocabulary must be this run's, since the
    features are this run's token ids). The module's ``per_sample_loss(batch)`` gives one loss per row.
    """
    import inspect

    import torch

    from models.backbone import pretrained_backbone
    from models.safe_loading import check_checkpoint, existing_checkpoint, load_checkpoint

    key = "datamodule.curriculum.teacher_ckpt"
    path = existing_checkpoint(str(spec.teacher_ckpt), key=key)
    backbone_dir = Path(path).parent.parent / "backbone"
    if not (backbone_dir / "config.json").is_file():
        from core.errors import DataFormatError

        raise DataFormatError(path, None, f"has no run directory around it ({backbone_dir}/config.json is missing)",
                              f"give a checkpoint inside a fit run's directory: {key}=<run dir>/checkpoints/<file>.ckpt")
    checkpoint = load_checkpoint(path)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    backbone = pretrained_backbone(str(backbone_dir), load_weights=False)
    backbone.tokenizer = tokenizer  # this run's token ids: check_checkpoint refuses another vocabulary
    accepted = inspect.signature(module_class).parameters
    kwargs = {k: v for k, v in hparams.items() if k in accepted and k not in ("backbone", "init_from")}
    module = module_class(backbone=backbone, **kwargs)
    check_checkpoint(path, module, tokenizer)
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    losses: list[float] = []
    with torch.inference_mode():
        for batch in loader:
            losses += module.per_sample_loss(batch).tolist()
    log.info("teacher %s: loss of %d training samples (mean %.3f)", path, len(losses), float(np.mean(losses)))
    return losses
