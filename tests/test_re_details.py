"""KLUE-RE details: type words in Korean or English, configurable marker characters, the entity-type constraint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamodules.klue_re import KlueREDataModule
from tasks.build import build_run
from tasks.runner import compose_config
from tests.conftest import ROOT, TINY_RUN, read_json
from tests.test_klue_re import RECORD, datamodule, encoded

RE_SAMPLE = ROOT / "data" / "re_sample"
WORD_SETS = {"ko": {"PER": "사람", "ORG": "단체"}, "en": {"PER": "person", "ORG": "organization"}}


@pytest.mark.parametrize(
    ("settings", "marked"),
    [
        ({"type_words": "ko"}, "@*단체*비틀즈@가 #^사람^조지 해리슨#을 좋아했다."),
        ({"type_words": "en"}, "@*organization*비틀즈@가 #^person^조지 해리슨#을 좋아했다."),
        ({"type_words": "code"}, "@*ORG*비틀즈@가 #^PER^조지 해리슨#을 좋아했다."),
        ({"type_words": "en", "type_names": {"PER": "human"}}, "@*organization*비틀즈@가 #^human^조지 해리슨#을 좋아했다."),
        ({"type_words": "ko", "punct_markers": {"object": ["&", "^"]}}, "@*단체*비틀즈@가 &^사람^조지 해리슨&을 좋아했다."),
    ],
)
def test_type_words_and_marker_characters(tmp_path: Path, settings: dict, marked: str) -> None:
    dm = datamodule(tmp_path, [RECORD], marking="typed_entity_marker_punct", type_word_sets=WORD_SETS, **settings)
    assert dm.mark(dm.load("validation", labels="all")[0])[0] == marked
    tokens, subject, obj = encoded(dm)
    assert tokens[subject] == "@" and tokens[obj] == (settings.get("punct_markers") and "&" or "#")
    assert (tokens[subject + 1], tokens[obj + 1]) == ("*", "^")  # the marker characters are in the vocabulary


def test_bad_marker_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="type_words='fr' is unknown: choose code or one of ko, en"):
        datamodule(tmp_path, [RECORD], type_words="fr", type_word_sets=WORD_SETS)
    with pytest.raises(ValueError, match="four different non-empty strings"):
        datamodule(tmp_path, [RECORD], punct_markers={"subject": ["@", "*"], "object": ["@", "^"]})


def test_type_constraint_zeroes_relations_training_never_saw_for_the_types(tmp_path: Path) -> None:
    records = read_json(RE_SAMPLE / "train.json")
    seen: dict[str, set[str]] = {}
    for r in records:
        seen.setdefault(f"{r['subject_entity']['type']}|{r['object_entity']['type']}", set()).add(r["label"])
    # an unseen type pair in validation keeps every class
    odd = {**records[0], "guid": "odd", "subject_entity": {**records[0]["subject_entity"], "type": "NOH"}}
    validation = tmp_path / "validation.json"
    validation.write_text(json.dumps([*read_json(RE_SAMPLE / "validation.json")[:15], odd], ensure_ascii=False))
    run_dir = tmp_path / "run"
    cfg = compose_config(["datamodule=re_sample", "model=classifier", "model.type_constraint=true",
                               f"datamodule.validation_file={validation}", "logger=none",
                               *[o for o in TINY_RUN if not o.startswith(("logger=", "datamodule.max_eval"))]],
                              run_dir)
    run = build_run(cfg)
    run["trainer"].validate(run["model"], datamodule=run["datamodule"], verbose=False)
    table = read_json(run_dir / "type_constraints.json")
    assert {pair: set(labels) for pair, labels in table.items()} == seen
    predictions = run["model"].last_predictions
    assert len(predictions) == 16
    gold_pairs = {r["guid"]: f"{r['subject_entity']['type']}|{r['object_entity']['type']}"
                  for r in read_json(validation)}
    for record in predictions:
        probabilities = record["probabilities"]
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        allowed = seen.get(gold_pairs[record["id"]], set(probabilities)) | {"no_relation"}
        assert all(p == 0.0 for name, p in probabilities.items() if name not in allowed), record["id"]
        assert all(p > 0.0 for name, p in probabilities.items() if name in allowed)
        assert record["label"] in allowed
    assert all(p > 0 for p in next(r for r in predictions if r["id"] == "odd")["probabilities"].values())
    dm = run["datamodule"]
    assert isinstance(dm, KlueREDataModule) and len(dm.allowed_labels("validation")) == 16
