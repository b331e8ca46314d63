"""The MRC example cache: a file read and validated once per content, then memory-mapped.

Real files, the real loader and the real datamodule: the table must give back exactly what
``load_mrc_examples`` gives, and a hit must not read the records again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import DataFormatError
from datamodules import mrc_example_cache
from datamodules.mrc import MRCDataModule
from datamodules.mrc_example_cache import ExampleTable, cached_mrc_examples, examples_digest
from datamodules.mrc_feature_cache import as_lists, cached_features
from datamodules.mrc_features import build_train_features
from datamodules.mrc_formats import load_mrc_examples
from models.backbone import train_tokenizer
from tests.conftest import SAMPLE

FLAT = [  # KLUE-style records: no document_id on one, unanswered, a shared passage, text beyond the BMP
    {"guid": "q1", "title": "서울", "context": "서울은 한국의 수도이다. 🌏 지구", "question": "한국의 수도는?",
     "answers": {"answer_start": [0], "text": ["서울"]}, "document_id": 7},
    {"guid": "q2", "title": "서울", "context": "서울은 한국의 수도이다. 🌏 지구", "question": "🌏 다음 단어는?",
     "answers": {"answer_start": [16, 16], "text": ["지구", "지"]}},
    {"guid": "q3", "title": "", "context": "빈 답의 지문", "question": "답이 없는 질문", "answers": []},
]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    return path


def _entries(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "examples").iterdir() if p.is_dir())


def test_table_reads_back_exactly_what_the_loader_returns(tmp_path: Path) -> None:
    for path, options in ((SAMPLE / "train.json", {}),
                          (_write_jsonl(tmp_path / "flat.jsonl", FLAT), {"require_answers": False})):
        loaded = load_mrc_examples(path, **options)
        cold = cached_mrc_examples(path, tmp_path / "cache", **options)
        hit = cached_mrc_examples(path, tmp_path / "cache", **options)
        assert isinstance(hit, ExampleTable) and len(hit) == len(loaded)
        assert list(cold) == list(hit) == loaded  # types too: None document ids, int offsets, empty answers
        assert hit[-1] == loaded[-1] and hit[1:3] == loaded[1:3]
        assert examples_digest(hit) == examples_digest(loaded)  # the feature cache's key needs no pass
    with pytest.raises(IndexError, match="record 3 of 3"):
        hit[3]
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pickle"))


def test_a_hit_does_not_read_the_records_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_jsonl(tmp_path / "flat.jsonl", FLAT)
    first = list(cached_mrc_examples(path, tmp_path / "cache", require_answers=False))

    def fail(*args, **kwargs):
        raise AssertionError("the file was parsed again on a hit")

    monkeypatch.setattr(mrc_example_cache, "load_mrc_examples", fail)
    assert list(cached_mrc_examples(path, tmp_path / "cache", require_answers=False)) == first


def test_entries_follow_the_bytes_and_the_options(tmp_path: Path) -> None:
    cache, path = tmp_path / "cache", _write_jsonl(tmp_path / "flat.jsonl", FLAT)
    cached_mrc_examples(path, cache, require_answers=False)
    cached_mrc_examples(path, cache, require_answers=False)
    assert len(_entries(cache)) == 1
    cached_mrc_examples(path, cache, require_answers=False, normalize="NFC")
    assert len(_entries(cache)) == 2
    edited = [FLAT[0] | {"question": "대한민국의 수도는?"}, *FLAT[1:]]
    _write_jsonl(path, edited)  # same name, new bytes: never the stale records
    assert cached_mrc_examples(path, cache, require_answers=False)[0]["question"] == "대한민국의 수도는?"
    assert len(_entries(cache)) == 3
    # an entry left without its index (a crash mid-write by an older writer) is rebuilt, not read
    for entry in _entries(cache):
        (cache / "examples" / entry / "examples.json").unlink()
    assert list(cached_mrc_examples(path, cache, require_answers=False)) == load_mrc_examples(path, require_answers=False)


def test_a_bad_file_still_fails_naming_the_record_and_caches_nothing(tmp_path: Path) -> None:
    bad = [*FLAT[:2], FLAT[2] | {"answers": {"answer_start": [0], "text": ["없는 답"]}}]
    path = _write_jsonl(tmp_path / "bad.jsonl", bad)
    with pytest.raises(DataFormatError, match="q3") as error:
        cached_mrc_examples(path, tmp_path / "cache")
    assert "bad.jsonl" in str(error.value)
    assert not (tmp_path / "cache" / "examples").exists() or _entries(tmp_path / "cache") == []


def test_list_and_table_share_one_feature_entry(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "flat.jsonl", FLAT)
    tok = train_tokenizer([r["context"] + r["question"] for r in FLAT] * 20, vocab_size=300, min_frequency=1)
    settings = {"max_seq_length": 48, "doc_stride": 16}
    cache = tmp_path / "cache"
    from_list = cached_features(build_train_features, load_mrc_examples(path, require_answers=False), tok, cache,
                                **settings)
    cached_mrc_examples(path, cache, require_answers=False)
    table = cached_mrc_examples(path, cache, require_answers=False)
    assert isinstance(table, ExampleTable)
    from_table = cached_features(build_train_features, table, tok, cache, **settings)
    assert as_lists(from_table) == as_lists(from_list)
    assert len([p for p in (cache / "features").iterdir() if p.is_dir()]) == 1


@pytest.fixture(scope="module")
def tokenizer():
    records = load_mrc_examples(SAMPLE / "train.json")[:400]
    return train_tokenizer([r["context"] + " " + r["question"] for r in records], vocab_size=1500)


def _datamodule(tokenizer, cache: Path) -> MRCDataModule:
    dm = MRCDataModule(tokenizer, train_file=str(SAMPLE / "train.json"), validation_file=str(SAMPLE / "validation.json"),
                       max_seq_length=128, doc_stride=32, max_train_examples=200, max_eval_examples=30,
                       cache_dir=str(cache), curriculum={"pacing": "sorted"})
    dm.setup("fit")
    return dm


def test_datamodule_second_setup_maps_examples_and_features(tokenizer, tmp_path: Path) -> None:
    first, second = _datamodule(tokenizer, tmp_path), _datamodule(tokenizer, tmp_path)
    assert len(_entries(tmp_path)) == 2  # train and validation, each read once
    assert second.train_features is not None and first.train_features is not None
    assert [second.train_features[i] for i in range(len(second.train_features))] == [
        first.train_features[i] for i in range(len(first.train_features))
    ]
    assert second.train_difficulty == first.train_difficulty
    assert list(second.eval_examples("validation")) == load_mrc_examples(SAMPLE / "validation.json")[:30]
    assert isinstance(second.load_examples("train", require_answers=True, limited=False), ExampleTable)
    # check_files (run before training) writes the entry setup() then maps
    MRCDataModule.check_files({"train_file": str(SAMPLE / "validation.json"), "cache_dir": str(tmp_path / "c2")},
                              ["train"])
    assert len(_entries(tmp_path / "c2")) == 1
