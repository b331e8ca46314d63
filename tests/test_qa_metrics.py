"""Tests for models/qa_metrics.py: hand-worked KorQuAD cases plus agreement with a literal copy of the official script."""

from __future__ import annotations

import math
import random
import re
import string
import sys
from collections import Counter
from typing import Any

import pytest
import torch

from models.qa_metrics import (
    SquadScores,
    evaluate,
    exact_match_score,
    f1_score,
    metric_max_over_ground_truths,
    normalize_answer,
)

# --------------------------------------------------------------------------------------------------------------
# Independent reference: literal copy of the scoring functions of the official KorQuAD 1.0 evaluation script
# (LG CNS, KorQuAD_v1.0_evaluate.py, https://korquad.github.io/KorQuad%201.0/), as found in
# github.com/monologg/KoBERT-KorQuAD/blob/389760463ccdbdc9715ed4d4bfd5b4fe0ea98b4d/evaluate_v1_0.py.
# Only changes: names prefixed with _official_, "\(" / "\)" written as raw strings (same regex, no invalid-escape
# warning), quote style and line wrapping from ruff format. Variable names such as prediction_Char are kept as in
# the original. Do not "fix" this code: it is the oracle.
# --------------------------------------------------------------------------------------------------------------


def _official_normalize_answer(s):
    def remove_(text):
        """불필요한 기호 제거"""
        text = re.sub("'", " ", text)
        text = re.sub('"', " ", text)
        text = re.sub("《", " ", text)
        text = re.sub("》", " ", text)
        text = re.sub("<", " ", text)
        text = re.sub(">", " ", text)
        text = re.sub("〈", " ", text)
        text = re.sub("〉", " ", text)
        text = re.sub(r"\(", " ", text)
        text = re.sub(r"\)", " ", text)
        text = re.sub("‘", " ", text)
        text = re.sub("’", " ", text)
        return text

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_punc(lower(remove_(s))))


def _official_f1_score(prediction, ground_truth):
    prediction_tokens = _official_normalize_answer(prediction).split()
    ground_truth_tokens = _official_normalize_answer(ground_truth).split()

    # F1 by character
    prediction_Char = []
    for tok in prediction_tokens:
        now = [a for a in tok]
        prediction_Char.extend(now)

    ground_truth_Char = []
    for tok in ground_truth_tokens:
        now = [a for a in tok]
        ground_truth_Char.extend(now)

    common = Counter(prediction_Char) & Counter(ground_truth_Char)
    num_same = sum(common.values())
    if num_same == 0:
        return 0

    precision = 1.0 * num_same / len(prediction_Char)
    recall = 1.0 * num_same / len(ground_truth_Char)
    f1 = (2 * precision * recall) / (precision + recall)

    return f1


def _official_exact_match_score(prediction, ground_truth):
    return _official_normalize_answer(prediction) == _official_normalize_answer(ground_truth)


def _official_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)


