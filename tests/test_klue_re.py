"""KLUE-RE: entity records (objects and CSV strings), the four markings, particles, entity positions, runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from core.errors import DataFormatError
from datamodules.klue_re import KlueREDataModule
from models.backbone import SPECIAL_TOKENS
from tests.conftest import ROOT, TINY_LOOP, TINY_RUN, read_json, run_main

RE_SAMPLE = ROOT / "data" / "re_sample"
SENTENCE = "비틀즈가 조지 해리슨을 좋아했다."
RECORD = {
    "guid": "r0",
    "sentence": SENTENCE,
    "subject_entity": {"word": "비틀즈", "start_idx": 0, "end_idx": 2, "type": "ORG"},
    "object_entity": {"word": "조지 해리슨", "start_idx": 5, "end_idx": 10, "type": "PER"},
    "label": "org:members",
}
WORDS = ["비틀즈", "가", "##가", "조지", "해리슨", "을", "##을", "좋아했다", ".", "단체", "사람", "관계", "없음"]


def word_piece() -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer with a fixed vocabulary: particles exist both word-initially and as ``##`` pieces."""
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS.values(), *WORDS])}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)


def datamodule(tmp_path: Path, records: list[dict], **settings) -> KlueREDataModule:
    path = tmp_path / "re.json"
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    settings.setdefault("label_map", ["no_relation", "org:members"])
    return KlueREDataModule(word_piece(), train_file=str(path), validation_file=str(path), **settings)


def encoded(dm: KlueREDataModule) -> tuple[list[str], int, int]:
    dm.setup("validate")
    features = dm._eval["validation"][1][0]
    tokens = dm.tokenizer.convert_ids_to_tokens(features["input_ids"])
    return tokens, features["subject_index"], features["object_index"]


@pytest.mark.parametrize(
    ("marking", "marked", "subject_token", "object_token"),
    [
        ("none", SENTENCE, "비틀즈", "조지"),
        ("entity_marker", "<subj>비틀즈</subj>가 <obj>조지 해리슨</obj>을 좋아했다.", "<subj>", "<obj>"),
        ("typed_entity_marker", "<S:ORG>비틀즈</S:ORG>가 <O:PER>조지 해리슨</O:PER>을 좋아했다.", "<S:ORG>", "<O:PER>"),
        ("typed_entity_marker_punct", "@*단체*비틀즈@가 #^사람^조지 해리슨#을 좋아했다.", "@", "#"),
    ],
)
def test_markings_and_entity_start_positions(tmp_path: Path, marking: str, marked: str, subject_token: str,
                                             object_token: str) -> None:
    dm = datamodule(tmp_path, [RECORD], marking=marking, type_names={"ORG": "단체", "PER": "사람"})
    example = dm.load("validation", labels="all")[0]
    assert dm.mark(example)[0] == marked
    tokens, subject, obj = encoded(dm)
    assert (tokens[subject], tokens[obj]) == (subject_token, object_token)
    assert "[UNK]" not in tokens  # marker tokens were added where the vocabulary lacked them
    if marking != "none":  # the particles glued after the end markers are word continuations, as in KLUE's baseline
        assert tokens[tokens.index("비틀즈") + 2] == "##가" and "##을" in tokens


def test_particles_stay_split_without_the_fix(tmp_path: Path) -> None:
    tokens, _, _ = encoded(datamodule(tmp_path, [RECORD], marking="entity_marker", fix_particles=False))
    assert tokens[tokens.index("</subj>") + 1] == "가"


def test_query_segment_and_truncation(tmp_path: Path) -> None:
    tokens, subject, obj = encoded(datamodule(tmp_path, [RECORD], marking="none", entity_query=True))
    assert tokens[:5] == ["[CLS]", "비틀즈", "[SEP]", "조지", "해리슨"]
    assert tokens[subject] == "비틀즈" and subject > tokens.index("[SEP]")  # the sentence's entity, not the query's
    tokens, subject, obj = encoded(datamodule(tmp_path, [RECORD], marking="entity_marker", max_seq_length=5))
    assert tokens[subject] == "<subj>" and obj == 0  # the object marker was cut off: pool [CLS]


