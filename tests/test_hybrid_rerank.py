"""Hybrid retrieval (rank fusion by ranx) and cross-encoder reranking: fusion against a hand computation,
HybridRetriever search / save / load, a reranked BM25 against the model's own logits, and both end to end
through main.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("ranx")
pytest.importorskip("faiss")

from core.errors import DataFormatError  # noqa: E402
from retrievals.bm25 import BM25Retriever  # noqa: E402
from retrievals.corpus import Passage, load_corpus  # noqa: E402
from retrievals.fusion import fuse_results  # noqa: E402
from retrievals.hybrid import HybridRetriever  # noqa: E402
from retrievals.manifest import load_retriever  # noqa: E402
from retrievals.protocol import Retriever, SearchResult  # noqa: E402
from retrievals.rerank import CrossEncoderReranker, RerankedRetriever  # noqa: E402
from retrievals.tfidf import TfidfRetriever  # noqa: E402
from tests.conftest import ROOT, SAMPLE, read_json, run_main  # noqa: E402

CHAR = {"name": "char_ngram", "ngram_min": 2, "ngram_max": 2}
K = 60


@pytest.fixture(scope="module")
def passages() -> list[Passage]:
    return load_corpus(SAMPLE / "corpus.jsonl")[:30]


@pytest.fixture(scope="module")
def queries(passages: list[Passage]) -> list[str]:
    # pieces of the passages' own text, plus one query that shares nothing with any of them
    return [p.text[5:25] for p in passages[:8]] + ["zzzz qqqq"]


# ----------------------------------------------------------------------------- fusion by hand


SPARSE = SearchResult(
    # q0: b and c tie (listed b first); q1: one passage; q2: nothing; q3: p and q swap places in the two lists;
    # q4: a, b, c all fuse to 0.5 in linear fusion
    ids=[["a", "b", "c", "t"], ["x"], [], ["p", "q"], ["a", "b", "c"]],
    scores=[[3.0, 2.0, 2.0, 1.0], [1.0], [], [1.0, 0.5], [1.0, 0.5, 0.0]],
)
DENSE = SearchResult(
    ids=[["b", "d", "a"], [], [], ["q", "p"], ["c", "b", "a"]],
    scores=[[0.9, 0.5, 0.1], [], [], [1.0, 0.5], [1.0, 0.5, 0.0]],
)


def test_rrf_equals_a_hand_computation():
    fused = fuse_results(SPARSE, DENSE, method="rrf", k=10, rrf_k=K)
    expected = [
        # ranks are list positions (from 1): c is 3rd in the sparse list although tied with b; d, c, t are in
        # one list only and get nothing from the other
        {"b": 1 / (K + 2) + 1 / (K + 1), "a": 1 / (K + 1) + 1 / (K + 3), "d": 1 / (K + 2), "c": 1 / (K + 3),
         "t": 1 / (K + 4)},
        {"x": 1 / (K + 1)},
        {},
        {"p": 1 / (K + 1) + 1 / (K + 2), "q": 1 / (K + 2) + 1 / (K + 1)},  # a tie: by id
        {"a": 1 / (K + 1) + 1 / (K + 3), "c": 1 / (K + 3) + 1 / (K + 1), "b": 2 / (K + 2)},
    ]
    assert fused.ids == [["b", "a", "d", "c", "t"], ["x"], [], ["p", "q"], ["a", "c", "b"]]
    for ids, scores, want in zip(fused.ids, fused.scores, expected, strict=True):
        assert dict(zip(ids, scores, strict=True)) == pytest.approx(want, abs=1e-12)
    # the sparse list's tie in the other order: c ranks 2nd there (ties d, by id) and b 3rd (ties a, by id)
    swapped = SearchResult([["a", "c", "b", "t"]], [[3.0, 2.0, 2.0, 1.0]])
    again = fuse_results(swapped, SearchResult([DENSE.ids[0]], [DENSE.scores[0]]), method="rrf", k=10, rrf_k=K)
    assert again.ids == [["a", "b", "c", "d", "t"]]
    assert again.scores[0] == pytest.approx([1 / (K + 1) + 1 / (K + 3)] * 2 + [1 / (K + 2)] * 2 + [1 / (K + 4)])
    assert fuse_results(SPARSE, DENSE, method="rrf", k=2, rrf_k=K).ids[0] == ["b", "a"]


def test_linear_equals_a_hand_computation():
    w = 0.7
    fused = fuse_results(SPARSE, DENSE, method="linear", k=10, weight=w)
    # min-max per list: sparse q0 a=1, b=c=(2-1)/2, t=0; dense q0 b=1, d=0.5, a=0; absent: 0
    expected = [
        {"b": (1 - w) * 0.5 + w * 1.0, "d": w * 0.5, "a": (1 - w) * 1.0, "c": (1 - w) * 0.5, "t": 0.0},
        {"x": 0.0},  # a one-passage list normalises to 0
        {},
        {"p": (1 - w) * 1.0, "q": w * 1.0},
        {"c": w * 1.0, "b": 0.5, "a": (1 - w)},
    ]
    for ids, scores, want in zip(fused.ids, fused.scores, expected, strict=True):
        assert dict(zip(ids, scores, strict=True)) == pytest.approx(want, abs=1e-12)
        assert scores == sorted(scores, reverse=True)
    assert fused.ids[0] == ["b", "d", "a", "c", "t"]
    # weight 0.5: a, b, c of q4 all score 0.5; a and c were first in a list (by id), b second in both
    half = fuse_results(SPARSE, DENSE, method="linear", k=10, weight=0.5)
    assert half.ids[4] == ["a", "c", "b"] and half.scores[4] == pytest.approx([0.5, 0.5, 0.5])


def test_zscore_linear_equals_a_hand_computation():
    """normalization=zscore: each list standardised (population std); an absent passage gets 0, the list's mean."""
    import numpy as np

    w = 0.1
    fused = fuse_results(SPARSE, DENSE, method="linear", k=10, weight=w, normalization="zscore")
    for q in range(len(SPARSE.ids)):
        sides = []
        for result in (SPARSE, DENSE):
            scores = np.array(result.scores[q], dtype=float)
            z = (scores - scores.mean()) / max(scores.std(), 1e-9) if len(scores) else scores
            sides.append(dict(zip(result.ids[q], z.tolist(), strict=True)))
        want = {pid: (1 - w) * sides[0].get(pid, 0.0) + w * sides[1].get(pid, 0.0) for pid in {*sides[0], *sides[1]}}
        assert dict(zip(fused.ids[q], fused.scores[q], strict=True)) == pytest.approx(want, abs=1e-9)
        assert fused.scores[q] == sorted(fused.scores[q], reverse=True)
    with pytest.raises(ValueError, match="retriever.normalization='l2'"):
        fuse_results(SPARSE, DENSE, method="linear", k=3, normalization="l2")


