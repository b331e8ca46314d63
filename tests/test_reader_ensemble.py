"""task=ensemble over readers: hard and soft voting on hand-built predictions, then real reader runs scored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.errors import DataFormatError
from tasks.ensemble import run_ensemble, task_ensemble
from tasks.ensemble_readers import answered_file, vote
from tasks.runner import compose_config
from tests.conftest import read_json


def entry(text: str, probability: float, score: float) -> dict:
    return {"text": text, "probability": probability, "score": score, "start_logit": score / 2,
            "end_logit": score / 2, "offsets": [0, len(text)]}


RUN_A = ({"q": "서울", "r": "가"}, {"q": [entry("서울", 0.3, 5.0), entry("서울", 0.3, 4.5), entry("부산", 0.3, 3.0),
                                          entry("대구", 0.1, 4.0)],
                                    "r": [entry("가", 1.0, 1.0)]})
RUN_B = ({"q": "부산"}, {"q": [entry("부산", 0.5, 6.0), entry("서울", 0.45, 2.0), entry("", 0.05, 1.0)]})


def test_hard_voting_majority_then_summed_probability() -> None:
    answers, nbests = [RUN_A[0], RUN_B[0]], [RUN_A[1], RUN_B[1]]
    # one vote each: the tie goes to the larger summed probability, 서울 (0.6 + 0.45) over 부산 (0.3 + 0.5)
    predictions, ranked = vote(answers, nbests, [1.0, 1.0], "hard")
    assert predictions == {"q": "서울", "r": "가"}  # r: only run A answered it
    assert [c["text"] for c in ranked["q"][:2]] == ["서울", "부산"] and ranked["q"][0]["votes"] == 1.0
    assert ranked["q"][0]["probability"] == pytest.approx((0.6 + 0.45) / 2)
    assert vote(answers, nbests, [1.0, 3.0], "hard")[0]["q"] == "부산"  # the heavier run outvotes
    third = ({"q": "부산"}, None)  # no n-best file: hard voting needs only answers
    assert vote([*answers, third[0]], [*nbests, third[1]], [1.0, 1.0, 1.0], "hard")[0]["q"] == "부산"


def test_soft_voting_by_probability_or_by_logit() -> None:
    answers, nbests = [RUN_A[0], RUN_B[0]], [RUN_A[1], RUN_B[1]]
    by_probability, ranked = vote(answers, nbests, [1.0, 1.0], "soft", "probability")
    assert by_probability["q"] == "서울"
    values = {c["text"]: c["probability"] for c in ranked["q"]}
    assert values == pytest.approx({"서울": 0.525, "부산": 0.4, "대구": 0.05, "": 0.025})
    # logits: a run's best score of a text; a text a run did not list takes that run's lowest score
    by_logit, ranked = vote(answers, nbests, [1.0, 1.0], "soft", "logit")
    assert by_logit["q"] == "부산"
    values = {c["text"]: c["score"] for c in ranked["q"]}
    assert values == pytest.approx({"부산": 4.5, "서울": 3.5, "대구": 2.5, "": 2.0})
    assert vote(answers, nbests, [3.0, 1.0], "soft", "logit")[0]["q"] == "서울"  # (3*5 + 2) / 4 > (3*3 + 6) / 4
    with pytest.raises(ValueError, match="ensemble.voting='rank' is unknown"):
        vote(answers, nbests, [1.0, 1.0], "rank")


def write_run(directory: Path, answers: dict, nbest: dict | None) -> Path:
    directory.mkdir(parents=True)
    (directory / "predictions.json").write_text(json.dumps(answers, ensure_ascii=False), encoding="utf-8")
    if nbest is not None:
        (directory / "nbest_predictions.json").write_text(json.dumps(nbest, ensure_ascii=False), encoding="utf-8")
    return directory


def test_reader_runs_are_detected_scored_and_refused_when_mixed(fitted_run: Path, tmp_path: Path) -> None:
    # a real reader run, and a second one that answers the first question differently
    answers = read_json(fitted_run / "predictions.json")
    nbest = read_json(fitted_run / "nbest_predictions.json")
    second = tmp_path / "runs" / "second"
    shutil.copytree(fitted_run, second, ignore=shutil.ignore_patterns("checkpoints", "csv", "backbone"))
    first_id = next(iter(answers))
    changed = {**answers, first_id: "다른 답"}
    (second / "predictions.json").write_text(json.dumps(changed, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "ens"
    cfg = compose_config(["task=ensemble", f"ensemble.runs=[{fitted_run},{second}]", "ensemble.voting=hard",
                               "ensemble.weights=[2,1]"], out)
    metrics = task_ensemble(cfg, out)
    assert metrics["kind"] == "reader" and metrics["voting"] == "hard"
    assert read_json(out / "predictions.json") == answers  # the heavier run wins its disagreement
    # gold: the validation file of the first run's saved config, limited to the questions answered
    own = read_json(fitted_run / "metrics.json")
    assert metrics["examples"] == own["examples"] == len(answers)
    assert metrics["exact_match"] == pytest.approx(own["exact_match"])
    assert metrics["f1"] == pytest.approx(own["f1"])
    assert [r["exact_match"] for r in metrics["run_scores"]][0] == pytest.approx(own["exact_match"])
    # soft voting of the run with itself changes nothing; klue_mrc scores it too
    twin = tmp_path / "runs" / "twin"
    shutil.copytree(fitted_run, twin, ignore=shutil.ignore_patterns("checkpoints", "csv", "backbone"))
    cfg = compose_config(["task=ensemble", f"ensemble.runs=[{fitted_run},{twin}]", "metric=klue_mrc"],
                              tmp_path / "self")
    soft = task_ensemble(cfg, tmp_path / "self")
    top = {qid: entries[0]["text"] for qid, entries in nbest.items()}
    assert read_json(tmp_path / "self" / "predictions.json") == top == answers
    assert soft["metric"] == "klue_mrc" and {"exact_match", "rouge_w"} <= set(soft)

    no_nbest = write_run(tmp_path / "bare" / "a", answers, None)
    with pytest.raises(FileNotFoundError, match="ensemble.voting=soft needs"):
        run_ensemble({"runs": [str(no_nbest), str(second)]}, tmp_path / "bare")
    classifier = tmp_path / "mixed" / "cls"
    classifier.mkdir(parents=True)
    (classifier / "predictions.json").write_text(json.dumps([{"id": "x", "label": "a", "probabilities": {"a": 1}}]))
    with pytest.raises(DataFormatError, match="not a reader's predictions"):
        run_ensemble({"runs": [str(second), str(classifier)]}, tmp_path / "mixed")


@pytest.mark.parametrize(
    ("task", "n_folds", "filename", "side"),
    [
        ("fit", "null", "predictions.json", "validation"),
        ("fit", "null", "test_predictions.json", "test"),
        ("fit", "5", "predictions.json", "train"),  # a K-fold run validates on its held-out part of train_file
        ("predict", "null", "predictions.json", "test"),
        ("odqa", "null", "predictions.json", "test"),
    ],
)
def test_gold_is_the_file_the_run_answered(tmp_path: Path, task: str, n_folds: str, filename: str, side: str) -> None:
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(
        f"task: {task}\ndatamodule:\n  train_file: tr.json\n  validation_file: va.json\n  test_file: te.json\n"
        f"  n_folds: {n_folds}\n  {side}_split: chosen\n", encoding="utf-8")
    assert answered_file(tmp_path, filename) == ({"train": "tr.json", "validation": "va.json", "test": "te.json"}[side],
                                                 "chosen", None)
