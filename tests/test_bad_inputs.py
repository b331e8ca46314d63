"""A catalogue of bad inputs, each run as a user runs it: ``python main.py ...`` in a real process of its
own (tests/main_process.py).

Every case must end with exit code 1, no Python traceback, and a message that names the file (or the config
key), the record (id or line) where there is one, and the fix; and no ``metrics.json``. Most cases fail in
the verbs' preflight (the datamodule class's ``check_files``), ``task=score`` or ``task=retrieve`` before any
tokenizer or model is built (a few seconds each); the checkpoint cases reuse the session's ``fitted_run``.

Decisions these tests pin down:

* An NFD answer against an NFC context (or the reverse) is an error, not a silent repair: scores compare
  the stored text verbatim, so normalising behind the user's back would change what is scored. The
  message says that normalisation explains it; ``datamodule.normalize=NFC`` normalises everything.
* A question longer than the window is cut to ``datamodule.max_query_length`` tokens (as BERT's SQuAD
  code does); only when even the cut question leaves no room for the context is it an error.
* Predicted ids that are not questions of the gold file mean the predictions were made for another file.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from datamodules.mrc_formats import load_mrc_examples, to_squad_json
from tests.conftest import ROOT, SAMPLE, TINY_LOOP, TINY_RUN, read_json, run_main

NLI = ROOT / "data" / "nli_sample"
# (main.py overrides, what stderr must name: the file or key, the record, the problem, the fix)
Case = tuple[list[str], list[str]]
FIRST = load_mrc_examples(SAMPLE / "train.json")[:4]
FIRST_ID = FIRST[0]["id"]


def write(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False), "utf-8")
    return path


def squad(tmp_path: Path, mutate: Callable[[dict[str, Any]], Any]) -> Path:
    """Four questions of the embedded training set in SQuAD layout, ``mutate``d (a change to the first)."""
    document = to_squad_json(FIRST)
    mutate(document)
    return write(tmp_path / "bad.json", document)


def qas(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [qa for article in document["data"] for par in article["paragraphs"] for qa in par["qas"]]


def first_paragraph(document: dict[str, Any]) -> dict[str, Any]:
    return document["data"][0]["paragraphs"][0]


def first_answer(document: dict[str, Any]) -> dict[str, Any]:
    return qas(document)[0]["answers"][0]


def train(path: Path) -> list[str]:
    """A fit on ``path``: main.py's preflight reads it before the tokenizer, the model or torch."""
    return [*TINY_RUN, f"datamodule.train_file={path}"]


# ----------------------------------------------------------------------------- the catalogue
# one builder per case: it writes the bad file under tmp_path and returns a Case


def truncated_json(tmp: Path) -> Case:
    path = write(tmp / "train.json", (SAMPLE / "train.json").read_text("utf-8")[:5000])
    return train(path), [str(path), "line 1, column", "looks truncated", "re-download"]


def wrong_top_level_schema(tmp: Path) -> Case:
    path = write(tmp / "re.json", {"rows": [{"sentence": "문장", "label": 1}]})
    return train(path), [str(path), "unknown MRC layout", "'rows'", "convert the data"]


def missing_question(tmp: Path) -> Case:
    path = squad(tmp, lambda d: qas(d)[0].pop("question"))
    return train(path), [str(path), FIRST_ID, "has no 'question'", "fix"]


def missing_context(tmp: Path) -> Case:
    path = squad(tmp, lambda d: first_paragraph(d).pop("context"))
    return train(path), [str(path), FIRST_ID, "has no 'context'", "fix"]


def missing_answers(tmp: Path) -> Case:
    path = squad(tmp, lambda d: qas(d)[0].update(answers=[]))
    return train(path), [str(path), FIRST_ID, "has no answers", "is_impossible"]


def answer_start_out_of_range(tmp: Path) -> Case:
    path = squad(tmp, lambda d: first_answer(d).update(answer_start=10**6))
    return train(path), [str(path), FIRST_ID, "beyond the end of the context", "set answer_start to"]


def answer_not_at_its_offset(tmp: Path) -> Case:
    path = squad(tmp, lambda d: first_answer(d).update(answer_start=first_answer(d)["answer_start"] + 1))
    start = FIRST[0]["answers"][0]["answer_start"]
    return train(path), [str(path), FIRST_ID, "does not match the context", f"set answer_start to {start}"]


def nfd_answer_in_nfc_context(tmp: Path) -> Case:
    path = squad(
        tmp, lambda d: first_answer(d).update(text=unicodedata.normalize("NFD", first_answer(d)["text"]))
    )
    return train(path), [str(path), FIRST_ID, "Unicode normalisation", "datamodule.normalize=NFC"]


def empty_context(tmp: Path) -> Case:
    path = squad(tmp, lambda d: first_paragraph(d).update(context="  "))
    return train(path), [str(path), FIRST_ID, "'context' is empty", "fix"]


def duplicate_ids(tmp: Path) -> Case:
    path = squad(tmp, lambda d: qas(d)[2].update(id=FIRST_ID))
    return train(path), [str(path), FIRST_ID, "duplicate id", "ids must be unique"]


