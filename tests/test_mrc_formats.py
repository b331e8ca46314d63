"""Every MRC input format loads to the same records, and every bad input fails with a clear message."""

from __future__ import annotations

import json
import pickle
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from core.errors import DataFormatError
from datamodules.mrc_formats import MRCExample, examples_by_id, load_mrc_examples, to_squad_json

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

CONTEXT_A = "대한민국의 수도는 서울이다. 서울의 인구는 약 천만 명이다."
CONTEXT_B = "세종은 1418년에 즉위하였다."


def _example(ex_id: str, title: str, context: str, question: str, answer: str, doc: str) -> MRCExample:
    return MRCExample(
        id=ex_id,
        title=title,
        context=context,
        question=question,
        answers=[{"text": answer, "answer_start": context.index(answer)}],
        document_id=doc,
    )


EXPECTED = [
    _example("mrc-0", "대한민국", CONTEXT_A, "대한민국의 수도는?", "서울", "101"),
    _example("mrc-1", "대한민국", CONTEXT_A, "서울의 인구는?", "약 천만 명", "101"),
    _example("mrc-2", "세종", CONTEXT_B, "세종이 즉위한 해는?", "1418년", "202"),
]


# ------------------------------------------------------------------------------------ writers


def _write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _squad_document() -> dict[str, Any]:
    """Written by hand (not with to_squad_json) so the reader is tested independently."""

    def qa(ex: MRCExample) -> dict[str, Any]:
        return {"id": ex["id"], "question": ex["question"], "answers": ex["answers"], "is_impossible": False}

    a0, a1, b0 = EXPECTED
    return {
        "version": "KorQuAD_v1.0",
        "data": [
            {
                "title": "대한민국",
                "paragraphs": [{"context": CONTEXT_A, "document_id": "101", "qas": [qa(a0), qa(a1)]}],
            },
            {"title": "세종", "paragraphs": [{"context": CONTEXT_B, "document_id": "202", "qas": [qa(b0)]}]},
        ],
    }


def _klue_record(ex: MRCExample, **overrides: Any) -> dict[str, Any]:
    record = {
        "guid": ex["id"],
        "title": ex["title"],
        "context": ex["context"],
        "news_category": "종합",
        "source": "hankyung",
        "question": ex["question"],
        "question_type": 1,
        "is_impossible": False,
        "answers": {
            "answer_start": [a["answer_start"] for a in ex["answers"]],
            "text": [a["text"] for a in ex["answers"]],
        },
        "document_id": ex["document_id"],
    }
    record.update(overrides)
    return record


def _boostcamp_row(ex: MRCExample, *, int_doc_id: bool = False) -> dict[str, Any]:
    doc = ex["document_id"]
    return {
        "id": ex["id"],
        "title": ex["title"],
        "context": ex["context"],
        "question": ex["question"],
        "answers": {
            "answer_start": [a["answer_start"] for a in ex["answers"]],
            "text": [a["text"] for a in ex["answers"]],
        },
        "document_id": int(doc) if int_doc_id and doc is not None else doc,
    }


def _records(rows: list[dict[str, Any]], **overrides: Any) -> list[dict[str, Any]]:
    """KLUE records for EXPECTED with ``overrides`` applied to the second record (id mrc-1)."""
    out = [dict(r) for r in rows]
    out[1].update(overrides)
    return out


def _klue_rows() -> list[dict[str, Any]]:
    return [_klue_record(ex) for ex in EXPECTED]


def _save_dataset(path: Path, rows: list[dict[str, Any]]) -> Path:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def _save_dataset_dict(path: Path, splits: dict[str, list[dict[str, Any]]]) -> Path:
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})
    dd.save_to_disk(str(path))
    return path


def _assert_clear_error(exc: DataFormatError, path: Path, record: str | None, *needles: str) -> str:
    """The contract main.py relies on: path, record id and a fix, all in one message."""
    message = str(exc)
    assert str(path) in message
    if record is not None:
        assert f"record {record}" in message
    assert "fix:" in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


# ------------------------------------------------------------------------------------ errors.py


def test_data_format_error_message_and_pickle() -> None:
    err = DataFormatError("data/train.json", "q-7", "has no 'question'", "add a question")
    assert str(err) == "data/train.json: record q-7: has no 'question'\n  fix: add a question"
    assert isinstance(err, ValueError)
    whole_file = DataFormatError(Path("x.json"), None, "file is empty", "re-download it")
    assert str(whole_file) == "x.json: file is empty\n  fix: re-download it"
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.path, clone.record, clone.problem, clone.fix) == (
        err.path,
        err.record,
        err.problem,
        err.fix,
    )


