"""ROUGE-1/2/L F1 for Korean: rouge-score's scorer with a tokenizer that keeps Hangul.

rouge-score's default tokenizer lower-cases and replaces every character outside ``[a-z0-9]`` by a space,
so a Korean summary becomes no tokens at all and scores 0 against anything. The scorer itself (n-gram and
LCS F-measure, as ROUGE-1.5.5) is kept; only the tokenisation changes (``model.rouge.tokenizer``):

* ``whitespace``: NFC, lower-cased, punctuation replaced by spaces, split on whitespace (words with their
  particles: ``학교에서`` and ``학교가`` differ);
* ``kiwi``: kiwipiepy morphemes (``학교 + 에서``), punctuation left out: particles and endings count apart
  from their stems, as Korean summarisation contests score with a morphological analyser.

Scores are reported on a 0-100 scale, like the framework's EM/F1.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
TOKENIZERS = ("whitespace", "kiwi")
_NOT_WORD = re.compile(r"[^\w\s]|_")  # \w is Unicode-aware: Hangul, digits and Latin letters stay
# kiwipiepy's symbol tags: punctuation and brackets are left out; foreign words (SL), hanja (SH) and numbers (SN) stay
_PUNCTUATION_TAGS = {"SF", "SP", "SS", "SSO", "SSC", "SE", "SO", "SW", "SB"}


class WhitespaceTokenizer:
    """Words of the text: rouge-score's default rule with a Unicode notion of a word character."""

    def tokenize(self, text: str) -> list[str]:
        return _NOT_WORD.sub(" ", unicodedata.normalize("NFC", text).lower()).split()


class KiwiTokenizer:
    """Morphemes from kiwipiepy's analyser (its model ships with the kiwipiepy_model package: offline)."""

    def tokenize(self, text: str) -> list[str]:
        tokens = _kiwi().tokenize(unicodedata.normalize("NFC", text).lower())
        return [t.form for t in tokens if t.tag not in _PUNCTUATION_TAGS]


@functools.lru_cache(maxsize=1)
def _kiwi() -> Any:
    """One analyser per process: loading its model takes about a second."""
    from kiwipiepy import Kiwi

    return Kiwi(num_workers=1)  # one pair at a time: no thread pool


def rouge_tokenizer(name: str) -> WhitespaceTokenizer | KiwiTokenizer:
    if name == "whitespace":
        return WhitespaceTokenizer()
    if name == "kiwi":
        return KiwiTokenizer()
    raise ValueError(f"model.rouge.tokenizer={name!r} is unknown: choose one of {', '.join(TOKENIZERS)}.")


def rouge_scorer(tokenizer: str = "whitespace", rouge_types: Sequence[str] = ROUGE_TYPES) -> Any:
    """rouge-score's ``RougeScorer`` over the chosen Korean-aware tokenizer."""
    try:
        from rouge_score.rouge_scorer import RougeScorer
    except ImportError:
        raise ValueError("ROUGE needs the rouge-score package: pip install rouge-score (or pip install -e .).") from None
    unknown = [t for t in rouge_types if t not in ROUGE_TYPES]
    if unknown:
        raise ValueError(f"model.rouge.types: {unknown} unknown; choose from {list(ROUGE_TYPES)}.")
    return RougeScorer(list(rouge_types), tokenizer=rouge_tokenizer(tokenizer))


def rouge_f1(
    predictions: Sequence[str], references: Sequence[str], tokenizer: str = "whitespace"
) -> dict[str, float]:
    """Mean ROUGE F1 (0-100) of prediction/reference pairs; empty input scores 0."""
    metric = RougeF1(tokenizer)
    metric.update(predictions, references)
    return {name: float(value) for name, value in metric.compute().items()}


class RougeF1(Metric):
    """ROUGE F1 summed per pair and averaged at ``compute``: sums and a count, so processes sync under DDP."""

    full_state_update = False

    def __init__(self, tokenizer: str = "whitespace", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scorer = rouge_scorer(tokenizer)
        for name in ROUGE_TYPES:
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pairs", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str], references: Sequence[str]) -> None:
        for prediction, reference in zip(predictions, references, strict=True):
            for name, score in self.scorer.score(reference, prediction).items():
                setattr(self, name, getattr(self, name) + score.fmeasure)
        self.pairs += len(predictions)

    def compute(self) -> dict[str, torch.Tensor]:
        count = self.pairs.clamp(min=1).to(torch.float64)
        return {name: 100.0 * getattr(self, name) / count for name in ROUGE_TYPES}
