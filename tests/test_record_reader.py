"""core.record_files: the one reader of JSON / JSON Lines / CSV / TSV / save_to_disk data, and its JSON Lines rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import DataFormatError
from core.record_files import MissingDataError, iter_texts, read_record_file, read_records, read_source
from datamodules.mrc_formats import load_mrc_examples

ROWS = [
    {"id": "r0", "sentence": "훈란강은 류요산에서 발원한다.", "label": "yes"},
    {"id": "r1", "sentence": "세루중공업의 창업자는 남율람이다.", "label": "no"},
]
MRC_ROW = {"id": "q0", "title": "t", "context": "가나다라", "question": "무엇?", "answers": [{"text": "나다", "answer_start": 1}]}


def _jsonl(path: Path, rows: list, blank_lines: bool = False) -> Path:
    sep = "\n\n" if blank_lines else "\n"
    path.write_text(sep.join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def _json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def _assert_error(error: DataFormatError, path: Path, record: str | None, *needles: str) -> None:
    message = str(error)
    assert str(path) in message and "fix:" in message
    assert error.record == record
    if record is not None:
        assert f"record {record}" in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


# ----------------------------------------------------------------------------- every format


def test_every_format_gives_the_same_records(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    sources = {
        "list": _json(tmp_path / "list.json", ROWS),
        "data": _json(tmp_path / "data.json", {"version": "1", "data": ROWS}),
        "jsonl": _jsonl(tmp_path / "rows.jsonl", ROWS, blank_lines=True),
        "ndjson": _jsonl(tmp_path / "rows.ndjson", ROWS),
        "jsonl named .json": _jsonl(tmp_path / "lines.json", ROWS),
    }
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("\ufeffid,sentence,label\nr0,훈란강은 류요산에서 발원한다.,yes\nr1,세루중공업의 창업자는 남율람이다.,no\n",
                        encoding="utf-8")
    tsv_path = tmp_path / "rows.tsv"
    tsv_path.write_text("id\tsentence\tlabel\nr0\t훈란강은 류요산에서 발원한다.\tyes\n\nr1\t세루중공업의 창업자는 남율람이다.\tno\n",
                        encoding="utf-8")
    sources |= {"csv": csv_path, "tsv": tsv_path}
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dd"))
    sources |= {"dataset": tmp_path / "ds", "one-split DatasetDict": tmp_path / "dd"}
    for name, path in sources.items():
        assert read_records(path) == ROWS, name


def test_locations_features_and_formats(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    assert read_record_file(_jsonl(tmp_path / "a.jsonl", ROWS, blank_lines=True)).locations == ["line 1", "line 3"]
    squad = read_record_file(_json(tmp_path / "s.json", {"version": "v", "data": ROWS}))
    assert (squad.format, squad.key, squad.locations, squad.document["version"]) == ("json", "data", ["data[0]", "data[1]"], "v")
    assert read_record_file(_json(tmp_path / "l.json", ROWS)).locations == ["[0]", "[1]"]
    csv_path = tmp_path / "multi.csv"
    csv_path.write_text('id,sentence\nr0,"two\nlines"\nr1,one\n', encoding="utf-8")
    table = read_record_file(csv_path)
    assert table.locations == ["line 2", "line 4"] and table.records[0]["sentence"] == "two\nlines"
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "validation": datasets.Dataset.from_list(ROWS[:1])})
    dd.save_to_disk(str(tmp_path / "dd"))
    validation = read_record_file(tmp_path / "dd", split="validation")
    assert validation.records == ROWS[:1] and validation.locations == ["#0"] and "label" in validation.features


# ----------------------------------------------------------------------------- the JSON Lines rule


def test_a_one_record_json_lines_file_is_one_record_for_every_reader(tmp_path: Path) -> None:
    """The rule: a .jsonl file is one record per non-blank line, one line included; MRC, classification and the
    tokenizer's text walk read it alike."""
    for suffix in (".jsonl", ".jsonlines", ".ndjson"):
        path = _jsonl(tmp_path / f"one{suffix}", [MRC_ROW])
        assert read_records(path) == [MRC_ROW], suffix
        assert [ex["id"] for ex in load_mrc_examples(path)] == ["q0"], suffix
        assert list(iter_texts([path], ["context"])) == ["가나다라"], suffix


