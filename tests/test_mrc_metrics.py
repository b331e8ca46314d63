"""metric=klue_mrc (EM, KLUE's ROUGE-W) and metric=squad beside KorQuAD's, by question type, through task=score."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from models.mrc_metrics import (
    klue_mrc_example,
    normalize_klue_mrc,
    rouge_w,
    score_predictions,
    squad_scores,
)
from tasks.runner import compose_config
from tasks.score import task_score


def lccs_length(a: str, b: str) -> int:
    """Longest common contiguous substring by dynamic programming: an independent check of difflib's answer."""
    best, row = 0, [0] * (len(b) + 1)
    for ca in a:
        previous, row = row, [0] * (len(b) + 1)
        for j, cb in enumerate(b, start=1):
            if ca == cb:
                row[j] = previous[j - 1] + 1
                best = max(best, row[j])
    return best


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("서울특별시", "서울", 2 * 0.4 * 1.0 / 1.4),  # LCCS 2: precision 2/5, recall 2/2
        ("1987년", "1987", 2 * 0.8 * 1.0 / 1.8),  # precision 4/5, recall 1
        ("강남구 서울", "서울 강남구", 0.5),  # same characters, but the longest common run is "강남구": 3/6 and 3/6
        ("가나다", "라마", 0.0),
        ("", "", 1.0),  # an unanswerable question answered with nothing
        ("답", "", 0.0),  # ... or with a span
        ("", "서울", 0.0),
    ],
)
def test_rouge_w_hand_worked_cases(prediction: str, gold: str, expected: float) -> None:
    assert rouge_w(prediction, gold) == pytest.approx(expected)


def test_rouge_w_is_the_f1_of_the_longest_common_substring() -> None:
    rng = random.Random(0)
    for _ in range(300):
        a = "".join(rng.choice("가나다라 1") for _ in range(rng.randint(1, 12)))
        b = "".join(rng.choice("가나다라 1") for _ in range(rng.randint(1, 12)))
        n = lccs_length(a, b)
        expected = 0.0 if n == 0 else 2 * (n / len(a)) * (n / len(b)) / (n / len(a) + n / len(b))
        assert rouge_w(a, b) == pytest.approx(expected), (a, b)


def test_klue_normalisation_and_em_differ_from_korquad() -> None:
    # KLUE's quote pattern never matches, so 《》 stay and count; KorQuAD turns them into spaces
    assert normalize_klue_mrc("《토지》, The Land!") == "《토지》 the land"
    assert klue_mrc_example("《토지》", ["토지"]) == (0.0, pytest.approx(2 * 0.5 * 1.0 / 1.5))
    examples = [{"id": "q", "answers": [{"text": "토지", "answer_start": 0}]}]
    assert score_predictions(examples, {"q": "《토지》"}, "korquad")["exact_match"] == 100.0
    # the best gold answer counts; an unanswerable question has the empty gold
    assert klue_mrc_example("서울", ["부산", "서울"]) == (1.0, 1.0)
    assert klue_mrc_example("", []) == (1.0, 1.0)


def test_squad_is_whitespace_token_f1() -> None:
    golds = {"a": ["서울특별시"], "b": ["the 1987"], "c": ["조지 해리슨"]}
    predictions = {"a": "서울 특별시", "b": "1987", "c": "해리슨"}
    squad = squad_scores(golds, predictions)
    # a: no common token (F1 0, KorQuAD's character F1 would be 1); b: articles dropped, EM; c: 1 of 2 tokens
    assert squad["exact_match"] == pytest.approx(100 / 3)
    assert squad["f1"] == pytest.approx(100 * (0 + 1 + 2 * 1 * 0.5 / 1.5) / 3)
    korquad = score_predictions([{"id": "a", "answers": [{"text": "서울특별시", "answer_start": 0}]}],
                                {"a": "서울 특별시"}, "korquad")
    assert korquad["f1"] == 100.0


