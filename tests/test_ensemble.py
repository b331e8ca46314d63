"""Soft-voting ensembles: the weighted mean itself, and a two-fold K-fold sweep ensembled by task=ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import DataFormatError
from tasks.ensemble import run_ensemble
from tasks.ensemble_classifiers import soft_vote
from tests.conftest import TINY_RUN, read_json, run_main


def record(key: str, probs: dict[str, float], gold: str | None = None) -> dict:
    out = {"id": key, "label": max(probs, key=probs.__getitem__), "probabilities": probs}
    return {**out, "gold": gold} if gold else out


def test_soft_vote_is_a_weighted_mean_over_the_runs_that_predicted_each_id() -> None:
    run_a = [record("x", {"a": 0.9, "b": 0.1}, "b"), record("y", {"a": 0.2, "b": 0.8})]
    run_b = [record("x", {"a": 0.1, "b": 0.9}, "b"), record("z", {"a": 0.6, "b": 0.4})]
    combined = {r["id"]: r for r in soft_vote([run_a, run_b], [1.0, 3.0])}
    assert combined["x"]["probabilities"] == {"a": pytest.approx(0.3), "b": pytest.approx(0.7)}
    assert combined["x"]["label"] == "b" and combined["x"]["gold"] == "b"
    assert combined["y"]["probabilities"]["b"] == pytest.approx(0.8)  # only run a predicted y
    assert combined["z"]["label"] == "a" and "gold" not in combined["z"]


def test_ensemble_refuses_reader_predictions_and_bad_weights(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "predictions.json").write_text(json.dumps([record("x", {"p": 0.5, "q": 0.5})]))
    with pytest.raises(ValueError, match="give 2 non-negative weights"):
        run_ensemble({"runs": [str(tmp_path)], "weights": [1.0]}, tmp_path)
    (tmp_path / "b" / "predictions.json").write_text(json.dumps({"x": "an answer"}))
    with pytest.raises(DataFormatError, match="not a classifier's predictions"):
        run_ensemble({"runs": [str(tmp_path / "a"), str(tmp_path / "b")]}, tmp_path)
    with pytest.raises(ValueError, match="at least two"):
        run_ensemble({"runs": [str(tmp_path / "a")]}, tmp_path)


def test_two_fold_sweep_then_ensemble(tmp_path: Path) -> None:
    sweep, cache = tmp_path / "sweep", tmp_path / "cache"
    run_main("-m", "+experiment=re_kfold", "datamodule.n_folds=2", "datamodule.fold=0,1", *TINY_RUN,
             f"hydra.sweep.dir={sweep}", run_dir=tmp_path / "unused", cache_dir=cache)
    folds = [read_json(sweep / str(k) / "folds.json") for k in (0, 1)]
    assert folds[0]["fold_of"] == folds[1]["fold_of"]  # both jobs computed the same split
    assert not set(folds[0]["validation_ids"]) & set(folds[1]["validation_ids"])
    assert len(folds[0]["validation_ids"]) + len(folds[1]["validation_ids"]) == len(folds[0]["fold_of"])
    tests = [read_json(sweep / str(k) / "test_predictions.json") for k in (0, 1)]
    assert len(tests[0]) == 12 and all("gold" in r for r in tests[0])

    run_main("task=ensemble", f"ensemble.runs=[{sweep}]", "print_config=false", run_dir=tmp_path / "ens")
    metrics = read_json(tmp_path / "ens" / "metrics.json")
    combined = read_json(tmp_path / "ens" / "predictions.json")
    assert metrics["predictions_file"] == "test_predictions.json" and len(metrics["runs"]) == 2
    assert {"micro_f1", "auprc", "accuracy"} <= set(metrics) and len(metrics["run_scores"]) == 2
    assert [r["id"] for r in combined] == [r["id"] for r in tests[0]]
    for mixed, a, b in zip(combined, *tests, strict=True):
        for label, p in mixed["probabilities"].items():
            assert p == pytest.approx((a["probabilities"][label] + b["probabilities"][label]) / 2, abs=2e-6)

    run_main("task=ensemble", f"ensemble.runs=[{sweep / '0'},{sweep / '1'}]", "ensemble.weights=[1,0]",
             "print_config=false", run_dir=tmp_path / "weighted")
    assert [r["label"] for r in read_json(tmp_path / "weighted" / "predictions.json")] == [r["label"] for r in tests[0]]
    bad = run_main("task=ensemble", f"ensemble.runs=[{sweep}]", "ensemble.weights=[1]", "print_config=false",
                   run_dir=tmp_path / "bad", check=False)
    assert bad.returncode == 1 and "give 2 non-negative weights" in bad.stderr