def empty_corpus(tmp: Path) -> Case:
    path = write(tmp / "corpus.jsonl", "\n\n")
    return ["task=retrieve", f"retriever.corpus_file={path}"], [str(path), "the corpus file is empty", "fix"]


def gold_document_missing_from_the_corpus(tmp: Path) -> Case:
    examples = load_mrc_examples(SAMPLE / "validation.json")[:3]
    lost = examples[1]
    lost.update(document_id="no-such-document", context=lost["context"] + " 덧붙인 문장.")
    path = write(tmp / "questions.json", to_squad_json(examples))
    args = [
        "task=retrieve",
        f"retriever.corpus_file={SAMPLE / 'corpus.jsonl'}",
        f"datamodule.validation_file={path}",
    ]
    return args, [str(path), lost["id"], "no-such-document", "corpus.jsonl", "allow_missing_gold=true"]


def mistyped_config_key(tmp: Path) -> Case:
    return ["datamodule.max_seq_lenght=128"], [
        "Could not override 'datamodule.max_seq_lenght'",  # Hydra's own message...
        "did you mean datamodule.max_seq_length?",  # ...and the nearest key
    ]


def missing_ckpt_path(tmp: Path) -> Case:
    return ["task=validate", *TINY_RUN], ["task=validate needs ckpt_path=", "checkpoint"]


def checkpoint_file_not_found(tmp: Path) -> Case:
    write(tmp / "checkpoints" / "last.ckpt", "")
    missing = tmp / "checkpoints" / "epoch03.ckpt"
    return ["task=validate", f"ckpt_path={missing}", *TINY_RUN], [
        str(missing),
        "no such checkpoint",
        "last.ckpt",
    ]


def predictions_with_unknown_ids(tmp: Path) -> Case:
    path = write(tmp / "predictions.json", {"val-00001": "답", "not-a-question": "답"})
    args = ["task=score", f"predictions={path}", f"datamodule.validation_file={SAMPLE / 'validation.json'}"]
    return args, [str(path), "not-a-question", "not questions of the gold file", "score against the file"]


def predictions_not_a_mapping(tmp: Path) -> Case:
    path = write(tmp / "predictions.json", ["a", "b"])
    args = ["task=score", f"predictions={path}", f"datamodule.validation_file={SAMPLE / 'validation.json'}"]
    return args, [str(path), "one JSON object mapping question id", "fix"]


def unknown_task(tmp: Path) -> Case:
    return ["task=dance"], ["task='dance' is unknown", "fit, validate, predict, score"]


CHEAP = [
    truncated_json,
    wrong_top_level_schema,
    missing_question,
    missing_context,
    missing_answers,
    answer_start_out_of_range,
    answer_not_at_its_offset,
    nfd_answer_in_nfc_context,
    empty_context,
    duplicate_ids,
    empty_corpus,
    gold_document_missing_from_the_corpus,
    mistyped_config_key,
    missing_ckpt_path,
    checkpoint_file_not_found,
    predictions_with_unknown_ids,
    predictions_not_a_mapping,
    unknown_task,
]