# ------------------------------------------------------------------------------------ formats


def test_every_format_loads_to_the_same_records(tmp_path: Path) -> None:
    rows = [_boostcamp_row(ex, int_doc_id=True) for ex in EXPECTED]
    sources = {
        "squad": (_write_json(tmp_path / "squad.json", _squad_document()), None),
        "klue list": (_write_json(tmp_path / "klue.json", _klue_rows()), None),
        "klue data": (
            _write_json(tmp_path / "klue_data.json", {"version": "1.1", "data": _klue_rows()}),
            None,
        ),
        "klue jsonl": (_write_jsonl(tmp_path / "klue.jsonl", _klue_rows()), None),
        "boostcamp jsonl": (
            _write_jsonl(tmp_path / "flat.jsonl", [_boostcamp_row(e) for e in EXPECTED]),
            None,
        ),
        "jsonl named .json": (_write_jsonl(tmp_path / "lines.json", _klue_rows()), None),
        "dataset dir": (_save_dataset(tmp_path / "ds", rows), None),
        "datasetdict dir": (
            _save_dataset_dict(tmp_path / "dd", {"train": rows, "validation": rows[:1]}),
            "train",
        ),
    }
    for name, (path, split) in sources.items():
        assert load_mrc_examples(path, split=split) == EXPECTED, name


def test_datasetdict_splits(tmp_path: Path) -> None:
    rows = [_boostcamp_row(ex) for ex in EXPECTED]
    multi = _save_dataset_dict(tmp_path / "dd", {"train": rows, "validation": rows[2:]})
    assert load_mrc_examples(multi, split="validation") == EXPECTED[2:]
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(multi)
    _assert_clear_error(exc.value, multi, None, "'train'", "'validation'", "split=")
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(multi, split="test")
    _assert_clear_error(exc.value, multi, None, "'test'", "'train'")
    single = _save_dataset_dict(tmp_path / "single", {"validation": rows})
    assert load_mrc_examples(single) == EXPECTED


def test_klue_without_document_id_and_int_ids(tmp_path: Path) -> None:
    rows = [{k: v for k, v in _klue_record(ex).items() if k != "document_id"} for ex in EXPECTED]
    rows[0]["guid"] = 7
    loaded = load_mrc_examples(_write_json(tmp_path / "klue.json", rows))
    assert [ex["document_id"] for ex in loaded] == [None, None, None]
    assert loaded[0]["id"] == "7"


def test_impossible_and_unanswered_questions(tmp_path: Path) -> None:
    impossible = _records(_klue_rows(), is_impossible=True, answers={"answer_start": [], "text": []})
    assert load_mrc_examples(_write_json(tmp_path / "imp.json", impossible))[1]["answers"] == []
    # KLUE's plausible answers of impossible questions are not gold spans: dropped.
    plausible = _records(_klue_rows(), is_impossible=True)
    assert load_mrc_examples(_write_json(tmp_path / "plausible.json", plausible))[1]["answers"] == []
    # Test files: no answers key at all, or empty answers.
    no_key = [{k: v for k, v in _boostcamp_row(ex).items() if k != "answers"} for ex in EXPECTED]
    empty = [dict(_boostcamp_row(ex), answers={"answer_start": [], "text": []}) for ex in EXPECTED]
    for name, rows in {"no_key": no_key, "empty": empty}.items():
        path = _write_jsonl(tmp_path / f"{name}.jsonl", rows)
        loaded = load_mrc_examples(path, require_answers=False)
        assert [ex["answers"] for ex in loaded] == [[], [], []]
        with pytest.raises(DataFormatError) as exc:
            load_mrc_examples(path)
        _assert_clear_error(exc.value, path, "mrc-0", "no answers", "require_answers=False")


# ------------------------------------------------------------------------------------ error cases

