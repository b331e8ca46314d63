"""datamodule.fold_group: grouped stratified K-fold for RE (by sentence) and MRC (by document_id); leak warnings."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from datamodules.kfold import fold_assignment, leaked
from datamodules.klue_re import KlueREDataModule
from datamodules.mrc import MRCDataModule
from tests.conftest import ROOT, SAMPLE, read_json
from tests.test_klue_re import word_piece

RE_SAMPLE = ROOT / "data" / "re_sample"


def test_grouped_assignment_never_splits_a_group_and_keeps_class_balance() -> None:
    labels = [("a", "b", "c")[i % 3] for i in range(300)]
    groups = [str(i // 4) for i in range(300)]  # 75 groups of 4
    folds = fold_assignment(labels, 5, seed=1, groups=groups)
    assert folds == fold_assignment(labels, 5, seed=1, groups=groups)
    for group in set(groups):
        assert len({k for k, g in zip(folds, groups, strict=True) if g == group}) == 1
    for k in range(5):
        held = [label for label, f in zip(labels, folds, strict=True) if f == k]
        assert len(held) == 60 and all(15 <= held.count(c) <= 25 for c in "abc")
    assert all(leaked(groups, folds, k) == 0 for k in range(5))
    assert leaked(groups, fold_assignment(labels, 5, seed=1), 0) > 0  # the ungrouped split separates groups
    with pytest.raises(ValueError, match="only 2 distinct values"):
        fold_assignment(labels[:8], 3, seed=0, groups=["x"] * 4 + ["y"] * 4)


def re_records_sharing_sentences(tmp_path: Path) -> Path:
    """re_sample records, each sentence given a second record (same sentence, its own guid): KLUE-RE's layout."""
    records = read_json(RE_SAMPLE / "train.json")[:120]
    twins = [{**r, "guid": r["guid"] + "-b"} for r in records]
    path = tmp_path / "re.json"
    path.write_text(json.dumps(records + twins, ensure_ascii=False), encoding="utf-8")
    return path


def test_re_fold_group_keeps_a_sentence_in_one_fold(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = re_records_sharing_sentences(tmp_path)
    common = {"train_file": str(path), "label_map": str(RE_SAMPLE / "relation_list.json"), "n_folds": 3}
    held_out = []
    for k in range(3):
        dm = KlueREDataModule(word_piece(), fold=k, fold_group="sentence", output_dir=str(tmp_path / str(k)), **common)
        with caplog.at_level(logging.WARNING, logger="datamodules.kfold"):
            train, validation = dm.train_and_validation()
        assert not {ex["texts"][0] for ex in train} & {ex["texts"][0] for ex in validation}
        held_out.append({ex["id"] for ex in validation})
    assert "share their text" not in caplog.text
    assert not held_out[0] & held_out[1] and len(set.union(*held_out)) == 240
    dm = KlueREDataModule(word_piece(), fold=0, **common)  # a random split of the same records leaks: warned
    with caplog.at_level(logging.WARNING, logger="datamodules.kfold"):
        dm.train_and_validation()
    assert "share their text with training examples" in caplog.text and "fold_group" in caplog.text
    with pytest.raises(ValueError, match="set datamodule.n_folds too"):
        KlueREDataModule(word_piece(), fold_group="sentence", train_file=str(path), label_map=common["label_map"])


def test_mrc_folds_grouped_by_document(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    common = {"train_file": str(SAMPLE / "train.json"), "n_folds": 2, "fold_seed": 3}
    train_doc = json.loads((SAMPLE / "train.json").read_text(encoding="utf-8"))
    n_questions = sum(len(p["qas"]) for d in train_doc["data"] for p in d["paragraphs"])
    seen: set[str] = set()
    for k in range(2):
        dm = MRCDataModule(None, fold=k, fold_group="document_id", output_dir=str(tmp_path / str(k)), **common)
        train, held = dm.load_examples("train", True), dm.load_examples("validation", True)
        report = read_json(tmp_path / str(k) / "folds.json")  # the split on record, as for the classifier
        assert (report["n_folds"], report["fold"], report["fold_seed"]) == (2, k, 3)
        assert report["validation_ids"] == [ex["id"] for ex in held] and len(report["fold_of"]) == n_questions
        assert not {ex["document_id"] for ex in train} & {ex["document_id"] for ex in held}
        assert len(train) + len(held) == n_questions and not seen & {ex["id"] for ex in held}
        seen |= {ex["id"] for ex in held}
    assert len(seen) == n_questions
    with caplog.at_level(logging.WARNING, logger="datamodules.kfold"):
        MRCDataModule(None, fold=1, **common).load_examples("validation", True)
    assert "share their passage with training examples" in caplog.text
    with pytest.raises(ValueError, match="fold_group='guid'"):
        MRCDataModule(None, fold_group="guid", **common)
