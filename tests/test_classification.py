"""Classification: losses, KLUE metrics against scikit-learn, file formats, label maps, K-fold, augmentation, runs."""

from __future__ import annotations

import csv
import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, auc, f1_score, precision_recall_curve

from core.errors import DataFormatError
from datamodules.augment import augment_text
from datamodules.classification import ClassificationDataModule, parse_label_map
from datamodules.kfold import fold_assignment
from models.backbone import train_tokenizer
from models.cls_metrics import ClassificationOutputs, classification_scores
from models.losses import CrossEntropyLoss, FocalLoss, build_loss, class_weights
from tests.conftest import ROOT, SHARED_DATA, TINY_RUN, read_json, run_main

NLI = ROOT / "data" / "nli_sample"
KLUE_NLI_DEV = SHARED_DATA / "klue-nli-v1.1_dev.json"


@pytest.fixture(scope="module")
def tokenizer():
    texts = [r["premise"] + " " + r["hypothesis"] for r in read_json(NLI / "train.json")[:400]]
    return train_tokenizer(texts, vocab_size=600)


# ----------------------------------------------------------------------------- losses


def test_focal_loss_at_gamma_zero_is_cross_entropy() -> None:
    generator = torch.Generator().manual_seed(0)
    logits, target = torch.randn(64, 7, generator=generator), torch.randint(0, 7, (64,), generator=generator)
    weight = torch.rand(7, generator=generator) + 0.1
    assert torch.allclose(FocalLoss(7, gamma=0.0)(logits, target), F.cross_entropy(logits, target))
    weighted = FocalLoss(7, gamma=0.0, alpha=weight.tolist())(logits, target)
    assert torch.allclose(weighted, F.cross_entropy(logits, target, weight=weight), atol=1e-6)
    # gamma > 0 down-weights well-classified examples: a confident correct batch loses far more than a wrong one
    confident = torch.full((4, 3), -5.0)
    confident[:, 0] = 5.0
    zeros = torch.zeros(4, dtype=torch.long)
    ce, focal = CrossEntropyLoss(3), FocalLoss(3, gamma=2.0)
    assert focal(confident, zeros) < 1e-3 * ce(confident, zeros)
    assert focal(confident, zeros + 1) > 0.9 * ce(confident, zeros + 1)


def test_label_smoothing_and_class_weights() -> None:
    logits, target = torch.randn(16, 4), torch.randint(0, 4, (16,))
    settings = {"_target_": "models.losses.LabelSmoothingLoss", "smoothing": 0.2, "alpha": [1, 2, 3, 4]}
    loss = build_loss(settings, 4)
    expected = F.cross_entropy(logits, target, weight=torch.tensor([1.0, 2, 3, 4]), label_smoothing=0.2)
    assert torch.allclose(loss(logits, target), expected)
    assert torch.allclose(class_weights("balanced", 3, [10, 5, 5]), torch.tensor([2 / 3, 4 / 3, 4 / 3]))
    balanced = build_loss({"_target_": "models.losses.CrossEntropyLoss", "alpha": "balanced"}, 3)
    assert balanced.needs_class_counts and balanced.weight is None  # known once the training data is read
    balanced.use_class_counts([10, 5, 5])
    assert torch.allclose(balanced.weight, torch.tensor([2 / 3, 4 / 3, 4 / 3]))
    with pytest.raises(ValueError, match="2 weights for 3 classes"):
        build_loss({"_target_": "models.losses.CrossEntropyLoss", "alpha": [1.0, 2.0]}, 3)
    with pytest.raises(ValueError, match="cannot be imported"):
        build_loss({"_target_": "models.losses.DiceLoss"}, 3)
    with pytest.raises(ValueError, match="is not a models.losses.Loss"):
        build_loss({"_target_": "torch.nn.CrossEntropyLoss"}, 3)
    with pytest.raises(ValueError, match=r"model.loss.name: dice is the old spelling.*model/loss=dice"):
        build_loss({"name": "dice"}, 3)


# ----------------------------------------------------------------------------- metrics