# (file name, content, record id in the message, extra text the message must contain)
BAD_RECORDS: dict[str, tuple[list[dict[str, Any]], str, tuple[str, ...]]] = {
    "no_question": (_records(_klue_rows(), question=None), "mrc-1", ("'question'",)),
    "blank_question": (_records(_klue_rows(), question="   "), "mrc-1", ("'question'", "empty")),
    "no_context": (_records(_klue_rows(), context=None), "mrc-1", ("'context'",)),
    "blank_context": (_records(_klue_rows(), context=""), "mrc-1", ("'context'", "empty")),
    "no_id": (_records(_klue_rows(), guid=None), "#1", ("'id'",)),
    "duplicate_id": (_records(_klue_rows(), guid="mrc-0"), "mrc-0", ("duplicate", "#0", "#1")),
    "start_not_int": (
        _records(_klue_rows(), answers={"answer_start": ["10"], "text": ["서울"]}),
        "mrc-1",
        ("answer_start", "integer"),
    ),
    "start_float": (
        _records(_klue_rows(), answers={"answer_start": [10.0], "text": ["서울"]}),
        "mrc-1",
        ("answer_start", "integer"),
    ),
    "start_negative": (
        _records(_klue_rows(), answers={"answer_start": [-1], "text": ["서울"]}),
        "mrc-1",
        ("negative",),
    ),
    "start_beyond": (
        _records(_klue_rows(), answers={"answer_start": [500], "text": ["서울"]}),
        "mrc-1",
        ("beyond the end", f"length {len(CONTEXT_A)}"),
    ),
    "text_elsewhere": (
        _records(_klue_rows(), answers={"answer_start": [CONTEXT_A.index("서울") + 1], "text": ["서울"]}),
        "mrc-1",
        ("does not match", f"offset {CONTEXT_A.index('서울')}", "set answer_start to"),
    ),
    "text_nowhere": (
        _records(_klue_rows(), answers={"answer_start": [0], "text": ["부산"]}),
        "mrc-1",
        ("does not occur anywhere",),
    ),
    "answers_length_mismatch": (
        _records(_klue_rows(), answers={"answer_start": [0, 3], "text": ["대한민국"]}),
        "mrc-1",
        ("1 texts but 2 answer_start",),
    ),
    "answers_wrong_type": (_records(_klue_rows(), answers="서울"), "mrc-1", ("'answers'",)),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_bad_record_errors(tmp_path: Path, case: str) -> None:
    rows, record, needles = BAD_RECORDS[case]
    path = _write_json(tmp_path / f"{case}.json", rows)
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(path)
    _assert_clear_error(exc.value, path, record, *needles)
    assert exc.value.record == record


def test_bad_squad_record_names_qa_id(tmp_path: Path) -> None:
    document = _squad_document()
    del document["data"][1]["paragraphs"][0]["qas"][0]["question"]
    path = _write_json(tmp_path / "squad.json", document)
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(path)
    _assert_clear_error(exc.value, path, "mrc-2", "'question'")
    del document["data"][1]["paragraphs"][0]["qas"][0]["id"]
    _write_json(path, document)
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(path)
    _assert_clear_error(exc.value, path, "#2 (data[1].paragraphs[0].qas[0])", "'id'")
    del document["data"][0]["paragraphs"]
    _write_json(path, document)
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(path)
    _assert_clear_error(exc.value, path, "data[0]", "'paragraphs'")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "train.json"
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(path)
    _assert_clear_error(exc.value, path, None, "does not exist")


def test_truncated_json_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    text = json.dumps(_squad_document(), ensure_ascii=False, indent=2)
    path.write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(path)
    _assert_clear_error(exc.value, path, None, "not valid JSON", "line ", "column ", "truncated")


def test_invalid_json_in_the_middle_is_not_called_truncated(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text('{"version": "1.1",\n "data": [,]}\n', encoding="utf-8")
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(path)
    message = _assert_clear_error(exc.value, path, None, "line 2, column")
    assert "truncated" not in message


def test_bad_json_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in _klue_rows()]
    path.write_text(lines[0] + "\n" + lines[1][:30] + "\n" + lines[2] + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(path)
    _assert_clear_error(exc.value, path, "line 2", "column")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(path)
    _assert_clear_error(exc.value, path, None, "empty")


def test_wrong_top_level_keys(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "train.json", {"version": "1.1", "articles": []})
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(path)
    _assert_clear_error(exc.value, path, None, "'version', 'articles'", "'data'", "context")


def test_unknown_record_layout(tmp_path: Path) -> None:
    rows = [{"guid": "re-0", "sentence": "...", "subject_entity": {}, "label": "no_relation"}]
    path = _write_json(tmp_path / "re.json", rows)
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(path)
    _assert_clear_error(exc.value, path, None, "'sentence'", "'subject_entity'", "question")


def test_directory_that_is_not_a_saved_dataset(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(tmp_path)
    _assert_clear_error(exc.value, tmp_path, None, "save_to_disk", "notes.txt")


def test_real_klue_nli_file_is_a_wrong_schema() -> None:
    path = SHARED_DATA / "klue-nli-v1.1_dev.json"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(path)
    message = _assert_clear_error(exc.value, path, None, "'guid'", "'premise'", "'hypothesis'")
    assert "unknown MRC layout" in message


# ------------------------------------------------------------------------------------ Unicode


def _nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def test_nfd_context_with_nfc_answer_is_explained(tmp_path: Path) -> None:
    """Offsets computed on the NFC text, context stored decomposed (a common macOS accident)."""
    rows = _records(_klue_rows(), context=_nfd(CONTEXT_A))
    path = _write_json(tmp_path / "nfd.json", rows)
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(path)
    message = _assert_clear_error(exc.value, path, "mrc-1", "NFC", "NFD", "normalisation")
    assert 'unicodedata.normalize("NFC"' in exc.value.fix
    assert f"offset {CONTEXT_A.index('약 천만 명')}" in message

    fixed = load_mrc_examples(path, normalize="NFC")
    assert fixed == EXPECTED


def test_nfc_context_with_nfd_answer_is_explained(tmp_path: Path) -> None:
    start = CONTEXT_A.index("서울")
    rows = _records(_klue_rows(), answers={"answer_start": [start], "text": [_nfd("서울")]})
    path = _write_json(tmp_path / "nfd_answer.json", rows)
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(path)
    _assert_clear_error(exc.value, path, "mrc-1", "NFC", "NFD")
    fixed = load_mrc_examples(path, normalize="NFC")
    assert fixed[1]["answers"] == [{"text": "서울", "answer_start": start}]


def test_normalize_remaps_offsets_counted_in_the_stored_nfd_context(tmp_path: Path) -> None:
    """answer_start counted in the decomposed context is remapped via NFC(context[:answer_start])."""
    nfd_context = _nfd(CONTEXT_A)
    nfd_start = nfd_context.index(_nfd("약 천만 명"))
    assert nfd_start != CONTEXT_A.index("약 천만 명")
    rows = _records(
        _klue_rows(),
        context=nfd_context,
        question=_nfd("서울의 인구는?"),
        title=_nfd("대한민국"),
        answers={"answer_start": [nfd_start], "text": [_nfd("약 천만 명")]},
    )
    path = _write_json(tmp_path / "all_nfd.json", rows)
    assert load_mrc_examples(path)[1]["answers"][0]["answer_start"] == nfd_start  # consistent: strict is OK
    assert load_mrc_examples(path, normalize="NFC") == EXPECTED


def test_normalize_still_reports_wrong_offsets(tmp_path: Path) -> None:
    rows = _records(_klue_rows(), context=_nfd(CONTEXT_A), answers={"answer_start": [0], "text": ["서울"]})
    path = _write_json(tmp_path / "bad.json", rows)
    with pytest.raises(DataFormatError) as exc:
        load_mrc_examples(path, normalize="NFC")
    _assert_clear_error(exc.value, path, "mrc-1", "NFC-normalised", f"offset {CONTEXT_A.index('서울')}")


def test_invalid_normalize_argument(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "klue.json", _klue_rows())
    with pytest.raises(ValueError, match="normalize"):
        load_mrc_examples(path, normalize="nfc")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ helpers


def test_to_squad_json_round_trip(tmp_path: Path) -> None:
    unanswered = MRCExample(
        id="mrc-3",
        title="세종",
        context=CONTEXT_B,
        question="세종의 아버지는?",
        answers=[],
        document_id="202",
    )
    examples = [*EXPECTED, unanswered]
    document = to_squad_json(examples)
    assert document["version"] == "1.1"
    assert [a["title"] for a in document["data"]] == ["대한민국", "세종"]
    assert [len(a["paragraphs"]) for a in document["data"]] == [1, 1]
    assert document["data"][1]["paragraphs"][0]["document_id"] == "202"
    path = _write_json(tmp_path / "gold.json", document)
    assert load_mrc_examples(path) == examples
    # the output must not alias the input examples
    document["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["text"] = "changed"
    assert EXPECTED[0]["answers"][0]["text"] == "서울"


def test_to_squad_json_groups_interleaved_titles(tmp_path: Path) -> None:
    shuffled = [EXPECTED[0], EXPECTED[2], EXPECTED[1]]
    document = to_squad_json(shuffled)
    assert [len(p["qas"]) for a in document["data"] for p in a["paragraphs"]] == [2, 1]
    reloaded = load_mrc_examples(_write_json(tmp_path / "gold.json", document))
    assert examples_by_id(reloaded) == examples_by_id(shuffled)


def test_examples_by_id() -> None:
    by_id = examples_by_id(EXPECTED)
    assert list(by_id) == ["mrc-0", "mrc-1", "mrc-2"]
    assert by_id["mrc-2"] is EXPECTED[2]
    with pytest.raises(ValueError, match="mrc-0"):
        examples_by_id([EXPECTED[0], EXPECTED[0]])