def assert_clear_failure(result: Any, names: list[str], run_dir: Path) -> None:
    """Exit 1, no traceback, every expected name in the message, nothing written as results."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for name in names:
        assert name in result.stderr, f"{name!r} not in:\n{result.stderr[-3000:]}"
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.parametrize("case", CHEAP, ids=lambda case: case.__name__)
def test_bad_input_is_one_clear_paragraph(case: Callable[[Path], Case], tmp_path: Path) -> None:
    args, names = case(tmp_path)
    run_dir = tmp_path / "run"
    result = run_main(*args, "print_config=false", run_dir=run_dir, cache_dir=tmp_path / "cache", check=False)
    assert_clear_failure(result, names, run_dir)


def test_run_dir_holding_an_earlier_run(tmp_path: Path) -> None:
    """A run into a directory with an earlier run's results is refused before Hydra writes anything there."""
    earlier = tmp_path / "earlier"
    write(earlier / "metrics.json", {"exact_match": 50.0})
    result = run_main("task=score", run_dir=earlier, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (
        f"hydra.run.dir={earlier} already holds the results of an earlier run (metrics.json)" in result.stderr
    )
    assert read_json(earlier / "metrics.json") == {"exact_match": 50.0}
    assert sorted(p.name for p in earlier.iterdir()) == ["metrics.json"]  # no .hydra/, no main.log


def test_debug_true_shows_the_traceback(tmp_path: Path) -> None:
    args, _ = missing_question(tmp_path)
    result = run_main(*args, "print_config=false", "debug=true", run_dir=tmp_path / "run", check=False)
    assert result.returncode != 0 and "Traceback" in result.stderr and "has no 'question'" in result.stderr


def test_nfc_normalisation_repairs_an_nfd_file(tmp_path: Path) -> None:
    """The fix the NFD message gives works: the same file scores with datamodule.normalize=NFC."""
    document = to_squad_json(FIRST)
    for qa in qas(document):
        qa["answers"][0]["text"] = unicodedata.normalize("NFD", qa["answers"][0]["text"])
    gold = write(tmp_path / "gold.json", document)
    predictions = write(tmp_path / "predictions.json", {ex["id"]: ex["answers"][0]["text"] for ex in FIRST})
    result = run_main(
        "task=score", f"predictions={predictions}", f"datamodule.validation_file={gold}", "datamodule.normalize=NFC",
        "print_config=false", run_dir=tmp_path / "run",
    )  # fmt: skip
    assert result.returncode == 0 and read_json(tmp_path / "run" / "metrics.json")["exact_match"] == 100.0


# ----------------------------------------------------------------------------- cases that build a model


def test_question_longer_than_the_window(tmp_path: Path) -> None:
    """Cut to max_query_length it still fills a 64-token window: the error names the file and the question."""
    path = squad(tmp_path, lambda d: qas(d)[0].update(question=" ".join([qas(d)[0]["question"]] * 40)))
    result = run_main(
        *train(path), f"datamodule.validation_file={path}", "datamodule.max_seq_length=64",
        "datamodule.doc_stride=16", "datamodule.max_query_length=64", "print_config=false",
        run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", check=False,
    )  # fmt: skip
    assert_clear_failure(
        result, [str(path), FIRST_ID, "max_seq_length=64 leaves 0 context tokens", "fix"], tmp_path
    )


def test_unknown_label_at_validation(tmp_path: Path) -> None:
    rows = read_json(NLI / "validation.json")[:12]
    rows[3]["gold_label"] = "entailmnet"
    path = write(tmp_path / "validation.json", rows)
    small_train = write(tmp_path / "train.json", read_json(NLI / "train.json")[:48])  # a quick tokenizer
    result = run_main(
        "+experiment=nli", *TINY_RUN, f"datamodule.train_file={small_train}", f"datamodule.validation_file={path}",
        "print_config=false",
        run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", check=False,
    )  # fmt: skip
    names = [str(path), rows[3]["guid"], "'entailmnet' is not one of the 3 classes", "typo of 'entailment'"]
    assert_clear_failure(result, names, tmp_path / "run")


def test_pretrained_name_unreachable_offline(tmp_path: Path) -> None:
    """No silent fallback to random or other weights when the Hub cannot be reached and nothing is cached."""
    result = run_main(
        "backbone=pretrained", "backbone.name_or_path=kornlp-tests/no-such-model", *TINY_LOOP, "print_config=false",
        run_dir=tmp_path / "run", check=False, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )  # fmt: skip
    names = [
        "backbone.name_or_path='kornlp-tests/no-such-model'",
        "HF_HUB_OFFLINE",
        "Nothing falls back",
        "fix",
    ]
    assert_clear_failure(result, names, tmp_path / "run")


@pytest.mark.parametrize("mismatch", ["tokenizer", "model"])
def test_checkpoint_of_another_tokenizer_or_model(mismatch: str, fitted_run: Path, tmp_path: Path) -> None:
    """Same-sized vocabulary with other ids (would load silently), or another MLP size (a page of errors)."""
    ckpt = fitted_run / "checkpoints" / "last.ckpt"
    if mismatch == "tokenizer":  # the tiny tokenizer trained on other text: same size and shape, other ids
        other = [*TINY_RUN, f"datamodule.train_file={SAMPLE / 'validation.json'}"]
        says = "was trained with another tokenizer"
    else:  # the run's own tokenizer and config, a wider MLP
        other = [*TINY_LOOP, "backbone=local", f"backbone.name_or_path={fitted_run / 'backbone'}"]
        other.append("+backbone.config_overrides.intermediate_size=128")
        says = "does not fit this run's model"
    result = run_main(
        "task=validate", f"ckpt_path={ckpt}", *other, "print_config=false",
        run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", check=False,
    )  # fmt: skip
    fix = f"backbone=local backbone.name_or_path={fitted_run / 'backbone'}"
    assert_clear_failure(result, [str(ckpt), says, fix], tmp_path / "run")


def test_preflight_asks_the_datamodule_class_to_check_its_files(tmp_path: Path) -> None:
    """``preflight`` finds the class from ``_target_`` and calls its ``check_files`` (TaskDataModule): the MRC one
    reads its files; another project datamodule, or a user's plain LightningDataModule, checks nothing there."""
    from omegaconf import OmegaConf

    from core.errors import DataFormatError
    from tasks.build import preflight

    bad = write(tmp_path / "bad.json", {"rows": [{"sentence": "문장"}]})
    mrc = OmegaConf.create({"datamodule": {"_target_": "datamodules.mrc.MRCDataModule", "train_file": str(bad)}})
    with pytest.raises(DataFormatError, match="unknown MRC layout"):
        preflight(mrc, "train")
    preflight(mrc, "validation")  # no validation_file: nothing to read
    for target in ("datamodules.classification.ClassificationDataModule", "lightning.pytorch.LightningDataModule"):
        preflight(OmegaConf.create({"datamodule": {"_target_": target, "train_file": str(bad)}}), "train")