@pytest.mark.parametrize(("classes", "examples", "seed"), [(5, 40, 0), (30, 300, 1), (3, 500, 2)])
def test_metrics_equal_scikit_learn_on_random_predictions(classes: int, examples: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    probs = rng.random((examples, classes)) ** 3
    probs = np.round(probs / probs.sum(1, keepdims=True), 3).astype(np.float32)  # rounding makes ties
    gold = rng.integers(0, classes - 1, examples)  # the last class never occurs in gold
    pred = probs.argmax(1)
    ours = classification_scores(torch.tensor(probs), torch.tensor(gold), no_relation_index=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns about the class with no gold example
        areas = [auc(*precision_recall_curve(gold == c, probs[:, c])[1::-1]) for c in range(classes)]
    expected = {
        "accuracy": 100 * accuracy_score(gold, pred),
        "macro_f1": 100 * f1_score(gold, pred, average="macro"),
        "micro_f1": 100 * f1_score(gold, pred, average="micro", labels=list(range(1, classes))),
        "auprc": 100 * np.mean(areas),
    }
    assert set(ours) == set(expected)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-4), name


def test_outputs_keep_each_example_once() -> None:
    outputs = ClassificationOutputs()
    outputs.update(torch.tensor([2, 0]), torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 0]))
    outputs.update(torch.tensor([1, 2]), torch.tensor([[0.3, 0.7], [0.1, 0.9]]), torch.tensor([1, 1]))  # 2 repeated
    state = outputs.compute()
    assert state["index"].tolist() == [0, 1, 2]
    assert state["target"].tolist() == [0, 1, 1]


# ----------------------------------------------------------------------------- formats and label maps


RECORDS = [
    {"guid": f"g{i}", "sentence1": f"문장 {i}", "sentence2": f"다른 문장 {i}", "labels": {"binary-label": i % 2, "label": 2.5}}
    for i in range(8)
]


def write_formats(tmp_path: Path) -> dict[str, Path]:
    files = {"json": tmp_path / "data.json", "jsonl": tmp_path / "data.jsonl", "csv": tmp_path / "data.csv"}
    files["json"].write_text(json.dumps(RECORDS, ensure_ascii=False), encoding="utf-8")
    files["jsonl"].write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in RECORDS), encoding="utf-8")
    with files["csv"].open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, ["guid", "sentence1", "sentence2", "labels.binary-label"])
        writer.writeheader()
        for r in RECORDS:
            writer.writerow({"guid": r["guid"], "sentence1": r["sentence1"], "sentence2": r["sentence2"],
                             "labels.binary-label": r["labels"]["binary-label"]})
    from datasets import ClassLabel, Dataset, DatasetDict

    rows = [{"guid": r["guid"], "sentence1": r["sentence1"], "sentence2": r["sentence2"],
             "label": r["labels"]["binary-label"]} for r in RECORDS]
    dataset = Dataset.from_list(rows).cast_column("label", ClassLabel(names=["different", "same"]))
    files["disk"] = tmp_path / "disk"
    DatasetDict({"train": dataset, "validation": dataset}).save_to_disk(str(files["disk"]))
    return files


def test_every_format_reads_into_the_same_examples(tmp_path: Path, tokenizer) -> None:
    files = write_formats(tmp_path)
    seen = {}
    for kind, path in files.items():
        field = "label" if kind == "disk" else "labels.binary-label"
        dm = ClassificationDataModule(tokenizer, train_file=str(path), validation_file=str(path),
                                      text_fields=["sentence1", "sentence2"], label_field=field, id_field="guid")
        dm.setup("fit")
        seen[kind] = [(ex["id"], ex["texts"], ex["label"]) for ex in dm.eval_examples("validation")]
        batch = next(iter(dm.val_dataloader()))
        assert batch["input_ids"].shape[0] == 8 and batch["labels"].tolist() == [0, 1] * 4
    assert seen["json"] == seen["jsonl"] == seen["csv"]
    assert dm.labels == ["different", "same"]  # the HF dataset's ClassLabel names
    assert [t for _, t, _ in seen["disk"]] == [t for _, t, _ in seen["json"]]


def test_label_maps_from_config_and_files(tmp_path: Path) -> None:
    assert parse_label_map(["b", "a"]) == ["b", "a"]
    assert parse_label_map({"a": 1, "b": 0}) == ["b", "a"]
    assert parse_label_map({"0": "x", "1": "y"}) == ["x", "y"]
    relation_list = tmp_path / "relation_list.json"
    relation_list.write_text(json.dumps({"relations": ["no_relation", "per:title"]}), encoding="utf-8")
    assert parse_label_map(str(relation_list)) == ["no_relation", "per:title"]
    text = tmp_path / "labels.txt"
    text.write_text("x\ny\n", encoding="utf-8")
    assert parse_label_map(str(text)) == ["x", "y"]
    pickled = tmp_path / "dict_label_to_num.pkl"
    pickled.write_bytes(b"not read")
    with pytest.raises(ValueError, match="pickle"):
        parse_label_map(str(pickled))
    with pytest.raises(ValueError, match="0..1"):
        parse_label_map({"a": 0, "b": 5})


