"""odqa.mode: passages read one by one (with a retriever weight) or joined into one context."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamodules.mrc_formats import load_mrc_examples, to_squad_json
from models.mrc_metrics import score_predictions
from retrievals.corpus import Passage, Query
from tasks.odqa import concatenated_answers, concatenated_examples, task_odqa
from tasks.runner import compose_config
from tests.conftest import SAMPLE, TINY_LOOP, read_json


def test_concatenated_context_and_answers_point_back_to_their_passage() -> None:
    query = Query(id="q1", question="누가?")
    first, second = Passage(id="p1", text="가 나 다"), Passage(id="p2", text="라 마 바", title="둘")
    retrieved = {"q1": [(first, 9.0), (second, 4.0)]}
    (example,) = concatenated_examples([query], retrieved, joiner=" ")
    assert example["id"] == "q1" and example["context"] == "가 나 다 라 마 바" and example["answers"] == []
    nbest = {"q1": [{"text": "마", "score": 3.0, "start_logit": 1.0, "end_logit": 2.0, "offsets": [8, 9]},
                    {"text": "가", "score": 2.0, "start_logit": 1.0, "end_logit": 1.0, "offsets": [0, 1]},
                    {"text": "", "score": 9.0, "start_logit": None, "end_logit": None, "offsets": [0, 0]}]}
    predictions, details = concatenated_answers([query, Query(id="q2", question="?")], retrieved, nbest, " ")
    assert predictions == {"q1": "마", "q2": ""}
    assert [(e["passage_id"], e["passage_rank"], e["retriever_score"]) for e in details["q1"]] == [
        ("p2", 1, 4.0), ("p1", 0, 9.0)]  # the null entry is dropped


def test_odqa_concat_mode_end_to_end(fitted_run: Path, tmp_path: Path) -> None:
    examples = load_mrc_examples(SAMPLE / "validation.json")[:8]
    questions = tmp_path / "questions.json"
    questions.write_text(json.dumps(to_squad_json(examples), ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "concat"
    cfg = compose_config([
        "task=odqa", "odqa.mode=concat", "metric=klue_mrc", f"ckpt_path={fitted_run / 'checkpoints' / 'last.ckpt'}",
        *TINY_LOOP, "backbone=local", f"backbone.name_or_path={fitted_run / 'backbone'}",
        f"datamodule.validation_file={questions}", f"retriever.corpus_file={SAMPLE / 'corpus.jsonl'}",
        "retriever.top_k=2", "retriever.tokenizer.name=char_ngram", f"paths.cache_dir={tmp_path / 'cache'}",
    ], out)
    metrics = task_odqa(cfg, out)
    predictions = read_json(out / "predictions.json")
    assert set(predictions) == {ex["id"] for ex in examples}
    assert metrics["mode"] == "concat" and metrics["metric"] == "klue_mrc" and metrics["examples"] == 8
    assert metrics["exact_match"] == pytest.approx(score_predictions(examples, predictions, "klue_mrc")["exact_match"])
    retrieved = read_json(out / "retrieved.json")
    for qid, entries in read_json(out / "nbest_predictions.json").items():
        ranked = [hit["passage_id"] for hit in retrieved[qid]]
        assert all(ranked[e["passage_rank"]] == e["passage_id"] for e in entries)
        assert not entries or entries[0]["text"] == predictions[qid]
    with pytest.raises(ValueError, match="odqa.mode='joined' is unknown"):
        task_odqa(compose_config(["task=odqa", "odqa.mode=joined"], tmp_path / "bad"), tmp_path / "bad")