def test_fusion_settings_are_checked():
    with pytest.raises(ValueError, match="retriever.fusion='max'"):
        fuse_results(SPARSE, DENSE, method="max", k=3)
    with pytest.raises(ValueError, match="retriever.rrf_k=0"):
        fuse_results(SPARSE, DENSE, method="rrf", k=3, rrf_k=0)
    with pytest.raises(ValueError, match="retriever.weight=1.5"):
        fuse_results(SPARSE, DENSE, method="linear", k=3, weight=1.5)
    empty = SearchResult([[], []], [[], []])
    assert fuse_results(empty, empty, method="rrf", k=3) == empty


# ----------------------------------------------------------------------------- HybridRetriever


def _hybrid(tmp_path: Path, **kwargs) -> HybridRetriever:
    return HybridRetriever(BM25Retriever(tokenizer=CHAR, cache_dir=tmp_path / "cache"),
                           TfidfRetriever(tokenizer=CHAR, cache_dir=tmp_path / "cache"), **kwargs)


@pytest.mark.parametrize("fusion", ["rrf", "linear"])
def test_hybrid_search_is_the_fusion_of_its_sides(passages, queries, tmp_path, fusion):
    hybrid = _hybrid(tmp_path, fusion=fusion, weight=0.3, candidates=10).index(passages)
    assert isinstance(hybrid, Retriever) and hybrid.kind == "hybrid"
    got = hybrid.search(queries, 5)
    want = fuse_results(hybrid.sparse.search(queries, 10), hybrid.dense.search(queries, 10), method=fusion, k=5,
                        weight=0.3)
    assert got == want and got.ids[-1] == [] and all(len(ids) == 5 for ids in got.ids[:-1])
    assert hybrid.search(queries, 20) == fuse_results(hybrid.sparse.search(queries, 20),
                                                      hybrid.dense.search(queries, 20), method=fusion, k=20,
                                                      weight=0.3)
    params = hybrid.params()
    assert params["sparse"]["retriever"] == "bm25" and params["dense"]["retriever"] == "tfidf"
    assert (params["fusion"], params["weight"], params["candidates"]) == (fusion, 0.3, 10)
    report = hybrid.report()
    assert report["sparse_tokenizer"] == "char_ngram" and report["build_seconds"] >= 0


