"""STS as regression: one tiny ``+experiment=sts`` fit (shared), its metrics against scipy / numpy / scikit-learn,
predictions.json, a weighted task=ensemble, K-fold on real-valued labels, and labels that are not numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score

from core.errors import DataFormatError
from datamodules.regression import RegressionDataModule
from models.backbone import train_tokenizer
from models.regression_metrics import regression_scores
from models.regressor import build_regression_loss
from tasks.runner import compose_config
from tests.conftest import ROOT, TINY_RUN, read_json, run_main

STS = ROOT / "data" / "sts_sample"
PAIR = {"text_fields": ["sentence1", "sentence2"], "label_field": "labels.real-label", "id_field": "guid"}


@pytest.fixture(scope="module")
def sts_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny ``+experiment=sts`` fit, shared by every test below; it also predicts an unlabelled file."""
    base = tmp_path_factory.mktemp("sts")
    rows = [{"guid": f"t{i}", "sentence1": r["sentence1"], "sentence2": r["sentence2"]}
            for i, r in enumerate(read_json(STS / "validation.json")[:5])]
    test_file = base / "unlabelled.jsonl"
    test_file.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    run_dir = base / "run"
    run_main("+experiment=sts", *TINY_RUN, "datamodule.max_eval_examples=40", f"datamodule.test_file={test_file}",
             run_dir=run_dir, cache_dir=base / "cache")
    return run_dir


@pytest.fixture(scope="module")
def tokenizer():
    rows = read_json(STS / "train.json")[:300]
    return train_tokenizer([r["sentence1"] + " " + r["sentence2"] for r in rows], vocab_size=500)


def scipy_scores(predictions: list[dict]) -> dict[str, float]:
    """The reference: scipy's correlations, numpy's MSE, scikit-learn's F1 at KLUE's threshold 3."""
    pred = np.array([r["prediction"] for r in predictions], dtype=np.float64)
    gold = np.array([r["gold"] for r in predictions], dtype=np.float64)
    return {"pearson": pearsonr(pred, gold)[0], "spearman": spearmanr(pred, gold)[0],
            "mse": float(np.mean((pred - gold) ** 2)), "f1": 100 * f1_score(gold >= 3, pred >= 3, zero_division=0)}


def test_metrics_equal_scipy_on_the_written_predictions(sts_run: Path) -> None:
    gold = {r["guid"]: r["labels"]["real-label"] for r in read_json(STS / "validation.json")[:40]}
    metrics = read_json(sts_run / "metrics.json")
    predictions = read_json(sts_run / "predictions.json")
    assert all(set(r) == {"id", "prediction", "gold"} for r in predictions)
    assert {r["id"]: r["gold"] for r in predictions} == gold and metrics["examples"] == 40
    for name, value in scipy_scores(predictions).items():
        assert metrics[name] == pytest.approx(value, abs=1e-4), name
    assert "pearson" in Path(metrics["best_checkpoint"]).name and not (sts_run / "label_map.json").exists()


def test_unlabelled_records_get_null_gold(sts_run: Path) -> None:
    records = read_json(sts_run / "test_predictions.json")
    assert [r["id"] for r in records] == [f"t{i}" for i in range(5)]
    assert all(r["gold"] is None and isinstance(r["prediction"], float) for r in records)


def test_weighted_ensemble_averages_predictions(sts_run: Path, tmp_path: Path) -> None:
    """The fixture run and a copy of it with other predictions, weighted 1:3, give the hand-computed mean."""
    other = tmp_path / "other"
    shutil.copytree(sts_run / ".hydra", other / ".hydra")
    first = read_json(sts_run / "predictions.json")
    second = [{**r, "prediction": 5.0 - 0.5 * r["prediction"]} for r in first]
    (other / "predictions.json").write_text(json.dumps(second), encoding="utf-8")
    run_main("task=ensemble", f"ensemble.runs=[{sts_run},{other}]", "ensemble.weights=[1,3]",
             "ensemble.predictions_file=predictions.json", "print_config=false", run_dir=tmp_path / "ens")
    metrics = read_json(tmp_path / "ens" / "metrics.json")
    combined = read_json(tmp_path / "ens" / "predictions.json")
    assert metrics["kind"] == "regressor" and len(metrics["run_scores"]) == 2
    assert [r["id"] for r in combined] == [r["id"] for r in first]
    for mixed, a, b in zip(combined, first, second, strict=True):
        assert mixed["prediction"] == pytest.approx((a["prediction"] + 3 * b["prediction"]) / 4, abs=1e-9)
        assert mixed["gold"] == a["gold"]
    for name, value in scipy_scores(combined).items():
        assert metrics[name] == pytest.approx(value, abs=1e-4), name
    assert metrics["run_scores"][0]["pearson"] == pytest.approx(read_json(sts_run / "metrics.json")["pearson"],
                                                                abs=1e-4)


