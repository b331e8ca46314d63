"""``datamodule.curriculum``: which difficulty score orders the training data, and how the order is paced.

Shared by the MRC and classification datamodules. The config is a mapping (``pacing``, ``difficulty``,
their settings) or the MRC slice's plain string (``datamodule.curriculum=none|length``); the older keys
``name`` (none | length) and ``key`` still work and map onto ``pacing`` (none | sorted) and ``difficulty``.

Difficulty scores are per example (larger = harder unless ``ascending: false``); a datamodule computes the
ones it knows (:data:`MRC_DIFFICULTIES`, :data:`TEXT_DIFFICULTIES`, ``loss`` for either) and spreads an
example's score over its features. Scores that cost something (BM25, a teacher model's loss) need a model or a
retriever: the datamodule asks an injected scorer for them (:class:`DifficultyRequest`; ``tasks/difficulty.py``
computes and caches them under ``cache_dir/difficulty``), so the data layer never builds a model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Sampler

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


@dataclass(frozen=True)
class DifficultyRequest:
    """What a datamodule hands an injected scorer for an expensive difficulty (``bm25``, ``loss``).

    ``examples`` are the training examples as the datamodule holds them; ``loader`` gives their features in
    dataset order, in evaluation batches (what a teacher scores); ``example_index`` maps each feature to its
    example when an example has several (MRC windows; None: one feature per example); ``settings`` are the
    feature settings that enter the cache key. The scorer returns one score per example.
    """

    spec: CurriculumSpec
    examples: Sequence[Mapping[str, Any]]
    tokenizer: Any
    loader: Any
    settings: Mapping[str, Any]
    cache_dir: str | None
    example_index: Sequence[int] | None = None


# (request) -> one score per example; tasks/difficulty.py provides it (a model or a retriever computes these)
DifficultyScorer = Callable[[DifficultyRequest], list[float]]


def expensive_scores(scorer: DifficultyScorer | None, request: DifficultyRequest) -> list[float]:
    """``scorer(request)``; without a scorer, an error saying how the scores are computed."""
    if scorer is None:
        raise ValueError(
            f"datamodule.curriculum.difficulty={request.spec.difficulty} is computed by the task step "
            "tasks/difficulty.py (a teacher model or BM25): run through python main.py, or call "
            "tasks.difficulty.attach_difficulty(datamodule) before setup()."
        )
    return scorer(request)