def test_bad_records_name_the_record_and_the_fix(tmp_path: Path, tokenizer) -> None:
    train = tmp_path / "train.json"
    train.write_text(json.dumps(RECORDS), encoding="utf-8")
    validation = tmp_path / "validation.json"
    validation.write_text(json.dumps([{**RECORDS[0], "labels": {"binary-label": 7}}]), encoding="utf-8")
    dm = ClassificationDataModule(tokenizer, train_file=str(train), validation_file=str(validation),
                                  text_fields=["sentence1", "sentence2"], label_field="labels.binary-label")
    with pytest.raises(DataFormatError, match=r"record g0: label '7' is not one of the 2 classes") as error:
        dm.setup("validate")
    assert "datamodule.label_map" in str(error.value)
    with pytest.raises(DataFormatError, match="no text field 'premise'"):
        ClassificationDataModule(tokenizer, train_file=str(train), text_fields=["premise"], label_field="labels.binary-label")
    with pytest.raises(DataFormatError, match="real-valued score"):
        ClassificationDataModule(tokenizer, train_file=str(train), text_fields=["sentence1"], label_field="labels.label")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(RECORDS)[:-30], encoding="utf-8")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        ClassificationDataModule(tokenizer, train_file=str(broken), text_fields=["sentence1"])


# ----------------------------------------------------------------------------- K-fold and augmentation


def test_kfold_is_stratified_seeded_disjoint_and_complete(tokenizer, tmp_path: Path) -> None:
    labels = ["a"] * 50 + ["b"] * 25 + ["c"] * 10
    folds = fold_assignment(labels, 5, seed=3)
    assert folds == fold_assignment(labels, 5, seed=3) and folds != fold_assignment(labels, 5, seed=4)
    for k in range(5):
        held = [label for label, f in zip(labels, folds, strict=True) if f == k]
        assert (held.count("a"), held.count("b"), held.count("c")) == (10, 5, 2)
    held_out = []
    for k in range(2):
        dm = ClassificationDataModule(tokenizer, train_file=str(NLI / "train.json"), text_fields=["premise", "hypothesis"],
                                      label_field="gold_label", n_folds=2, fold=k, fold_seed=7, output_dir=str(tmp_path / str(k)))
        dm.setup("fit")
        ids = {ex["id"] for ex in dm.eval_examples("validation")}
        assert len(dm.train_features) + len(ids) == 1800
        held_out.append(ids)
        report = read_json(tmp_path / str(k) / "folds.json")
        assert set(report["validation_ids"]) == ids and report["n_folds"] == 2
        assert read_json(tmp_path / str(k) / "label_map.json") == {"contradiction": 0, "entailment": 1, "neutral": 2}
    assert not held_out[0] & held_out[1] and len(held_out[0] | held_out[1]) == 1800
    with pytest.raises(ValueError, match="datamodule.fold=2"):
        ClassificationDataModule(tokenizer, train_file=str(NLI / "train.json"), text_fields=["premise"],
                                 label_field="gold_label", n_folds=2, fold=2)


def test_augmentation_is_seeded_and_touches_training_data_only(tokenizer) -> None:
    text = "김민준은 어제 서울에서 친구와 함께 커피를 마셨다."
    protected = [(0, 3), (text.index("서울"), text.index("서울") + 2)]
    for method in ("aeda", "eda"):
        first = augment_text(text, method, random.Random(5), {"delete_prob": 0.5}, protected)
        assert first == augment_text(text, method, random.Random(5), {"delete_prob": 0.5}, protected)
        new_text, spans = first
        assert [new_text[s:e] for s, e in spans] == ["김민준", "서울"]
    settings = {"name": "aeda", "copies": 2}
    kwargs = {"train_file": str(NLI / "train.json"), "validation_file": str(NLI / "validation.json"),
              "text_fields": ["premise", "hypothesis"], "label_field": "gold_label", "max_train_examples": 30}
    plain, augmented = ClassificationDataModule(tokenizer, **kwargs), ClassificationDataModule(tokenizer, augment=settings, **kwargs)
    plain.setup("fit")
    augmented.setup("fit")
    assert len(augmented.train_features) == 3 * len(plain.train_features)
    assert plain.eval_examples("validation") == augmented.eval_examples("validation")
    again = ClassificationDataModule(tokenizer, augment=settings, **kwargs)
    again.setup("fit")
    assert again.train_features.columns["input_ids"] == augmented.train_features.columns["input_ids"]


# ----------------------------------------------------------------------------- the module


