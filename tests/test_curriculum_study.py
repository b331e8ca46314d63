"""Issue 9: the curriculum study (composition, one tiny cell, the report) and the teacher-loss difficulty."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from scipy import stats

import datamodules.curriculum as curriculum
from callbacks.curriculum_study import BEGIN, END, CurriculumStudyReport, read_jobs
from datamodules.curriculum import curriculum_spec
from datamodules.mrc import DIFFICULTY_KEYS, MRCDataModule
from datamodules.mrc_features import build_train_features
from tasks.difficulty import attach_difficulty
from tests.conftest import ROOT, SAMPLE, TINY_RUN, read_json, run_main

NLI = SAMPLE.parent / "nli_sample"


def test_the_study_composes_into_a_valid_grid() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=curriculum_study"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    params = cfg.hydra.sweeper.params
    pacings = params["datamodule.curriculum.pacing"].split(",")
    difficulties = params["datamodule.curriculum.difficulty"].split(",")
    assert set(pacings) == set(curriculum.PACINGS) and len(params["seed"].split(",")) == 3
    for pacing in pacings:
        for difficulty in difficulties:
            spec = curriculum_spec({**cfg.datamodule.curriculum, "pacing": pacing, "difficulty": difficulty},
                                   DIFFICULTY_KEYS, "context_length")  # fmt: skip
            assert (spec.pacing, spec.difficulty) == (pacing, difficulty)
    report = instantiate(cfg.hydra.callbacks.curriculum_study)
    assert isinstance(report, CurriculumStudyReport) and report.metrics == ["exact_match", "f1"]
    assert cfg.callbacks.padding_fraction._target_ == "callbacks.padding.PaddingFraction"


@pytest.fixture(scope="module")
def study_cell(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cell of the study with the tiny test settings: baby steps over BM25 difficulty, 2 epochs."""
    base = tmp_path_factory.mktemp("study")
    run_dir = base / "cell"
    run_main(
        "+experiment=curriculum_study", *TINY_RUN, "trainer.max_epochs=2", "datamodule.curriculum.pacing=baby_steps",
        "datamodule.curriculum.difficulty=bm25", "datamodule.curriculum.num_buckets=2", run_dir=run_dir,
        cache_dir=base / "cache",
    )
    return run_dir


def test_one_cell_runs_and_reports_padding_per_epoch(study_cell: Path) -> None:
    metrics = read_json(study_cell / "metrics.json")
    padding = metrics["train_padding_fraction"]
    assert len(padding) == 2 and all(0 < p < 1 for p in padding)
    assert {"exact_match", "f1"} <= set(metrics)
    cached = list((study_cell.parent / "cache" / "difficulty").glob("bm25-*.json"))
    assert len(cached) == 1 and len(json.loads(cached[0].read_text())) == 48  # one score per training question


def test_the_study_command_sweeps_and_writes_its_table(tmp_path: Path) -> None:
    """``python main.py -m +experiment=curriculum_study``, shrunk to 2 pacings x 2 seeds of tiny jobs: Hydra runs
    the grid and calls the report at the end, which reads every job and writes the table into the sweep dir."""
    sweep = tmp_path / "sweep"
    run_main(
        "-m", "+experiment=curriculum_study", *TINY_RUN, "datamodule.curriculum.pacing=none,sorted",
        "datamodule.curriculum.difficulty=context_length", "seed=1,2", "hydra.callbacks.curriculum_study.readme=null",
        f"hydra.sweep.dir={sweep}", run_dir=tmp_path / "unused", cache_dir=tmp_path / "cache",
    )
    jobs, missing = read_jobs(sweep)
    assert not missing and sorted((j["pacing"], j["seed"]) for j in jobs) == [
        ("none", 1), ("none", 2), ("sorted", 1), ("sorted", 2)]  # fmt: skip
    rows = {(r["pacing"], r["difficulty"]): r for r in read_json(sweep / "curriculum_study.json")["rows"]}
    assert set(rows) == {("none", "-"), ("sorted", "context_length")}
    ems = {(j["pacing"], j["seed"]): j["metrics"]["exact_match"] for j in jobs}
    assert rows[("sorted", "context_length")]["exact_match"][0] == pytest.approx((ems["sorted", 1] + ems["sorted", 2]) / 2)
    table = (sweep / "curriculum_study.md").read_text(encoding="utf-8")
    assert "| sorted | context_length | 2 |" in table


