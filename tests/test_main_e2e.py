"""End to end through main.py: fit, validate, predict, score, resume, reload, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamodules.mrc_formats import load_mrc_examples, to_squad_json
from models.qa_metrics import evaluate
from tests.conftest import SAMPLE, TINY_LOOP, TINY_RUN, read_json, run_main


def test_fit_writes_every_output(fitted_run: Path) -> None:
    metrics = read_json(fitted_run / "metrics.json")
    assert metrics["task"] == "fit"
    for key in ("exact_match", "f1", "train_samples_per_second"):
        assert isinstance(metrics[key], float), key
    assert 0.0 <= metrics["exact_match"] <= 100.0 and 0.0 <= metrics["f1"] <= 100.0
    assert metrics["train_samples_per_second"] > 0
    assert metrics["examples"] == 12

    predictions = read_json(fitted_run / "predictions.json")
    gold = load_mrc_examples(SAMPLE / "validation.json")[:12]
    assert set(predictions) == {ex["id"] for ex in gold}
    assert all(isinstance(text, str) for text in predictions.values())
    nbest = read_json(fitted_run / "nbest_predictions.json")
    assert set(nbest) == set(predictions)
    for qid, entries in nbest.items():
        assert entries and entries[0]["text"] == predictions[qid]
        assert abs(sum(e["probability"] for e in entries) - 1.0) < 1e-4
    # metrics.json is what the official script gives for predictions.json
    official = evaluate(to_squad_json(gold)["data"], predictions)
    assert metrics["exact_match"] == pytest.approx(official["exact_match"], abs=1e-4)
    assert metrics["f1"] == pytest.approx(official["f1"], abs=1e-4)

    assert (fitted_run / "checkpoints" / "last.ckpt").exists()
    assert Path(metrics["best_checkpoint"]).exists()
    assert (fitted_run / "backbone" / "tokenizer.json").exists()
    assert (fitted_run / "backbone" / "config.json").exists()
    assert (fitted_run / "csv" / "metrics.csv").exists()


def test_validate_predict_score_from_checkpoint(fitted_run: Path, tmp_path: Path) -> None:
    ckpt = fitted_run / "checkpoints" / "last.ckpt"
    reload = [*TINY_LOOP, "backbone=local", f"backbone.name_or_path={fitted_run / 'backbone'}"]

    validated = tmp_path / "validate"
    run_main("task=validate", f"ckpt_path={ckpt}", *reload, run_dir=validated, cache_dir=tmp_path / "cache")
    metrics = read_json(validated / "metrics.json")
    assert set(read_json(validated / "predictions.json")) == set(read_json(fitted_run / "predictions.json"))

    # predict needs no gold: strip the answers from the questions
    examples = load_mrc_examples(SAMPLE / "validation.json")[:12]
    questions = [{**ex, "answers": []} for ex in examples]
    test_file = tmp_path / "test.json"
    test_file.write_text(json.dumps(to_squad_json(questions), ensure_ascii=False), encoding="utf-8")
    predicted = tmp_path / "predict"
    run_main(
        "task=predict", f"ckpt_path={ckpt}", f"datamodule.test_file={test_file}", *reload,
        run_dir=predicted, cache_dir=tmp_path / "cache",
    )
    predictions = read_json(predicted / "predictions.json")
    assert predictions == read_json(validated / "predictions.json")

    scored = tmp_path / "score"
    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps(to_squad_json(examples), ensure_ascii=False), encoding="utf-8")
    run_main(
        "task=score", f"predictions={predicted / 'predictions.json'}", f"datamodule.validation_file={gold}",
        run_dir=scored,
    )
    score = read_json(scored / "metrics.json")
    assert score["exact_match"] == pytest.approx(metrics["exact_match"], abs=1e-6)
    assert score["f1"] == pytest.approx(metrics["f1"], abs=1e-6)


def test_resume_continues_from_last_checkpoint(fitted_run: Path, tmp_path: Path) -> None:
    first = read_json(fitted_run / "metrics.json")
    resumed = tmp_path / "resume"
    overrides = [o for o in TINY_RUN if not o.startswith("trainer.max_epochs")]
    run_main(
        "+experiment=mrc_curriculum", *overrides, "trainer.max_epochs=2",
        f"ckpt_path={fitted_run / 'checkpoints' / 'last.ckpt'}", run_dir=resumed, cache_dir=tmp_path / "cache",
    )
    assert read_json(resumed / "metrics.json")["global_step"] == 2 * first["global_step"]


def test_second_run_reuses_cached_features_and_tokenizer(fitted_run: Path, tmp_path: Path) -> None:
    cache = fitted_run.parent / "cache"
    before = sorted(p.name for p in (cache / "features").iterdir())
    assert len(before) >= 2  # train and validation features
    run_main("+experiment=mrc_curriculum", *TINY_RUN, run_dir=tmp_path / "again", cache_dir=cache)
    assert sorted(p.name for p in (cache / "features").iterdir()) == before
    assert len(list((cache / "tokenizers").iterdir())) == 1


def _bad_squad(tmp_path: Path, name: str, mutate) -> Path:
    data = to_squad_json(load_mrc_examples(SAMPLE / "train.json")[:4])
    mutate(data["data"][0]["paragraphs"][0])
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def _first_qa(paragraph: dict) -> dict:
    return paragraph["qas"][0]


BAD_INPUTS = {
    "truncated": None,
    "no_question": lambda p: _first_qa(p).pop("question"),
    "answer_not_at_offset": lambda p: _first_qa(p)["answers"][0].update(answer_start=1),
    "empty_context": lambda p: p.update(context=""),
    "wrong_schema": "schema",
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_training_file_gives_a_clear_error(case: str, tmp_path: Path) -> None:
    if case == "truncated":
        path = tmp_path / "truncated.json"
        path.write_text((SAMPLE / "train.json").read_text(encoding="utf-8")[:5000], encoding="utf-8")
    elif case == "wrong_schema":
        path = tmp_path / "wrong_schema.json"
        path.write_text(json.dumps({"rows": [{"sentence": "문장", "label": 1}]}), encoding="utf-8")
    else:
        path = _bad_squad(tmp_path, case, BAD_INPUTS[case])
    result = run_main(
        *TINY_RUN, f"datamodule.train_file={path}", run_dir=tmp_path / "run", cache_dir=tmp_path / "cache",
        check=False,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr and "fix" in result.stderr
    if case in ("no_question", "answer_not_at_offset", "empty_context"):
        first_id = load_mrc_examples(SAMPLE / "train.json")[0]["id"]
        assert first_id in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_score_rejects_a_predictions_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "preds.json"
    bad.write_text(json.dumps(["a", "b"]), encoding="utf-8")
    result = run_main(
        "task=score", f"predictions={bad}", f"datamodule.validation_file={SAMPLE / 'validation.json'}",
        run_dir=tmp_path / "run", check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(bad) in result.stderr


def test_unknown_task_and_missing_checkpoint_are_clear_errors(tmp_path: Path) -> None:
    result = run_main("task=dance", run_dir=tmp_path / "a", check=False)
    assert result.returncode == 1 and "fit, validate, predict, score" in result.stderr
    result = run_main("task=validate", *TINY_RUN, run_dir=tmp_path / "b", check=False)
    assert result.returncode == 1 and "ckpt_path" in result.stderr
