"""What task=retrieve and task=odqa hold in memory: retrieved.json streamed (the same text as one write_json),
no torch import for task=retrieve, and task=odqa's retrieval freed before the reader loads."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import tasks.retrieve as retrieve_task
from core.files import write_json
from retrievals.bm25 import BM25Retriever
from retrievals.corpus import Passage, Query, gold_passage_ids, load_corpus
from tasks.odqa import retrieve_for_reading

ROOT = Path(__file__).resolve().parents[1]
PASSAGES = [
    Passage("p0", "경복궁은 조선 왕조의 법궁으로 1395년에 지어졌다.", "경복궁"),
    Passage("p1", "한강은 서울을 가로질러 서해로 흐르는 강이다.", "한강"),
    Passage("p2", "세종대왕은 훈민정음을 창제하였다.", "세종"),
    Passage("p3", "부산은 대한민국 제2의 도시이며 항구 도시이다.", "부산"),
    Passage("p4", "제주도는 화산섬으로 한라산이 있다.", "제주"),
]
QUESTIONS = ["경복궁은 언제 지어졌나?", "훈민정음을 만든 왕은?", "한라산이 있는 섬은?", "서울을 흐르는 강은?",
             "항구 도시 부산", "zzz 알 수 없는 질문"]


def test_retrieved_json_is_streamed_in_chunks_as_write_json_would_write_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    retriever = BM25Retriever(tokenizer="char_ngram").index(PASSAGES)
    queries = [Query(f"q{i}", text) for i, text in enumerate(QUESTIONS)]
    top_k, depth = 2, 4
    whole = retriever.search([q.question for q in queries], depth)
    expected = {q.id: [{"passage_id": pid, "score": round(float(s), 6)} for pid, s in zip(ids[:top_k], scores[:top_k],
                                                                                           strict=True)]
                for q, ids, scores in zip(queries, whole.ids, whole.scores, strict=True)}
    write_json(tmp_path / "expected.json", expected)
    monkeypatch.setattr(retrieve_task, "SEARCH_CHUNK", 4)  # two chunks: 4 + 2 questions
    ranked, seconds, empty = retrieve_task.search_and_write(retriever, queries, top_k, depth, tmp_path / "got.json")
    assert (tmp_path / "got.json").read_bytes() == (tmp_path / "expected.json").read_bytes()
    assert ranked == {q.id: ids for q, ids in zip(queries, whole.ids, strict=True)}  # the full depth, for metrics
    assert seconds > 0 and empty == sum(1 for ids in whole.ids if not ids)
    retrieve_task.search_and_write(retriever, [], top_k, depth, tmp_path / "none.json")
    write_json(tmp_path / "none-expected.json", {})
    assert (tmp_path / "none.json").read_bytes() == (tmp_path / "none-expected.json").read_bytes()


def test_task_retrieve_does_not_import_torch() -> None:
    """task=retrieve's own imports stay light: torch (~190 MB) loads only when retriever.rerank needs it."""
    code = "import sys, tasks.retrieve; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "False", done.stderr


def test_odqa_keeps_only_the_passages_it_reads_and_frees_the_index(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": p.id, "title": p.title, "text": p.text}, ensure_ascii=False) + "\n"
                              for p in PASSAGES), encoding="utf-8")
    cfg = OmegaConf.create({"retriever": {
        "_target_": "retrievals.bm25.BM25Retriever", "tokenizer": {"name": "char_ngram"},
        "corpus_file": str(corpus), "corpus_split": None, "top_k": 1, "index_dir": None, "rebuild_index": False,
        "allow_missing_gold": False, "tune_weight": False, "weight_grid": None, "rerank": None,
    }})
    # q1's gold (p4, by its context) is not what BM25 ranks first for it: it must be kept all the same
    queries = [Query("q0", "경복궁은 언제 지어졌나?", PASSAGES[0].text), Query("q1", "훈민정음", PASSAGES[4].text)]
    kept, retrieved, summary = retrieve_for_reading(cfg, queries, "questions.json", None)
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, BM25Retriever)]  # the index went with the retriever
    assert [p.id for p, _ in retrieved["q0"]] == ["p0"] and [p.id for p, _ in retrieved["q1"]] == ["p2"]
    assert [p.id for p in kept] == ["p0", "p2", "p4"]  # retrieved + gold, corpus order
    assert gold_passage_ids(queries, kept) == gold_passage_ids(queries, load_corpus(corpus))
    assert summary["retriever"] == "bm25" and summary["index_seconds"] >= 0