def test_hybrid_save_load_and_a_changed_corpus(passages, queries, tmp_path):
    hybrid = _hybrid(tmp_path, candidates=10).index(passages)
    hybrid.save(tmp_path / "ix")
    assert {p.name for p in (tmp_path / "ix").iterdir()} >= {"sparse", "dense", "manifest.json"}
    loaded = HybridRetriever.load(tmp_path / "ix", passages=passages, like=_hybrid(tmp_path, candidates=10))
    assert loaded.search(queries, 5) == hybrid.search(queries, 5)
    assert load_retriever(tmp_path / "ix", passages=passages).search(queries, 5) == hybrid.search(queries, 5)
    # the fusion settings come from `like`: the same index serves another fusion
    linear = HybridRetriever.load(tmp_path / "ix", like=_hybrid(tmp_path, fusion="linear", candidates=10))
    assert linear.fusion == "linear" and linear.search(queries, 5) == _hybrid(
        tmp_path, fusion="linear", candidates=10).index(passages).search(queries, 5)
    with pytest.raises(DataFormatError, match="different corpus"):
        HybridRetriever.load(tmp_path / "ix", passages=passages[:-1], like=_hybrid(tmp_path))
    with pytest.raises(TypeError, match="retriever.dense"):
        HybridRetriever(BM25Retriever(tokenizer=CHAR), "not a retriever")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retriever.candidates"):
        _hybrid(tmp_path, candidates=0)


def _few_questions(tmp_path: Path, n: int = 40) -> Path:
    """The first ``n`` articles of the embedded validation set, one question each (n passages, n questions):
    small enough for a forward pass per pair on a busy 2-core machine."""
    data = json.loads((SAMPLE / "validation.json").read_text(encoding="utf-8"))
    articles = data["data"][:n]
    for article in articles:
        article["paragraphs"] = article["paragraphs"][:1]
        article["paragraphs"][0]["qas"] = article["paragraphs"][0]["qas"][:1]
    out = tmp_path / "questions.json"
    out.write_text(json.dumps({**data, "data": articles}, ensure_ascii=False), encoding="utf-8")
    return out


def _tiny_tokenizer(tmp_path: Path):
    from core.tokenizer_training import train_tokenizer

    texts = [f"{p.title}\n{p.text}" for p in load_corpus(SAMPLE / "corpus.jsonl")[:200]]
    return train_tokenizer(texts, vocab_size=800, min_frequency=1)


def _tiny_bert_config(tokenizer, **kwargs):
    from transformers import BertConfig

    return BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128, **kwargs)


@pytest.mark.skipif(not ((ROOT / "retrievals" / "dense.py").exists()
                         and (ROOT / "conf" / "retriever" / "dense.yaml").exists()),
                    reason="retrievals/dense.py / conf/retriever/dense.yaml not written yet")