def test_non_numeric_label_stops_main_with_file_record_and_fix(tmp_path: Path) -> None:
    rows = [{**r, "guid": f"sts-bad-{i}"} for i, r in enumerate(read_json(STS / "validation.json")[:3])]
    rows[1]["labels"] = {**rows[1]["labels"], "real-label": "비슷함"}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    result = run_main("+experiment=sts", *TINY_RUN, f"datamodule.validation_file={path}", run_dir=tmp_path / "run",
                      check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    assert str(path) in output and "sts-bad-1" in output and "is not a number" in output
    assert "datamodule.label_field" in output


def test_scores_equal_scipy_with_ties() -> None:
    rng = np.random.default_rng(3)
    gold = np.round(rng.random(500) * 35) / 7  # KLUE-STS-like means of seven integer scores: many ties
    pred = np.round(gold + rng.normal(0, 1.2, 500), 1)  # ties in the predictions too
    ours = regression_scores(torch.tensor(pred, dtype=torch.float32), torch.tensor(gold), binary_threshold=3.0)
    expected = {"pearson": pearsonr(pred.astype(np.float32), gold)[0], "spearman": spearmanr(pred, gold)[0],
                "mse": np.mean((pred.astype(np.float32) - gold) ** 2), "f1": 100 * f1_score(gold >= 3, pred >= 3)}
    assert ours.keys() == expected.keys()
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-5), name
    assert "f1" not in regression_scores(torch.tensor(pred), torch.tensor(gold), binary_threshold=None)


def test_losses() -> None:
    pred, gold = torch.tensor([0.0, 1.0, 4.0]), torch.tensor([0.5, 1.0, 1.0])
    assert build_regression_loss(None)(pred, gold) == pytest.approx((0.25 + 9) / 3)
    huber = build_regression_loss({"_target_": "models.losses.HuberLoss", "delta": 1.0})
    assert huber(pred, gold) == pytest.approx((0.125 + 2.5) / 3)
    with pytest.raises(ValueError, match="model/loss=ce"):
        build_regression_loss({"name": "ce"})


@pytest.mark.parametrize(("label", "message"), [
    ("비슷함", r"record sts-bad-1: labels\.real-label='비슷함' is not a number"),
    (None, r"record sts-bad-1: no label under 'labels\.real-label'"),
])
def test_bad_labels_name_the_file_record_and_fix(tmp_path: Path, tokenizer, label: object, message: str) -> None:
    rows = read_json(STS / "validation.json")[:3]
    rows = [{**r, "guid": f"sts-bad-{i}"} for i, r in enumerate(rows)]
    rows[1]["labels"] = {"binary-label": 1} if label is None else {**rows[1]["labels"], "real-label": label}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    dm = RegressionDataModule(tokenizer, train_file=str(STS / "train.json"), validation_file=str(path), **PAIR)
    with pytest.raises(DataFormatError, match=message) as error:
        dm.setup("validate")
    assert str(path) in str(error.value) and "fix:" in str(error.value)
    assert "datamodule.label_field" in error.value.fix


def test_kfold_on_real_valued_labels_is_disjoint_complete_and_spans_the_range(tmp_path: Path, tokenizer) -> None:
    labels = {r["guid"]: r["labels"]["real-label"] for r in read_json(STS / "train.json")}
    held_out = []
    for fold in (0, 1):
        dm = RegressionDataModule(tokenizer, train_file=str(STS / "train.json"), n_folds=2, fold=fold, fold_seed=5,
                                  output_dir=str(tmp_path / str(fold)), **PAIR)
        dm.setup("fit")
        examples = dm.eval_examples("validation")
        assert all(ex["label"] == labels[ex["id"]] for ex in examples)
        batch = next(iter(dm.val_dataloader()))
        assert batch["labels"].dtype == torch.float32
        assert batch["labels"].tolist() == pytest.approx([ex["label"] for ex in examples[:len(batch["labels"])]])
        assert len(dm.train_features) + len(examples) == len(labels)
        held_out.append({ex["id"] for ex in examples})
        assert set(read_json(tmp_path / str(fold) / "folds.json")["validation_ids"]) == held_out[-1]
        # stratified on label bins: each fold's share of low and high scores is the file's
        for low, high in ((0, 1), (4, 5.01)):
            share = np.mean([low <= labels[i] < high for i in held_out[-1]])
            assert share == pytest.approx(np.mean([low <= v < high for v in labels.values()]), abs=0.01)
    assert not held_out[0] & held_out[1] and len(held_out[0] | held_out[1]) == len(labels)


def test_experiment_monitors_pearson(tmp_path: Path) -> None:
    cfg = compose_config(["+experiment=sts"], tmp_path)
    assert cfg.optimized_metric == "pearson"
    for callback in ("model_checkpoint", "early_stopping"):
        assert (cfg.callbacks[callback].monitor, cfg.callbacks[callback].mode) == ("val_pearson", "max")
    assert cfg.datamodule.label_field == "labels.real-label"