KLUE_RECORDS = {
    "version": "klue-mrc-like",
    "data": [{"title": "t", "paragraphs": [{"context": "서울은 한국의 수도이다. 부산은 항구 도시이다.", "qas": [
        {"guid": "q1", "question": "한국의 수도는?", "question_type": 1, "is_impossible": False,
         "answers": [{"text": "서울", "answer_start": 0}]},
        {"guid": "q2", "question": "항구 도시는?", "question_type": 2, "is_impossible": False,
         "answers": [{"text": "부산", "answer_start": 14}]},
        {"guid": "q3", "question": "일본의 수도는?", "question_type": 3, "is_impossible": True,
         "answers": [{"text": "서울", "answer_start": 0}]},  # KLUE's plausible answer: not gold
        {"guid": "q4", "question": "중국의 수도는?", "question_type": 3, "is_impossible": True, "answers": []},
    ]}]}],
}


def test_task_score_klue_mrc_and_squad_by_question_type(tmp_path: Path) -> None:
    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps(KLUE_RECORDS, ensure_ascii=False), encoding="utf-8")
    preds = tmp_path / "predictions.json"
    preds.write_text(json.dumps({"q1": "서울은", "q2": "부산", "q3": "", "q4": "서울"}, ensure_ascii=False))
    base = [f"predictions={preds}", f"datamodule.validation_file={gold}", "task=score"]
    klue = task_score(compose_config([*base, "metric=klue_mrc"], tmp_path / "k"), tmp_path / "k")
    assert klue["metric"] == "klue_mrc" and klue["examples"] == 4
    assert klue["exact_match"] == pytest.approx(50.0)  # q2 and q3 (nothing for an unanswerable question)
    assert klue["rouge_w"] == pytest.approx(100 * (0.8 + 1 + 1 + 0) / 4)  # q1: "서울은" vs "서울" = 2*(2/3)/(5/3)
    by_type = klue["by_question_type"]
    assert set(by_type) == {"1", "2", "3"} and by_type["3"]["examples"] == 2
    assert by_type["3"]["exact_match"] == 50.0 and by_type["2"]["rouge_w"] == 100.0
    squad = task_score(compose_config([*base, "metric=squad"], tmp_path / "s"), tmp_path / "s")
    assert squad["exact_match"] == pytest.approx(50.0) and squad["f1"] == pytest.approx(50.0)
    assert set(squad["by_question_type"]) == {"1", "2", "3"}
    korquad = task_score(compose_config(base, tmp_path / "q"), tmp_path / "q")
    assert korquad["metric"] == "korquad" and "rouge_w" not in korquad
    with pytest.raises(ValueError, match="metric='rouge' is unknown"):
        task_score(compose_config([*base, "metric=rouge"], tmp_path / "x"), tmp_path / "x")


def test_fit_with_metric_klue_mrc_adds_its_scores_beside_korquads(fitted_run: Path) -> None:
    """The session's tiny fit ran with metric=klue_mrc: metrics.json keeps KorQuAD's EM/F1 (what training logs)
    and adds KLUE's EM and ROUGE-W of predictions.json, recomputed here per question from the gold file."""
    from datamodules.mrc_formats import load_mrc_examples
    from tests.conftest import SAMPLE, read_json

    metrics = read_json(fitted_run / "metrics.json")
    predictions = read_json(fitted_run / "predictions.json")
    klue = metrics["klue_mrc"]
    assert klue["metric"] == "klue_mrc" and klue["examples"] == len(predictions) == metrics["examples"] == 12
    gold = {ex["id"]: [a["text"] for a in ex["answers"]] for ex in load_mrc_examples(SAMPLE / "validation.json")}
    per_question = [klue_mrc_example(text, gold[qid]) for qid, text in predictions.items()]
    assert klue["exact_match"] == pytest.approx(100 * sum(em for em, _ in per_question) / 12)
    assert klue["rouge_w"] == pytest.approx(100 * sum(rw for _, rw in per_question) / 12)
    assert {"exact_match", "f1"} <= set(metrics) and "rouge_w" not in metrics


def test_a_mistyped_metric_fails_before_training(tmp_path: Path) -> None:
    from tests.conftest import TINY_RUN, run_main

    result = run_main("+experiment=mrc_curriculum", *TINY_RUN, "metric=klue", run_dir=tmp_path / "run", check=False)
    assert result.returncode != 0 and "metric='klue' is unknown" in result.stderr + result.stdout
    assert not (tmp_path / "run" / "checkpoints").exists()