def _official_evaluate(dataset, predictions):
    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    message = "Unanswered question " + qa["id"] + " will receive score 0."
                    print(message, file=sys.stderr)
                    continue
                ground_truths = list(map(lambda x: x["text"], qa["answers"]))
                prediction = predictions[qa["id"]]
                exact_match += _official_metric_max_over_ground_truths(
                    _official_exact_match_score, prediction, ground_truths
                )
                f1 += _official_metric_max_over_ground_truths(_official_f1_score, prediction, ground_truths)

    exact_match = 100.0 * exact_match / total
    f1 = 100.0 * f1 / total
    return {"exact_match": exact_match, "f1": f1}


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def _dataset(items: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    """SQuAD-format "data" list with one article/paragraph holding questions q0, q1, ... with the given golds."""
    qas = [
        {"id": f"q{i}", "answers": [{"text": g, "answer_start": 0} for g in golds]}
        for i, (_, golds) in enumerate(items)
    ]
    return [{"title": "t", "paragraphs": [{"context": "c", "qas": qas}]}]


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------------------------------------------
# Hand-worked cases
# --------------------------------------------------------------------------------------------------------------


def test_postposition_suffix_f1_by_hand() -> None:
    # pred chars 1 9 8 7 년 에 (6), gold chars 1 9 8 7 년 (5), common 5 -> P = 5/6, R = 5/5, F1 = 10/11.
    assert f1_score("1987년에", "1987년") == pytest.approx(_f1(5 / 6, 1.0))
    assert f1_score("1987년에", "1987년") == pytest.approx(10 / 11)
    assert exact_match_score("1987년에", "1987년") is False


def test_repeated_characters_use_multiset_overlap() -> None:
    # pred {가:2, 나:1}, gold {가:1, 나:2}: common = min counts = 1 + 1 = 2 -> P = R = 2/3, F1 = 2/3.
    assert f1_score("가가나", "가나나") == pytest.approx(2 / 3)


def test_quote_and_bracket_normalisation() -> None:
    assert normalize_answer("《해리 포터》") == "해리 포터"
    assert exact_match_score("《해리 포터》", "해리 포터")
    assert f1_score("《해리 포터》", "해리 포터") == pytest.approx(1.0)
    assert exact_match_score("'훈민정음'", "훈민정음")
    assert exact_match_score("‘훈민정음’", "〈훈민정음〉")
    assert exact_match_score('"세종대왕"', "<세종대왕>")
    # remove_ turns ( ) into spaces, so "(주)삼성" -> " 주 삼성" -> "주 삼성".
    assert normalize_answer("(주)삼성") == "주 삼성"
    assert exact_match_score("(주)삼성", "주 삼성")


def test_ascii_punctuation_deleted_without_space_and_lowercased() -> None:
    assert normalize_answer("세종대왕.") == "세종대왕"
    assert normalize_answer("1,000원") == "1000원"
    assert normalize_answer("e-mail") == "email"
    assert exact_match_score("KorQuAD", "korquad")
    assert normalize_answer("  해리 \t\n 포터\u3000") == "해리 포터"


def test_non_ascii_double_quotes_are_kept_official_quirk() -> None:
    # “ ” are neither in remove_ nor in string.punctuation: pred chars “훈민정음” (6), gold 훈민정음 (4),
    # common 4 -> P = 4/6, R = 1, F1 = 0.8.
    assert normalize_answer("“훈민정음”") == "“훈민정음”"
    assert exact_match_score("“훈민정음”", "훈민정음") is False
    assert f1_score("“훈민정음”", "훈민정음") == pytest.approx(0.8)


def test_whitespace_ignored_by_f1_but_not_by_em() -> None:
    assert f1_score("해리 포터", "해리포터") == pytest.approx(1.0)
    assert exact_match_score("해리 포터", "해리포터") is False


def test_max_over_multiple_gold_answers() -> None:
    # pred chars 해리포터와마법사의돌 (10).
    # gold "해리 포터": 4 chars, common 4 -> P 4/10, R 1 -> F1 = 4/7.
    # gold "마법사의 돌": 5 chars, common 5 -> P 5/10, R 1 -> F1 = 2/3  (the max).
    pred = "해리 포터와 마법사의 돌"
    golds = ["해리 포터", "마법사의 돌"]
    assert f1_score(pred, golds[0]) == pytest.approx(4 / 7)
    assert f1_score(pred, golds[1]) == pytest.approx(2 / 3)
    assert metric_max_over_ground_truths(f1_score, pred, golds) == pytest.approx(2 / 3)
    assert metric_max_over_ground_truths(exact_match_score, "《마법사의 돌》", golds) is True


def test_empty_prediction_and_empty_gold() -> None:
    assert f1_score("", "1987년") == 0.0
    assert exact_match_score("", "1987년") is False
    assert f1_score("1987년", "") == 0.0
    # Both normalise to "": official gives EM 1 but F1 0 (no common character, returns before dividing).
    assert exact_match_score("()", "《》") is True
    assert f1_score("()", "《》") == 0.0
    assert _official_f1_score("()", "《》") == 0


def test_no_gold_answers_raises() -> None:
    with pytest.raises(ValueError):
        metric_max_over_ground_truths(f1_score, "x", [])
    with pytest.raises(ValueError):
        _official_metric_max_over_ground_truths(_official_f1_score, "x", [])


def test_evaluate_by_hand_with_unanswered(capsys: pytest.CaptureFixture[str]) -> None:
    items = [("1987년에", ["1987년"]), ("《해리 포터》", ["해리 포터", "해리"]), ("", ["세종"])]
    dataset = _dataset(items)
    predictions = {"q0": "1987년에", "q1": "《해리 포터》"}  # q2 unanswered
    result = evaluate(dataset, predictions)
    assert set(result) == {"exact_match", "f1"}
    assert result["exact_match"] == pytest.approx(100.0 * 1 / 3)
    assert result["f1"] == pytest.approx(100.0 * (10 / 11 + 1.0) / 3)
    assert "Unanswered question q2 will receive score 0." in capsys.readouterr().err
    assert result == pytest.approx(_official_evaluate(dataset, predictions), abs=1e-9)


def test_evaluate_empty_dataset_returns_zero_instead_of_dividing_by_zero() -> None:
    assert evaluate([], {}) == {"exact_match": 0.0, "f1": 0.0}
    with pytest.raises(ZeroDivisionError):
        _official_evaluate([], {})


# --------------------------------------------------------------------------------------------------------------
# Agreement with the official script on random strings
# --------------------------------------------------------------------------------------------------------------

_ALPHABET = (
    list("가나다라마바사아자차카타파하해리포터세종대왕년월일의에는은를")
    + list("abcXYZ019")
    + list(string.punctuation)
    + list("《》〈〉‘’“”「」·…、")
    + [" ", " ", " ", "\t", "\n", "\u3000", "\xa0"]
)


def _random_string(rng: random.Random, max_len: int = 12) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, max_len)))