def test_hybrid_end_to_end_through_main(tmp_path):
    import torch
    from transformers import BertModel

    from core.text_encoders import EncoderSettings, save_dense_encoder

    torch.manual_seed(0)
    tokenizer = _tiny_tokenizer(tmp_path)
    encoder = save_dense_encoder(tmp_path / "encoder", BertModel(_tiny_bert_config(tokenizer)), None, tokenizer,
                                 EncoderSettings(pooling="mean", normalize=True, passage_max_length=128))
    run = tmp_path / "run"
    run_main("task=retrieve", "retriever=hybrid", f"retriever.dense.model_path={encoder}", "print_config=false",
             "retriever.sparse.tokenizer.name=char_ngram", f"retriever.index_dir={tmp_path / 'ix'}",
             f"datamodule.validation_file={_few_questions(tmp_path)}", run_dir=run, cache_dir=tmp_path / "cache")
    metrics = read_json(run / "retrieval_metrics.json")
    assert metrics["retriever"] == "hybrid" and metrics["fusion"] == "linear" and metrics["questions"] == 40
    assert metrics["sparse"]["retriever"] == "bm25" and metrics["dense"]["retriever"] == "dense"
    assert 0.3 <= metrics["recall@1"] <= metrics["recall@5"] <= metrics["recall@100"] == 1.0
    assert (tmp_path / "ix" / "sparse" / "manifest.json").exists()
    assert (tmp_path / "ix" / "dense" / "manifest.json").exists()
    # retriever.tune_weight: the saved index again, the weight chosen on the questions; weight 0 is BM25 alone
    tuned = tmp_path / "tuned"
    run_main("task=retrieve", "retriever=hybrid", f"retriever.dense.model_path={encoder}", "print_config=false",
             "retriever.sparse.tokenizer.name=char_ngram", f"retriever.index_dir={tmp_path / 'ix'}",
             "retriever.tune_weight=true", f"datamodule.validation_file={_few_questions(tmp_path)}", run_dir=tuned,
             cache_dir=tmp_path / "cache")
    bm25 = tmp_path / "bm25"
    run_main("task=retrieve", "retriever=bm25", "retriever.tokenizer.name=char_ngram", "print_config=false",
             f"datamodule.validation_file={_few_questions(tmp_path)}", run_dir=bm25, cache_dir=tmp_path / "cache")
    chosen, table = read_json(tuned / "fusion_weights.json"), read_json(tuned / "fusion_weights.json")["grid"]
    assert [row["weight"] for row in table] == sorted(row["weight"] for row in table) and len(table) == 13
    eligible = [row for row in table if all(row[k] >= table[0][k] for k in ("recall@1", "recall@5", "recall@20"))]
    assert [row["weight"] for row in eligible] == [row["weight"] for row in table if row["eligible"]]
    best = max(row["objective"] for row in eligible)
    assert chosen["weight"] == min(row["weight"] for row in eligible if row["objective"] == best)
    alone = read_json(bm25 / "retrieval_metrics.json")
    assert table[0]["weight"] == 0.0 and table[0]["recall@1"] == alone["recall@1"]
    found = read_json(tuned / "retrieval_metrics.json")
    assert found["weight"] == chosen["weight"] and found["weight_tuned_on_these_questions"] is True
    for k in ("recall@1", "recall@5", "recall@20"):
        assert found[k] == next(row[k] for row in table if row["weight"] == chosen["weight"])
    assert all(found[k] >= alone[k] for k in ("recall@1", "recall@5", "recall@20"))  # never below BM25 here


# ----------------------------------------------------------------------------- reranking


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory) -> Path:
    import torch
    from transformers import BertForSequenceClassification

    out = tmp_path_factory.mktemp("reranker") / "reranker"
    torch.manual_seed(0)
    tokenizer = _tiny_tokenizer(out)
    BertForSequenceClassification(_tiny_bert_config(tokenizer, num_labels=1)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "reranker.json").write_text(json.dumps({"max_length": 96}), encoding="utf-8")
    return out