def test_csv_string_entities_read_like_objects(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:  # the competition CSV: Python-literal entities
        writer = csv.DictWriter(handle, ["id", "sentence", "subject_entity", "object_entity", "label", "source"])
        writer.writeheader()
        writer.writerow({"id": "r0", "sentence": SENTENCE, "subject_entity": str(RECORD["subject_entity"]),
                         "object_entity": str(RECORD["object_entity"]), "label": "org:members", "source": "x"})
    from_csv = KlueREDataModule(word_piece(), train_file=str(path), id_field="id", label_map=["no_relation", "org:members"])
    from_json = datamodule(tmp_path, [RECORD])
    assert from_csv.load("train", "all") == from_json.load("train", "all")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"subject_entity": {"word": "비틀즈", "start_idx": 1, "end_idx": 3, "type": "ORG"}}, "is not at start_idx"),
        ({"object_entity": {"word": "비틀즈", "start_idx": 0, "end_idx": 2, "type": "ORG"}}, "overlap"),
        ({"object_entity": "{'word': '조지'"}, "not an entity object"),
        ({"object_entity": {"word": "조지"}}, "must have"),
    ],
)
def test_bad_entities_name_the_record(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(DataFormatError, match=message) as error:
        datamodule(tmp_path, [{**RECORD, **change}]).load("train", "all")
    assert "record r0" in str(error.value)


def test_typed_markers_need_known_types_and_augmentation_moves_entities(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="entity_types"):
        datamodule(tmp_path, [RECORD], marking="typed_entity_marker", entity_types=["PER"]).load("train", "all")
    dm = KlueREDataModule(word_piece(), train_file=str(RE_SAMPLE / "train.json"), validation_file=str(RE_SAMPLE / "validation.json"),
                          label_map=str(RE_SAMPLE / "relation_list.json"), max_train_examples=40,
                          augment={"name": "eda", "copies": 2, "delete_prob": 0.5})
    train, _ = dm.train_and_validation()
    variants = dm.augmented(train[:40])[40:]
    assert len(variants) == 80 and any(v["texts"] != o["texts"] for v, o in zip(variants[::2], train, strict=False))
    for variant in variants:
        for entity in variant["entities"]:
            assert variant["texts"][0][entity["start"]:entity["end"]] == entity["word"]


def test_re_focal_runs_end_to_end_then_reads_a_csv_with_the_saved_backbone(tmp_path: Path) -> None:
    run_dir, cache = tmp_path / "fit", tmp_path / "cache"
    run_main("+experiment=re_focal", *TINY_RUN, run_dir=run_dir, cache_dir=cache)
    metrics = read_json(run_dir / "metrics.json")
    assert {"micro_f1", "auprc", "accuracy", "macro_f1"} <= set(metrics)
    assert Path(metrics["best_checkpoint"]).name.startswith("epoch00-f1")  # checkpoints on val_micro_f1
    predictions = read_json(run_dir / "predictions.json")
    assert len(predictions) == 12 and len(predictions[0]["probabilities"]) == 12
    assert list(read_json(run_dir / "label_map.json")) == read_json(RE_SAMPLE / "relation_list.json")["relations"]
    # the competition CSV layout, entity_marker (new special tokens: the embeddings grow), [CLS] pooling
    rows = read_json(RE_SAMPLE / "validation.json")[:40]
    csv_file = tmp_path / "train.csv"
    with csv_file.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, ["id", "sentence", "subject_entity", "object_entity", "label", "source"])
        writer.writeheader()
        for r in rows:
            writer.writerow({"id": r["guid"], "sentence": r["sentence"], "subject_entity": str(r["subject_entity"]),
                             "object_entity": str(r["object_entity"]), "label": r["label"], "source": r["source"]})
    run_main(
        "+experiment=re_focal", *TINY_LOOP, "backbone=local", f"backbone.name_or_path={run_dir / 'backbone'}",
        f"datamodule.train_file={csv_file}", f"datamodule.validation_file={csv_file}", "datamodule.id_field=id",
        "datamodule.marking=entity_marker", "datamodule.pooling=cls", "model/loss=label_smoothing",
        run_dir=tmp_path / "csv", cache_dir=cache,
    )
    assert [p["id"] for p in read_json(tmp_path / "csv" / "predictions.json")] == [r["guid"] for r in rows[:12]]
