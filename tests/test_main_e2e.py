"""End to end through main.py: fit, validate, predict, score, resume, reload (bad inputs: test_bad_inputs.py)."""

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
        f"ckpt_path={fitted_run / 'checkpoints' / 'last.ckpt'}", run_dir=resumed,
        cache_dir=fitted_run.parent / "cache",  # its tokenizer: one trained afresh may differ, and is refused
    )
    assert read_json(resumed / "metrics.json")["global_step"] == 2 * first["global_step"]


def test_second_run_reuses_cached_features_and_tokenizer(fitted_run: Path, tmp_path: Path) -> None:
    cache = fitted_run.parent / "cache"
    before = sorted(p.name for p in (cache / "features").iterdir())
    assert len(before) >= 2  # train and validation features
    run_main("+experiment=mrc_curriculum", *TINY_RUN, run_dir=tmp_path / "again", cache_dir=cache)
    assert sorted(p.name for p in (cache / "features").iterdir()) == before
    # one tokenizer (beside it the empty lock file concurrent runs share: core/cache.py)
    assert len([p for p in (cache / "tokenizers").iterdir() if not p.name.endswith(".lock")]) == 1