def _fake_job(sweep: Path, name: str, pacing: str, difficulty: str, seed: int, em: float, f1: float) -> None:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(
        f"seed: {seed}\ndatamodule:\n  curriculum:\n    pacing: {pacing}\n    difficulty: {difficulty}\n"
        "    name: none\n    key: context_length\n", encoding="utf-8")  # fmt: skip
    metrics = {"exact_match": em, "f1": f1, "train_padding_fraction": [0.5, 0.4], "train_seconds": 10.0}
    (job / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")


def test_report_means_stds_and_paired_tests(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    base = {1: 40.0, 2: 50.0, 3: 45.0, 4: 42.0}
    for seed, em in base.items():
        for difficulty in ("context_length", "bm25"):  # pacing none ignores the difficulty: the same run twice
            _fake_job(sweep, f"none-{difficulty}-{seed}", "none", difficulty, seed, em, em + 5)
        _fake_job(sweep, f"sorted-{seed}", "sorted", "context_length", seed, em + 10 + seed % 2, em + 12)
        _fake_job(sweep, f"anti-{seed}", "anti", "bm25", seed, em + (1 if seed % 2 else -1), em + 4)
    (sweep / "broken" / ".hydra").mkdir(parents=True)
    shutil.copy(sweep / "sorted-1" / ".hydra" / "config.yaml", sweep / "broken" / ".hydra" / "config.yaml")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{BEGIN}\nold table\n{END}\ntail\n", encoding="utf-8")
    report = CurriculumStudyReport(readme=str(readme))
    table = report.report(sweep)
    rows = {(r["pacing"], r["difficulty"]): r for r in read_json(sweep / "curriculum_study.json")["rows"]}
    assert set(rows) == {("none", "-"), ("sorted", "context_length"), ("anti", "bm25")}
    none = np.array(list(base.values()))
    assert rows[("none", "-")]["exact_match"] == pytest.approx([none.mean(), none.std(ddof=1)])  # counted once
    ours = none + 10 + np.array([1, 0, 1, 0])
    assert rows[("sorted", "context_length")]["exact_match"] == pytest.approx([ours.mean(), ours.std(ddof=1)])
    diff = ours - none  # the paired t-test, written out: t = mean(d) / (sd(d) / sqrt(n)), two-sided
    t = diff.mean() / (diff.std(ddof=1) / math.sqrt(len(diff)))
    assert rows[("sorted", "context_length")]["p"] == pytest.approx(2 * stats.t.sf(abs(t), df=len(diff) - 1))
    p_anti = rows[("anti", "bm25")]["p"]
    assert p_anti > 0.5 and rows[("anti", "bm25")]["delta"] == 0
    # Benjamini-Hochberg over the two comparisons
    assert rows[("sorted", "context_length")]["p_adjusted"] == pytest.approx(
        min(1.0, 2 * rows[("sorted", "context_length")]["p"]))
    assert rows[("anti", "bm25")]["p_adjusted"] == pytest.approx(p_anti)
    assert "Significantly different from shuffling" in table and "sorted/context_length (+10.5)" in table
    assert "anti/bm25" not in table.split("Significantly")[1].split(".")[0]
    assert "broken" in table  # the job without metrics.json is named, not silently dropped
    text = readme.read_text(encoding="utf-8")
    assert "old table" not in text and text.endswith(f"{END}\ntail\n") and "| sorted | context_length | 4 |" in text
    assert (sweep / "curriculum_study.md").read_text(encoding="utf-8") == table
    assert len(read_jobs(sweep)[0]) == 16


# ----------------------------------------------------------------------------- a teacher's loss


def _mrc(tokenizer, tmp_path: Path, **curriculum_options) -> MRCDataModule:
    dm = MRCDataModule(
        tokenizer, train_file=str(SAMPLE / "train.json"), validation_file=str(SAMPLE / "validation.json"),
        max_seq_length=96, doc_stride=32, batch_size=8, eval_batch_size=16, max_train_examples=12,
        max_eval_examples=4, cache_dir=str(tmp_path / "cache"), curriculum={"pacing": "sorted", **curriculum_options},
    )
    attach_difficulty(dm)  # the task step that computes teacher-loss / BM25 scores (tasks/difficulty.py)
    dm.setup("fit")
    return dm


def test_reader_teacher_loss_equals_the_hf_heads_loss_and_is_cached(study_cell: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer

    from models.encoder import checkpoint_state

    ckpt = str(next((study_cell / "checkpoints").glob("epoch*.ckpt")))
    tokenizer = AutoTokenizer.from_pretrained(str(study_cell / "backbone"))
    dm = _mrc(tokenizer, tmp_path, difficulty="loss", teacher_ckpt=ckpt)
    # reference: the HF model with the checkpoint's weights, one feature at a time with its labels
    model = AutoModelForQuestionAnswering.from_config(AutoConfig.from_pretrained(str(study_cell / "backbone")))
    model.load_state_dict(checkpoint_state(Path(ckpt)))
    model.eval()
    features, by_example = dm.train_features, {}
    example_index = dm._build(build_train_features, dm.load_examples("train", True), "train")["example_index"]
    with torch.inference_mode():
        for row in range(len(features)):
            item = features[row]
            batch = {k: torch.tensor([item[k]]) for k in ("input_ids", "attention_mask", "start_positions",
                                                          "end_positions")}  # fmt: skip
            by_example.setdefault(example_index[row], []).append(float(model(**batch).loss))
    expected = [float(np.mean(by_example[i])) for i in example_index]
    assert dm.train_difficulty == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert len(set(by_example)) == 12 and len(features) > 12  # examples with several windows share one score
    order = list(dm.train_dataloader().sampler)
    assert [expected[i] for i in order] == sorted(expected)

    # a teacher of another vocabulary cannot score this run's token ids: refused, with the fix
    other = _mrc_error(SAMPLE, tmp_path, ckpt)
    assert "another tokenizer" in other and "backbone=local" in other
    with pytest.raises(ValueError, match="no such checkpoint file"):
        _mrc(tokenizer, tmp_path, difficulty="loss", teacher_ckpt=str(tmp_path / "missing.ckpt"))

    def no_teacher(*args, **kwargs):
        raise AssertionError("the cached scores should have been used")

    monkeypatch.setattr("tasks.difficulty.teacher_losses", no_teacher)
    assert _mrc(tokenizer, tmp_path, difficulty="loss", teacher_ckpt=ckpt).train_difficulty == dm.train_difficulty


def _mrc_error(sample: Path, tmp_path: Path, ckpt: str) -> str:
    from models.backbone import iter_texts, train_tokenizer

    tokenizer = train_tokenizer(iter_texts([sample / "validation.json"], ["context", "question"]), vocab_size=300)
    with pytest.raises(ValueError) as error:
        _mrc(tokenizer, tmp_path / "other", difficulty="loss", teacher_ckpt=ckpt)
    return str(error.value)


def test_classifier_teacher_loss_equals_the_hf_heads_loss(tmp_path: Path) -> None:
    from lightning.pytorch import Trainer

    from datamodules.classification import ClassificationDataModule
    from models.backbone import tiny_backbone
    from models.classifier import SequenceClassifier

    backbone = tiny_backbone(
        [str(NLI / "train.json")], ["premise", "hypothesis"], "modernbert",
        {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
        {"vocab_size": 600}, cache_dir=str(tmp_path),
    )
    settings = {"train_file": str(NLI / "train.json"), "validation_file": str(NLI / "validation.json"),
                "text_fields": ["premise", "hypothesis"], "label_field": "gold_label", "max_train_examples": 24,
                "max_eval_examples": 4, "batch_size": 8, "cache_dir": str(tmp_path / "cache")}  # fmt: skip
    data = ClassificationDataModule(backbone.tokenizer, **settings)
    model = SequenceClassifier(backbone, {"_target_": "torch.optim.AdamW", "lr": 1e-2}, {"_target_": "models.optim.no_schedule"}, labels=data.labels)
    trainer = Trainer(max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False, limit_val_batches=0,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=data)
    run = tmp_path / "teacher"
    ckpt = run / "checkpoints" / "t.ckpt"
    trainer.save_checkpoint(ckpt)
    backbone.save(run / "backbone")
    dm = ClassificationDataModule(backbone.tokenizer, curriculum={"pacing": "anti", "difficulty": "loss",
                                                                  "teacher_ckpt": str(ckpt)}, **settings)  # fmt: skip
    attach_difficulty(dm).setup("fit")
    model.eval()
    expected = []
    with torch.inference_mode():
        for row in range(len(dm.train_features)):
            item = dm.train_features[row]
            batch = {k: torch.tensor([item[k]]) for k in ("input_ids", "attention_mask")}
            expected.append(float(model.encoder(**batch, labels=torch.tensor([item["labels"]])).loss))
    assert dm.train_difficulty == pytest.approx(expected, rel=1e-4, abs=1e-5) and len(set(expected)) > 5
    order = list(dm.train_dataloader().sampler)
    assert [expected[i] for i in order] == sorted(expected, reverse=True)  # anti: hardest first