def test_a_one_object_json_file_is_a_document_not_one_record(tmp_path: Path) -> None:
    """The same line in a .json file is a JSON document: neither loader takes its "answers" list for the records."""
    path = _jsonl(tmp_path / "one.json", [MRC_ROW])
    with pytest.raises(DataFormatError) as error:
        read_records(path)
    _assert_error(error.value, path, None, "one JSON object", "'answers'", ".jsonl")
    with pytest.raises(DataFormatError) as error:
        load_mrc_examples(path)
    _assert_error(error.value, path, None, "unknown MRC layout")
    # a one-line KorQuAD-style document stays a document
    squad = {"version": "1", "data": [{"title": "t", "paragraphs": [{"context": "가나다라", "qas": [
        {"id": "q0", "question": "무엇?", "answers": [{"text": "나다", "answer_start": 1}]}]}]}]}
    one_line = tmp_path / "squad.json"
    one_line.write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    assert [ex["id"] for ex in load_mrc_examples(one_line)] == ["q0"]


# ----------------------------------------------------------------------------- errors name file, record and fix


def test_missing_path_is_a_file_not_found_and_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "missing.json"
    with pytest.raises(MissingDataError) as error:
        read_records(path)
    assert isinstance(error.value, FileNotFoundError) and isinstance(error.value, DataFormatError)
    _assert_error(error.value, path, None, "does not exist")


@pytest.mark.parametrize(
    ("name", "text", "record", "needles"),
    [
        ("empty.json", "\n \n", None, ("empty",)),
        ("cut.json", '[{"id": "r0", "sentence": "가', None, ("line 1", "column", "truncated")),
        ("bad.json", '[{"id": "r0"},\n ,]', None, ("line 2, column", "json.tool")),
        ("bad.jsonl", '{"id": "r0"}\n{"id": \n', "line 2", ("not valid JSON Lines", "one complete JSON object")),
        ("bad_lines.json", '{"id": "r0"}\n{"id": "r1"}\n{"id"\n', "line 3", ("not valid JSON Lines",)),
        ("scalars.jsonl", '{"id": "r0"}\n3\n', "line 2", ("is a int", "JSON object")),
        ("nested.json", '[{"id": "r0"}, [1]]', "[1]", ("is a list",)),
        ("empty_list.json", "[]", None, ("no records",)),
        ("number.json", "3", None, ("int", "JSON list")),
        ("wrapped.json", '{"examples": [{"id": "r0"}]}', None, ("one JSON object", "'examples'", '"data"')),
        ("header.csv", "id,sentence\n", None, ("no records",)),
        ("ragged.csv", "id,sentence\nr0,a,b\n", "line 2", ("3 cells", "quote")),
    ],
)
def test_errors_name_the_file_the_record_and_the_fix(tmp_path: Path, name: str, text: str, record: str | None,
                                                     needles: tuple[str, ...]) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataFormatError) as error:
        read_records(path)
    _assert_error(error.value, path, record, *needles)


def test_not_utf8_and_splits_and_directories(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    cp949 = tmp_path / "cp949.json"
    cp949.write_bytes(json.dumps(ROWS, ensure_ascii=False).encode("cp949"))
    with pytest.raises(DataFormatError) as error:
        read_records(cp949)
    _assert_error(error.value, cp949, None, "not UTF-8", "iconv")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS)})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataFormatError) as error:
        read_records(tmp_path / "dd")
    _assert_error(error.value, tmp_path / "dd", None, "'train'", "split=")
    with pytest.raises(DataFormatError) as error:
        read_records(tmp_path / "dd", split="validation")
    _assert_error(error.value, tmp_path / "dd", None, "'validation'", "'test'")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(DataFormatError) as error:
        read_records(plain)
    _assert_error(error.value, plain, None, "save_to_disk", "notes.txt")


def test_read_source_leaves_a_document_uninterpreted(tmp_path: Path) -> None:
    source = read_source(_json(tmp_path / "doc.json", {"a": {"b": 1}}))
    assert (source.format, source.value, source.locations) == ("json", {"a": {"b": 1}}, [])
    rows = read_source(_jsonl(tmp_path / "rows.jsonl", [1, "x"]))
    assert (rows.format, rows.value, rows.locations) == ("jsonl", [1, "x"], ["line 1", "line 2"])


def test_iter_texts_walks_every_format(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    expected = [r["sentence"] for r in ROWS]
    assert list(iter_texts([_json(tmp_path / "a.json", {"data": ROWS})], ["sentence"])) == expected
    assert list(iter_texts([_jsonl(tmp_path / "a.json", ROWS)], ["sentence"])) == expected  # JSON Lines named .json
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert list(iter_texts([tmp_path / "dd"], ["sentence", "id"])) == ["r0", "r1", *expected, "r0", expected[0]]
