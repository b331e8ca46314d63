"""task=retrieve and task=odqa through main.py, and the answer merging of open-domain QA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamodules.mrc_formats import load_mrc_examples, to_squad_json
from models.qa_metrics import evaluate
from retrievals.corpus import Passage, Query
from tasks.odqa import passage_examples
from tasks.odqa_scoring import SpanWeights, choose_answers
from tests.conftest import SAMPLE, TINY_LOOP, read_json, run_main


def test_retrieve_task_writes_results_and_metrics(tmp_path: Path) -> None:
    run_dir = tmp_path / "retrieve"
    run_main(
        "task=retrieve", "print_config=false", f"retriever.corpus_file={SAMPLE / 'corpus.jsonl'}",
        run_dir=run_dir, cache_dir=tmp_path / "cache",
    )
    retrieved = read_json(run_dir / "retrieved.json")
    questions = load_mrc_examples(SAMPLE / "validation.json")
    assert set(retrieved) == {ex["id"] for ex in questions}
    assert all(len(hits) == 20 for hits in retrieved.values())
    metrics = read_json(run_dir / "retrieval_metrics.json")
    for key in ("recall@1", "recall@5", "recall@10", "recall@20", "recall@50", "recall@100", "mrr@100",
                "index_seconds", "queries_per_second"):
        assert key in metrics, key
    assert metrics["recall@1"] >= 0.9 and metrics["recall@20"] >= metrics["recall@1"]
    assert (run_dir / "recall_at_k.png").stat().st_size > 1000
    assert read_json(run_dir / "metrics.json")["recall@1"] == metrics["recall@1"]


def test_odqa_reads_retrieved_passages_end_to_end(fitted_run: Path, tmp_path: Path) -> None:
    examples = load_mrc_examples(SAMPLE / "validation.json")[:12]
    questions = tmp_path / "questions.json"
    questions.write_text(json.dumps(to_squad_json(examples), ensure_ascii=False), encoding="utf-8")
    run_dir = tmp_path / "odqa"
    run_main(
        "task=odqa", f"ckpt_path={fitted_run / 'checkpoints' / 'last.ckpt'}", *TINY_LOOP,
        "backbone=local", f"backbone.name_or_path={fitted_run / 'backbone'}",
        f"datamodule.validation_file={questions}", f"retriever.corpus_file={SAMPLE / 'corpus.jsonl'}",
        "retriever.top_k=3", run_dir=run_dir, cache_dir=tmp_path / "cache",
    )
    predictions = read_json(run_dir / "predictions.json")
    assert set(predictions) == {ex["id"] for ex in examples}
    nbest = read_json(run_dir / "nbest_predictions.json")
    corpus_ids = {json.loads(line)["id"] for line in (SAMPLE / "corpus.jsonl").read_text().splitlines()}
    for qid, entries in nbest.items():
        assert entries[0]["text"] == predictions[qid]
        assert {e["passage_id"] for e in entries} <= corpus_ids
        assert all(e["passage_rank"] < 3 for e in entries)
    metrics = read_json(run_dir / "metrics.json")
    official = evaluate(to_squad_json(examples)["data"], predictions)
    assert metrics["exact_match"] == pytest.approx(official["exact_match"])
    assert metrics["f1"] == pytest.approx(official["f1"])
    assert metrics["retrieval_recall@3"] >= 0.9
    assert set(read_json(run_dir / "retrieved.json")) == set(predictions)


def _span(text: str, score: float, start: int = 0) -> dict:
    return {"text": text, "score": score, "start_logit": score / 2, "end_logit": score / 2,
            "offsets": [start, start + len(text)]}


def test_choose_answers_mixes_reader_and_retriever_scores() -> None:
    query = Query(id="q1", question="누가?")
    near, far = Passage(id="p-near", text="가 나 다"), Passage(id="p-far", text="라 마 바")
    retrieved = {"q1": [(near, 10.0), (far, 2.0)]}
    examples = passage_examples([query], retrieved)
    assert [ex["id"] for ex in examples] == ["q1@@0", "q1@@1"]
    assert examples[1]["context"] == "라 마 바" and examples[1]["answers"] == []
    nbest = {"q1@@0": [_span("가", 3.0)], "q1@@1": [_span("마", 5.0, 2)]}

    reader_only, details = choose_answers([query], retrieved, nbest, SpanWeights(retriever_weight=0.0))
    assert reader_only == {"q1": "마"}
    assert details["q1"][0]["passage_id"] == "p-far"
    assert sum(e["probability"] for e in details["q1"]) == pytest.approx(1.0)
    # raw retriever scores: 3 + 0.5 * 10 = 8 beats 5 + 0.5 * 2 = 6
    mixed, details = choose_answers([query], retrieved, nbest, SpanWeights(0.5, retriever_score="raw"))
    assert mixed == {"q1": "가"} and details["q1"][0]["score"] == pytest.approx(8.0)
    # relative to the top passage: (2 - 10) / 10 = -0.8; 5 - 3 * 0.8 = 2.6 < 3
    relative, details = choose_answers([query], retrieved, nbest, SpanWeights(3.0))
    assert relative == {"q1": "가"} and details["q1"][1]["score"] == pytest.approx(2.6)
    # the window's no-answer score: 3 - 1 * 0 = 3 beats 5 - 1 * 4 = 1
    nulls = {"q1@@0": [{**_span("가", 3.0), "null_score": 0.0}], "q1@@1": [{**_span("마", 5.0, 2), "null_score": 4.0}]}
    by_null, details = choose_answers([query], retrieved, nulls, SpanWeights(null_weight=1.0))
    assert by_null == {"q1": "가"} and details["q1"][1]["score"] == pytest.approx(1.0)
    # a null entry (no span) is never chosen; a question with no spans gets ""
    empty, _ = choose_answers([query], retrieved, {"q1@@0": [{"text": "", "score": 9.0, "start_logit": None,
                                                              "end_logit": None, "offsets": [0, 0]}]})
    assert empty == {"q1": ""}
