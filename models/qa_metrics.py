"""KorQuAD 1.0 exact-match / character-level F1, as a plain function and as a DDP-safe torchmetrics Metric.

Source of the formulas: the official KorQuAD 1.0 evaluation script by LG CNS
(``KorQuAD_v1.0_evaluate.py``, distributed from https://korquad.github.io/KorQuad%201.0/; itself derived from the
SQuAD v1.1 script https://rajpurkar.github.io/SQuAD-explorer/). The copy read while writing this module is
``evaluate_v1_0.py`` in github.com/monologg/KoBERT-KorQuAD (commit 389760463ccdbdc9715ed4d4bfd5b4fe0ea98b4d),
whose scoring functions are identical to the other public copies of the official script.

Behaviour is kept identical to the official script, quirks included, because leaderboard numbers are computed
with it:

* ``remove_`` turns only ' " 《 》 < > 〈 〉 ( ) ‘ ’ into spaces; every other ASCII punctuation character
  (``string.punctuation``) is deleted *without* a space, and non-ASCII punctuation that is not in that list
  (“ ” 「 」 · … 、 etc.) is kept and therefore counts in EM and F1.
* F1 is over characters, and whitespace is ignored: "해리  포터" vs "해리포터" has F1 1.0 but EM 0.
* If prediction and gold both normalise to "" the example gets EM 1 but F1 0 (F1 returns 0 whenever there is no
  common character, before any division, so F1 itself can never divide by zero).
* An empty prediction scores F1 0 and EM 0 (unless the gold normalises to "").
* A question whose id is missing from ``predictions`` counts in the denominator with score 0 and a message is
  printed to stderr.

Deviations (both are crashes in the official script, never scores):

* ``evaluate`` on a dataset with no questions returns 0.0 for both keys; the official script raises
  ZeroDivisionError (``100.0 * exact_match / total`` with ``total == 0``).
* ``metric_max_over_ground_truths`` with no gold answers raises ValueError with an explicit message; the official
  script raises the bare ValueError of ``max([])``.
"""

from __future__ import annotations

import re
import string
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "SquadScores",
    "evaluate",
    "exact_match_score",
    "f1_score",
    "metric_max_over_ground_truths",
    "normalize_answer",
]

# Characters the official ``remove_`` replaces by a space (one re.sub per character there, same effect).
_REMOVE_CHARS = "'\"《》<>〈〉()‘’"
_REMOVE_RE = re.compile("[" + re.escape(_REMOVE_CHARS) + "]")
_PUNCTUATION = frozenset(string.punctuation)

_Score = TypeVar("_Score", bool, float)


def normalize_answer(s: str) -> str:
    """Official KorQuAD 1.0 normalisation: remove_ -> lower -> drop ASCII punctuation -> collapse whitespace.

    The order matters (e.g. ``(`` becomes a space and so splits words, while ``,`` just disappears), which is why
    this mirrors the official composition ``white_space_fix(remove_punc(lower(remove_(s))))`` exactly.
    """
    text = _REMOVE_RE.sub(" ", s)
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    return " ".join(text.split())


def _chars(s: str) -> list[str]:
    """Characters of the whitespace tokens of the normalised string (the official ``*_Char`` lists)."""
    return [ch for tok in normalize_answer(s).split() for ch in tok]


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    """True when both strings normalise to the same text (bool, as in the official script)."""
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction: str, ground_truth: str) -> float:
    """Character-level F1 of the official script; 0.0 when no character is shared (covers empty strings)."""
    prediction_chars = _chars(prediction)
    ground_truth_chars = _chars(ground_truth)
    common = Counter(prediction_chars) & Counter(ground_truth_chars)
    num_same = sum(common.values())
    if num_same == 0:
        # Returned before dividing, so an empty prediction or an empty normalised gold never divides by zero.
        return 0.0
    precision = 1.0 * num_same / len(prediction_chars)
    recall = 1.0 * num_same / len(ground_truth_chars)
    return (2 * precision * recall) / (precision + recall)


def metric_max_over_ground_truths(
    metric_fn: Callable[[str, str], _Score], prediction: str, ground_truths: Iterable[str]
) -> _Score:
    """Best score over all gold answers, since any annotated answer is acceptable."""
    scores = [metric_fn(prediction, ground_truth) for ground_truth in ground_truths]
    if not scores:
        raise ValueError("metric_max_over_ground_truths needs at least one gold answer (got none).")
    return max(scores)


def evaluate(dataset: Sequence[Mapping[str, Any]], predictions: Mapping[str, str]) -> dict[str, float]:
    """Official KorQuAD 1.0 ``evaluate``: EM and F1 on the 0-100 scale over every question of ``dataset``.

    ``dataset`` is the ``"data"`` list of a SQuAD-format JSON file (articles -> paragraphs -> qas); ``predictions``
    maps question id to answer text. Unanswered questions score 0 but still count. An empty dataset returns 0.0
    (the official script divides by zero there).
    """
    f1 = 0.0
    exact_match = 0
    total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    message = "Unanswered question " + qa["id"] + " will receive score 0."
                    print(message, file=sys.stderr)
                    continue
                ground_truths = [answer["text"] for answer in qa["answers"]]
                prediction = predictions[qa["id"]]
                exact_match += metric_max_over_ground_truths(exact_match_score, prediction, ground_truths)
                f1 += metric_max_over_ground_truths(f1_score, prediction, ground_truths)
    if total == 0:
        return {"exact_match": 0.0, "f1": 0.0}
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


class SquadScores(Metric):
    """KorQuAD 1.0 EM/F1 (0-100) accumulated as sums so the reader's scores are synced across DDP processes.

    States are float64 sums (reduced with ``sum``), so ``compute`` equals :func:`evaluate` on the same examples
    up to float rounding. A ``None`` prediction means "unanswered": it counts in the denominator with score 0,
    exactly like a question missing from ``predictions`` in :func:`evaluate`. ``compute`` returns 0.0 (not NaN)
    when nothing was seen, e.g. during Lightning's sanity check.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 100.0

    exact_match_sum: Tensor
    f1_sum: Tensor
    total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # float64: F1 sums of tens of thousands of fractions must not drift from the official float results.
        self.add_state(
            "exact_match_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("f1_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str | None], gold_answers: Sequence[Sequence[str]]) -> None:
        """Score a batch: ``predictions[i]`` against every string in ``gold_answers[i]`` (max over golds)."""
        if isinstance(predictions, str) or isinstance(gold_answers, str):
            raise TypeError("predictions and gold_answers must be sequences, not a single string.")
        if len(predictions) != len(gold_answers):
            raise ValueError(
                f"Got {len(predictions)} predictions but {len(gold_answers)} gold answer lists; they must match."
            )
        em = 0.0
        f1 = 0.0
        for prediction, golds in zip(predictions, gold_answers, strict=True):
            if isinstance(golds, str):
                raise TypeError("Each gold_answers item must be a list of strings, not a string.")
            if prediction is None:
                continue
            em += float(metric_max_over_ground_truths(exact_match_score, prediction, golds))
            f1 += metric_max_over_ground_truths(f1_score, prediction, golds)
        self.exact_match_sum += em
        self.f1_sum += f1
        self.total += len(predictions)

    def compute(self) -> dict[str, Tensor]:
        """EM and F1 on the 0-100 scale; 0.0 when ``total`` is 0 (sums are 0 then, so clamping is exact)."""
        denominator = self.total.clamp(min=1.0)
        return {
            "exact_match": 100.0 * self.exact_match_sum / denominator,
            "f1": 100.0 * self.f1_sum / denominator,
        }