@pytest.mark.parametrize("lora", [False, True])
def test_entity_pooling_trains_its_head_not_the_unused_one(tmp_path: Path, lora: bool) -> None:
    if lora:
        pytest.importorskip("peft")
    from models.backbone import tiny_backbone
    from models.classifier import SequenceClassifier

    backbone = tiny_backbone(
        [str(NLI / "train.json")], ["premise", "hypothesis"], "modernbert",
        {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
        {"vocab_size": 600}, cache_dir=str(tmp_path),
    )
    model = SequenceClassifier(backbone, {"_target_": "torch.optim.AdamW", "lr": 1e-3}, {"_target_": "models.optim.no_schedule"}, labels=["x", "y", "z"],
                               pooling="entity", lora={"enabled": lora, "r": 4, "target_modules": ["Wqkv"]})
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any(name.startswith("entity_head.") for name in trainable)
    assert not any(".classifier." in name or ".head." in name for name in trainable)  # the HF head is not used
    assert lora == all("lora_" in name or name.startswith("entity_head.") for name in trainable)
    batch = {"input_ids": torch.tensor([[2, 10, 11, 12, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long),
             "subject_index": torch.tensor([1]), "object_index": torch.tensor([3])}
    assert model(batch).shape == (1, 3)
    with pytest.raises(ValueError, match="needs entity positions"):
        model({k: v for k, v in batch.items() if not k.endswith("_index")})


# ----------------------------------------------------------------------------- end to end


def test_nli_experiment_fits_validates_and_predicts(tmp_path: Path) -> None:
    run_dir, cache = tmp_path / "fit", tmp_path / "cache"
    run_main("+experiment=nli", *TINY_RUN, run_dir=run_dir, cache_dir=cache)
    metrics = read_json(run_dir / "metrics.json")
    assert {"accuracy", "macro_f1", "auprc", "loss"} <= set(metrics) and "micro_f1" not in metrics
    assert metrics["examples"] == 12 and metrics["best_checkpoint"].endswith(".ckpt")
    predictions = read_json(run_dir / "predictions.json")
    assert len(predictions) == 12 and not (run_dir / "nbest_predictions.json").exists()
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-4 and p["label"] in p["probabilities"] for p in predictions)
    # predict records without labels, from the checkpoint, with the run's saved backbone and label map
    test_file = tmp_path / "test.jsonl"
    rows = [{"guid": f"t{i}", "premise": r["premise"], "hypothesis": r["hypothesis"]}
            for i, r in enumerate(read_json(NLI / "validation.json")[:5])]
    test_file.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    reload = ["backbone=local", f"backbone.name_or_path={run_dir / 'backbone'}",
              f"datamodule.label_map={run_dir / 'label_map.json'}"]
    run_main("+experiment=nli", "task=predict", f"ckpt_path={metrics['best_checkpoint']}", *reload,
             f"datamodule.test_file={test_file}", "print_config=false", run_dir=tmp_path / "predict", cache_dir=cache)
    predicted = read_json(tmp_path / "predict" / "predictions.json")
    assert [p["id"] for p in predicted] == [f"t{i}" for i in range(5)] and all("gold" not in p for p in predicted)
    # another class list than the checkpoint's is refused with the fix
    wrong = run_main("+experiment=nli", "task=validate", f"ckpt_path={metrics['best_checkpoint']}", *reload[:2],
                     "datamodule.label_map=[neutral,entailment,contradiction]", "print_config=false", run_dir=tmp_path / "wrong", cache_dir=cache,
                     check=False)
    assert wrong.returncode == 1 and "label_map.json" in wrong.stderr and "Traceback" not in wrong.stderr


@pytest.mark.skipif(not KLUE_NLI_DEV.exists(), reason=f"{KLUE_NLI_DEV} not present (development data only)")
def test_pair_task_on_real_klue_records_with_a_nested_label_by_configuration_alone(tmp_path: Path) -> None:
    """KLUE-NLI dev records in KLUE-STS's layout (sentence1/2, labels.binary-label): configuration only."""
    records = read_json(KLUE_NLI_DEV)
    rows = [{"guid": r["guid"], "sentence1": r["premise"], "sentence2": r["hypothesis"],
             "labels": {"label": 0.0, "binary-label": int(r["gold_label"] == "entailment")}} for r in records]
    train, dev = tmp_path / "train.json", tmp_path / "dev.json"
    train.write_text(json.dumps(rows[:600], ensure_ascii=False), encoding="utf-8")
    dev.write_text(json.dumps(rows[2900:], ensure_ascii=False), encoding="utf-8")
    run_dir = tmp_path / "run"
    run_main(
        "datamodule=classification", "model=classifier", "datamodule.text_fields=[sentence1,sentence2]",
        "datamodule.label_field=labels.binary-label", "datamodule.id_field=guid",
        f"datamodule.train_file={train}", f"datamodule.validation_file={dev}",
        *[o for o in TINY_RUN if "max_eval_examples" not in o], "model.optimizer.lr=1e-3",
        run_dir=run_dir, cache_dir=tmp_path / "cache",
    )
    metrics = read_json(run_dir / "metrics.json")
    assert 0 <= metrics["accuracy"] <= 100 and metrics["examples"] == 100
    predictions = read_json(run_dir / "predictions.json")
    assert [p["id"] for p in predictions] == [r["guid"] for r in rows[2900:]]
    assert read_json(run_dir / "label_map.json") == {"0": 0, "1": 1}