def _mutate(rng: random.Random, s: str) -> str:
    """Gold derived from a prediction (wrap, trim, extend) so many pairs overlap or match after normalisation."""
    choice = rng.randrange(4)
    if choice == 0:
        return (
            rng.choice(["《", "'", "(", "〈", "‘", '"', "<"])
            + s
            + rng.choice(["》", "'", ")", "〉", "’", '"', ">"])
        )
    if choice == 1 and s:
        return s[rng.randrange(len(s)) :]
    if choice == 2:
        return s.upper() + rng.choice(["", ".", "에", " 년", "!"])
    return _random_string(rng)


def _random_pairs(n: int, seed: int) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        pred = _random_string(rng)
        golds = [_mutate(rng, pred) for _ in range(rng.randint(1, 3))]
        pairs.append((pred, golds))
    return pairs


def test_random_strings_agree_with_official() -> None:
    pairs = _random_pairs(200, seed=20240521)
    n_em = n_f1_partial = 0
    for pred, golds in pairs:
        assert normalize_answer(pred) == _official_normalize_answer(pred)
        for gold in golds:
            assert normalize_answer(gold) == _official_normalize_answer(gold)
            assert exact_match_score(pred, gold) == _official_exact_match_score(pred, gold)
            assert math.isclose(
                f1_score(pred, gold), _official_f1_score(pred, gold), rel_tol=0.0, abs_tol=1e-9
            )
        em = metric_max_over_ground_truths(exact_match_score, pred, golds)
        f1 = metric_max_over_ground_truths(f1_score, pred, golds)
        assert em == _official_metric_max_over_ground_truths(_official_exact_match_score, pred, golds)
        assert math.isclose(
            f1, _official_metric_max_over_ground_truths(_official_f1_score, pred, golds), abs_tol=1e-9
        )
        n_em += bool(em)
        n_f1_partial += 0.0 < f1 < 1.0
    # The generator must exercise both exact matches and partial overlaps, or the agreement check is vacuous.
    assert n_em >= 20
    assert n_f1_partial >= 20


def test_evaluate_agrees_with_official_on_random_dataset(capsys: pytest.CaptureFixture[str]) -> None:
    items = _random_pairs(40, seed=7)
    dataset = _dataset(items)
    predictions = {f"q{i}": pred for i, (pred, _) in enumerate(items) if i % 7 != 3}  # some unanswered
    ours = evaluate(dataset, predictions)
    official = _official_evaluate(dataset, predictions)
    assert ours.keys() == official.keys()
    for key in ours:
        assert math.isclose(ours[key], official[key], abs_tol=1e-9)
    err = capsys.readouterr().err
    assert err.count("Unanswered question") == 2 * sum(1 for i in range(len(items)) if i % 7 == 3)