def _direct_scores(path: Path, query: str, passages: list[Passage]) -> list[float]:
    """logits[:, 0] of each pair, one forward pass per pair (no padding)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.inference_mode():
        return [model(**tokenizer(query, f"{p.title}\n{p.text}" if p.title else p.text, truncation="only_second",
                                  max_length=96, return_tensors="pt")).logits[0, 0].item() for p in passages]


def test_reranked_bm25_orders_its_top_n_by_the_model(passages, queries, cross_encoder, tmp_path):
    reranker = CrossEncoderReranker(str(cross_encoder), top_n=5, batch_size=3, device="cpu")
    assert reranker.max_length == 96 and len(reranker.fingerprint) == 16
    base = BM25Retriever(tokenizer=CHAR, cache_dir=tmp_path / "cache").index(passages)
    reranked = RerankedRetriever(base, reranker).use_passages(passages)
    assert isinstance(reranked, Retriever) and reranked.kind == "bm25+rerank"
    by_id = {p.id: p for p in passages}
    got, plain = reranked.search(queries, 10), base.search(queries, 10)
    for query, ids, scores, base_ids in zip(queries, got.ids, got.scores, plain.ids, strict=True):
        if not base_ids:
            assert ids == []
            continue
        direct = _direct_scores(cross_encoder, query, [by_id[pid] for pid in base_ids[:5]])
        order = sorted(range(5), key=lambda i: -direct[i])
        assert ids[:5] == [base_ids[i] for i in order]
        assert scores[:5] == pytest.approx([direct[i] for i in order], abs=1e-4)
        assert ids[5:] == base_ids[5:10]  # the tail keeps BM25's order, below every re-ranked score
        assert max(scores[5:]) < min(scores[:5]) and scores[5:] == sorted(scores[5:], reverse=True)
    assert reranked.search(queries, 3).ids == [ids[:3] for ids in got.ids]  # k < top_n: still re-ranked
    params = reranked.params()
    assert params["k1"] == 1.5 and params["rerank"]["top_n"] == 5
    assert params["rerank"]["fingerprint"] == reranker.fingerprint
    with pytest.raises(TypeError, match="load the base"):
        RerankedRetriever.load(tmp_path)


def test_bad_reranker_models_are_refused(cross_encoder, tmp_path):
    from transformers import BertForSequenceClassification

    tokenizer = _tiny_tokenizer(tmp_path)
    two = tmp_path / "two_labels"
    BertForSequenceClassification(_tiny_bert_config(tokenizer, num_labels=2)).save_pretrained(two)
    tokenizer.save_pretrained(two)
    with pytest.raises(ValueError, match="num_labels=2"):
        CrossEncoderReranker(str(two), device="cpu")
    with pytest.raises(ValueError, match=r"retriever\.rerank\.model_path=.*no such directory.*experiment=reranker"):
        CrossEncoderReranker(str(tmp_path / "missing"), device="cpu")
    with pytest.raises(ValueError, match=r"retriever\.rerank\.model_path is not set"):
        CrossEncoderReranker("", device="cpu")
    assert CrossEncoderReranker(str(cross_encoder), max_length=1000, device="cpu").max_length == 128


def test_run_retrieve_reranks_and_reuses_the_base_index(cross_encoder, tmp_path):
    from tasks.retrieve import TASK_KEYS, run_retrieve

    assert "rerank" in TASK_KEYS
    cfg = {"_target_": "retrievals.bm25.BM25Retriever", "tokenizer": CHAR, "cache_dir": str(tmp_path / "cache"),
           "corpus_file": None, "top_k": 5, "index_dir": str(tmp_path / "ix"),
           "rerank": {"model_path": str(cross_encoder), "top_n": 5, "device": "cpu"}}
    questions = str(_few_questions(tmp_path))
    first = run_retrieve(cfg, questions, tmp_path / "run")
    again = run_retrieve(cfg, questions, tmp_path / "run2")
    assert first["retriever"] == again["retriever"] == "bm25+rerank"
    assert (first["index_loaded"], again["index_loaded"]) == (False, True)
    assert first["recall@1"] == again["recall@1"] and first["recall@100"] == 1.0
    assert json.loads((tmp_path / "ix" / "manifest.json").read_text(encoding="utf-8"))["retriever"] == "bm25"


def test_rerank_end_to_end_through_main(cross_encoder, tmp_path):
    run = tmp_path / "run"
    run_main("task=retrieve", "retriever=bm25", f"retriever.rerank.model_path={cross_encoder}",
             "retriever.rerank.top_n=5", "retriever.rerank.device=cpu", "retriever.tokenizer.name=char_ngram",
             "print_config=false", f"datamodule.validation_file={_few_questions(tmp_path)}", run_dir=run,
             cache_dir=tmp_path / "cache")
    metrics = read_json(run / "retrieval_metrics.json")
    assert metrics["retriever"] == "bm25+rerank" and metrics["rerank"]["top_n"] == 5
    assert metrics["rerank"]["model_path"] == str(cross_encoder) and "recall@1" in metrics