# --------------------------------------------------------------------------------------------------------------
# SquadScores (torchmetrics)
# --------------------------------------------------------------------------------------------------------------


def test_squad_scores_equals_evaluate() -> None:
    items = _random_pairs(60, seed=11) + [("1987년에", ["1987년"]), ("《해리 포터》", ["해리 포터"])]
    predictions = {f"q{i}": pred for i, (pred, _) in enumerate(items)}
    expected = evaluate(_dataset(items), predictions)

    metric = SquadScores()
    for start in range(0, len(items), 16):  # several batches
        batch = items[start : start + 16]
        metric.update([p for p, _ in batch], [g for _, g in batch])
    result = metric.compute()
    assert set(result) == {"exact_match", "f1"}
    assert isinstance(result["f1"], torch.Tensor)
    assert result["exact_match"].item() == pytest.approx(expected["exact_match"], abs=1e-9)
    assert result["f1"].item() == pytest.approx(expected["f1"], abs=1e-9)


def test_squad_scores_none_prediction_is_unanswered() -> None:
    items = [("1987년에", ["1987년"]), ("《해리 포터》", ["해리 포터"]), ("", ["세종"])]
    metric = SquadScores()
    metric.update(["1987년에", "《해리 포터》", None], [g for _, g in items])
    expected = evaluate(_dataset(items), {"q0": "1987년에", "q1": "《해리 포터》"})
    result = metric.compute()
    assert result["exact_match"].item() == pytest.approx(expected["exact_match"])
    assert result["f1"].item() == pytest.approx(expected["f1"])


def test_squad_scores_without_updates_is_zero() -> None:
    metric = SquadScores()
    with pytest.warns(UserWarning):  # torchmetrics warns that compute ran before update
        result = metric.compute()
    assert result["exact_match"].item() == 0.0
    assert result["f1"].item() == 0.0
    assert not torch.isnan(result["f1"])


def test_squad_scores_empty_batch_is_zero() -> None:
    metric = SquadScores()
    metric.update([], [])
    result = metric.compute()
    assert result["exact_match"].item() == 0.0
    assert result["f1"].item() == 0.0


def test_squad_scores_merge_state_like_ddp() -> None:
    items = _random_pairs(50, seed=3) + [("1987년에", ["1987년"])]
    rank0, rank1 = items[::2], items[1::2]
    full = SquadScores()
    full.update([p for p, _ in items], [g for _, g in items])

    a, b = SquadScores(), SquadScores()
    a.update([p for p, _ in rank0], [g for _, g in rank0])
    b.update([p for p, _ in rank1], [g for _, g in rank1])
    a.merge_state(b)
    merged = a.compute()
    expected = full.compute()
    for key in ("exact_match", "f1"):
        assert merged[key].item() == pytest.approx(expected[key].item(), abs=1e-9)

    # Same thing done by hand, as the "sum" dist_reduce_fx does across processes.
    c, d = SquadScores(), SquadScores()
    c.update([p for p, _ in rank0], [g for _, g in rank0])
    d.update([p for p, _ in rank1], [g for _, g in rank1])
    summed = SquadScores()
    summed.update([], [])
    for name in ("exact_match_sum", "f1_sum", "total"):
        setattr(summed, name, getattr(c, name) + getattr(d, name))
    for key in ("exact_match", "f1"):
        assert summed.compute()[key].item() == pytest.approx(expected[key].item(), abs=1e-9)


def test_squad_scores_flags_and_reset() -> None:
    metric = SquadScores()
    assert metric.higher_is_better is True
    assert metric.full_state_update is False
    metric.update(["해리 포터"], [["해리 포터"]])
    assert metric.compute()["exact_match"].item() == pytest.approx(100.0)
    metric.reset()
    metric.update(["x"], [["해리 포터"]])
    assert metric.compute()["exact_match"].item() == 0.0


def test_squad_scores_rejects_bad_input() -> None:
    metric = SquadScores()
    with pytest.raises(ValueError):
        metric.update(["a", "b"], [["a"]])
    with pytest.raises(TypeError):
        metric.update(["a"], ["a"])
    with pytest.raises(ValueError):
        metric.update(["a"], [[]])
