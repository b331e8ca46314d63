"""Sparse retrieval: BM25 parity with rank-bm25, TF-IDF vs sklearn, recall on the embedded set, index
save / load, corpus loaders, tokenisers, ``run_retrieve``, and a clear message for every bad input.

Scoring tests run on both engines (``ENGINES``): the numba kernel the benchmarks report, and the numpy
fallback; numba is in the ``dev`` extra, so none of them is skipped."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rank_bm25
from omegaconf import OmegaConf

from core.errors import DataFormatError
from retrievals.bm25 import BM25Retriever
from retrievals.corpus import Passage, Query, context_id, gold_passage_ids, load_corpus
from retrievals.manifest import load_retriever
from retrievals.metrics import mrr_at_k, recall_at_k, retrieval_metrics
from retrievals.term_index import top_k
from retrievals.tfidf import TfidfRetriever
from retrievals.token_cache import TokenizedCorpus, tokenize_corpus
from retrievals.tokenizers import build_tokenizer
from tasks.retrieve import read_corpus, read_queries, run_retrieve

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "mrc_sample"
CHAR = {"name": "char_ngram", "ngram_min": 2, "ngram_max": 2}
ENGINES = ["numpy", "numba"]


@pytest.fixture(scope="module")
def corpus() -> list[Passage]:
    return load_corpus(SAMPLE / "corpus.jsonl")


@pytest.fixture(scope="module")
def questions() -> list[Query]:
    return read_queries(SAMPLE / "validation.json")


@pytest.fixture(scope="module")
def small(corpus: list[Passage]) -> list[Passage]:
    return corpus[:300]


def _texts(retriever, passages):
    return [retriever.passage_text(p) for p in passages]


# ----------------------------------------------------------------------------- BM25 parity


# Tokens chosen so that "a" and "b" occur in more than half of the passages: negative idf, epsilon floor.
TINY = [["a", "b", "x"], ["a", "b", "y", "y"], ["a", "z"], ["a", "b", "b", "w", "v", "u"], ["q"], []]


class _Pretokenized:
    """Passages whose text is their tokens joined by spaces: whitespace tokenisation gives them back."""

    @staticmethod
    def passages(token_lists):
        return [Passage(f"p{i}", " ".join(tokens)) for i, tokens in enumerate(token_lists)]


def _assert_ranked_like(result, reference_scores, k, atol):
    """A search result against full reference score vectors: the k best scores, best first, each the
    reference score of the passage returned."""
    for ids, scores, full in zip(result.ids, result.scores, reference_scores, strict=True):
        np.testing.assert_allclose(scores, np.sort(full)[::-1][:k], rtol=0, atol=atol)
        np.testing.assert_allclose(scores, full[[int(i[1:]) for i in ids]], rtol=0, atol=atol)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("epsilon", [0.25, 0.0, 1.0])
def test_fast_bm25_equals_rank_bm25_with_negative_idf(epsilon, engine):
    retriever = BM25Retriever(
        tokenizer="whitespace", epsilon=epsilon, index_title=False, dtype="float64", engine=engine
    )
    retriever.index(_Pretokenized.passages(TINY))
    reference = rank_bm25.BM25Okapi(TINY, epsilon=epsilon)
    assert reference.idf["a"] == pytest.approx(epsilon * reference.average_idf)  # the floor is in use
    assert reference.idf["b"] == 0.0  # df = N/2: idf exactly 0, not floored
    for term, idf in reference.idf.items():
        assert retriever.idf[term] == pytest.approx(idf, abs=1e-12)
    queries = (["a"], ["b", "b", "x"], ["a", "q", "unknown"], ["y", "z", "u", "a", "b"])
    for query in queries:
        np.testing.assert_allclose(retriever.get_scores(query), reference.get_scores(query), rtol=0, atol=1e-9)
    result = retriever.search_tokens(list(queries), len(TINY))  # the engine's own scoring and top k
    _assert_ranked_like(result, [reference.get_scores(q) for q in queries], len(TINY), 1e-9)


@pytest.mark.parametrize(
    ("variant", "cls", "kwargs"),
    [
        ("okapi", rank_bm25.BM25Okapi, {"k1": 1.2, "b": 0.6, "epsilon": 0.25}),
        ("bm25l", rank_bm25.BM25L, {"k1": 1.5, "b": 0.75, "delta": 0.5}),
        ("bm25plus", rank_bm25.BM25Plus, {"k1": 1.5, "b": 0.75, "delta": 1.0}),
    ],
)
@pytest.mark.parametrize("engine", ENGINES)
def test_fast_bm25_equals_rank_bm25_on_korean_text(small, questions, variant, cls, kwargs, engine):
    retriever = BM25Retriever(tokenizer=CHAR, variant=variant, dtype="float64", engine=engine, **kwargs)
    retriever.index(small)
    tokens = retriever.tokenizer.tokenize(_texts(retriever, small))
    reference = cls(tokens, **kwargs)
    queries = retriever.tokenizer.tokenize([q.question for q in questions[:25]])
    for query in queries:
        np.testing.assert_allclose(retriever.get_scores(query), reference.get_scores(query), rtol=0, atol=1e-6)
    result = retriever.search([q.question for q in questions[:25]], 20)
    for scores, query in zip(result.scores, queries, strict=True):
        np.testing.assert_allclose(scores, np.sort(reference.get_scores(query))[::-1][:20], rtol=0, atol=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
def test_parity_mode_ranks_like_fast_mode(small, questions, engine):
    texts = [q.question for q in questions[:20]]
    fast = BM25Retriever(tokenizer=CHAR, engine=engine).index(small).search(texts, 10)
    slow = BM25Retriever(tokenizer=CHAR, mode="rank_bm25").index(small).search(texts, 10)
    assert fast.ids == slow.ids
    np.testing.assert_allclose(np.array(fast.scores), np.array(slow.scores), rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "make",
    [
        lambda engine: BM25Retriever(tokenizer=CHAR, engine=engine),
        lambda engine: BM25Retriever(tokenizer=CHAR, variant="bm25plus", engine=engine),
        lambda engine: TfidfRetriever(tokenizer=CHAR, engine=engine),
    ],
    ids=["okapi", "bm25plus", "tfidf"],
)
def test_numba_engine_returns_exactly_the_numpy_results(small, questions, make):
    queries = [q.question for q in questions[:60]] + [small[3].title, small[3].title + " " + small[3].title]
    expected = make("numpy").index(small).search(queries, 50)
    got = make("numba").index(small).search(queries, 50)
    assert got.ids == expected.ids
    np.testing.assert_allclose(np.array(got.scores), np.array(expected.scores), rtol=0, atol=1e-12)


def _zipf_corpus(n_passages: int, seed: int = 0) -> list[list[str]]:
    """Token lists over a 400-word Zipf vocabulary; the last 1,000 repeat earlier ones (exact score ties)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, 401)
    words = rng.choice(400, size=(n_passages, 40), p=p / p.sum())
    lengths = rng.integers(3, 40, n_passages)
    lists = [[f"w{w}" for w in row[:n]] for row, n in zip(words.tolist(), lengths.tolist(), strict=True)]
    return lists[:-1000] + lists[:1000]


@pytest.mark.parametrize("n_passages", [2_500, 12_000])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "make",
    [
        lambda engine, dtype: BM25Retriever(tokenizer="whitespace", engine=engine, dtype=dtype),
        lambda engine, dtype: BM25Retriever(tokenizer="whitespace", variant="bm25plus", engine=engine, dtype=dtype),
        lambda engine, dtype: TfidfRetriever(tokenizer="whitespace", engine=engine, dtype=dtype),
    ],
    ids=["okapi", "bm25plus", "tfidf"],
)
def test_numba_engine_equals_numpy_on_a_large_corpus_with_ties(make, dtype, n_passages):
    """Common terms stored as dense rows, and the kernel's sampled-threshold top k (from 512 passages; 1,024
    samples from 8,192) against numpy's full sort, ties (duplicate passages, one-word queries) included."""
    tokens = _zipf_corpus(n_passages)
    passages = [Passage(f"p{i}", "") for i in range(len(tokens))]
    rng = np.random.default_rng(1)
    queries = [["w0"], ["w1", "w1"], ["w399"], ["w5", "w250", "w390"], ["w0", "w1", "w2", "w3"]]
    queries += [[f"w{w}" for w in rng.integers(0, 400, int(rng.integers(2, 9)))] for _ in range(40)]
    queries += [tokens[i] for i in (3, n_passages - 500)]  # a passage and a duplicated one as queries
    numpy_side = make("numpy", dtype).index_tokens(passages, tokens)
    numba_side = make("numba", dtype).index_tokens(passages, tokens)
    assert numba_side._index.dense_terms.size > 0
    for k in (1, 10, 100, 2000):
        expected = numpy_side.search_tokens(queries, k)
        got = numba_side.search_tokens(queries, k)
        assert got.ids == expected.ids, k
        assert got.scores == expected.scores, k


def test_numba_dense_top_k_falls_back_exactly():
    """The kernel's threshold guess failing: ties so massive that the candidates overflow, and guesses from
    sampled passages (every 11th of 12k, each with the rarer "b") that outscore the rest: too few candidates,
    then enough at a lower guess, or never enough (the heap over all passages)."""
    tokens = [["a"] * (1 + i % 2) + (["b"] if i % 11 == 0 else []) + ["c", f"r{i % 50}"] for i in range(12_000)]
    passages = [Passage(f"p{i}", "") for i in range(len(tokens))]
    numpy_side = BM25Retriever(tokenizer="whitespace", engine="numpy").index_tokens(passages, tokens)
    numba_side = BM25Retriever(tokenizer="whitespace", engine="numba").index_tokens(passages, tokens)
    queries = [["a"], ["c"], ["a", "b"], ["c", "b", "b"]]
    for k in (10, 600, 1100):  # overflow (k=10: 5.4k passages tie at the top); a second guess; the heap
        expected = numpy_side.search_tokens(queries, k)
        got = numba_side.search_tokens(queries, k)
        assert got.ids == expected.ids and got.scores == expected.scores, k


@pytest.mark.parametrize(
    "make",
    [
        lambda dtype, engine: BM25Retriever(tokenizer=CHAR, dtype=dtype, engine=engine),
        lambda dtype, engine: TfidfRetriever(tokenizer=CHAR, dtype=dtype, engine=engine),
    ],
    ids=["bm25", "tfidf"],
)
@pytest.mark.parametrize("engine", ENGINES)
def test_float32_ranks_like_float64(corpus, questions, make, engine):
    """float32 weights: the same top 20 as float64 for every embedded question, except where two passages'
    float64 scores are equal to float32 precision; scores within 1e-6 relative (half the index memory)."""
    queries = [q.question for q in questions]
    wide = make("float64", engine).index(corpus)
    narrow = make("float32", engine).index(corpus)
    assert narrow._index.data.dtype == np.float32 and narrow._index.dense_rows.dtype == np.float32
    expected, got = wide.search(queries, 20), narrow.search(queries, 20)
    position = {p.id: i for i, p in enumerate(corpus)}
    swapped = 0
    for query, ids64, s64, ids32, s32 in zip(queries, expected.ids, expected.scores, got.ids, got.scores, strict=True):
        np.testing.assert_allclose(s32, s64, rtol=1e-6, atol=0)
        if ids32 == ids64:
            continue
        full64 = wide.get_scores(wide.tokenizer.tokenize([query])[0])
        for rank, (a, b) in enumerate(zip(ids64, ids32, strict=True)):
            if a != b:  # only near-ties may trade places
                swapped += 1
                assert full64[position[b]] == pytest.approx(s64[rank], rel=1e-6, abs=0), (query, rank)
    assert swapped <= len(queries) // 10


def test_top_k_equals_a_full_sort_on_ties_zeros_and_negatives():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 60))
        scores = rng.choice([0.0, 0.0, 0.0, 1.0, 2.0, -1.0, 0.5], n) * (1 + (trial % 2) * rng.random(n))
        for k in {1, max(1, n // 3), n}:
            expected = np.lexsort((np.arange(n), -scores))[:k]
            assert top_k(scores, k).tolist() == expected.tolist(), (scores, k)


def test_top_k_breaks_ties_by_corpus_order():
    scores = np.array([1.0, 3.0, 3.0, 0.0, 3.0, 2.0])
    assert top_k(scores, 2).tolist() == [1, 2]
    assert top_k(scores, 4).tolist() == [1, 2, 4, 5]
    assert top_k(scores, 6).tolist() == [1, 2, 4, 5, 0, 3]


# ----------------------------------------------------------------------------- TF-IDF


@pytest.mark.parametrize("engine", ENGINES)
def test_tfidf_equals_direct_sklearn_cosine(small, questions, engine):
    from sklearn.feature_extraction.text import TfidfVectorizer

    retriever = TfidfRetriever(tokenizer=CHAR, sublinear_tf=True, engine=engine).index(small)
    tok = retriever.tokenizer
    direct = TfidfVectorizer(analyzer=tok, lowercase=False, sublinear_tf=True)
    matrix = direct.fit_transform(_texts(retriever, small))
    queries = [q.question for q in questions[:20]]
    expected = (direct.transform(queries) @ matrix.T).toarray()
    for row, query in zip(expected, tok.tokenize(queries), strict=True):
        np.testing.assert_allclose(retriever.get_scores(query), row, rtol=0, atol=1e-9)
    result = retriever.search(queries, 5)
    assert result.ids[0][0] == small[int(np.argmax(expected[0]))].id
    for scores, row in zip(result.scores, expected, strict=True):
        np.testing.assert_allclose(scores, np.sort(row)[::-1][:5], rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- recall on the embedded set


def _recall(retriever, corpus, questions, k=20):
    result = retriever.search([q.question for q in questions], k)
    ranked = dict(zip([q.id for q in questions], result.ids, strict=True))
    return retrieval_metrics(ranked, gold_passage_ids(questions, corpus), (1, 5, 20))


def test_recall_on_embedded_validation_set_default_tokenizer(corpus, questions, tmp_path):
    pytest.importorskip("kiwipiepy")
    # Measured: recall@1 0.976, @5 0.993, @20 1.000 (kiwi nouns + char bigrams, k1=1.5, b=0.75).
    metrics = _recall(BM25Retriever(cache_dir=tmp_path).index(corpus), corpus, questions)
    assert metrics["questions_with_gold"] == 459 and metrics["gold_not_in_corpus"] == 0
    assert metrics["recall@1"] >= 0.95
    assert metrics["recall@5"] >= 0.98
    assert metrics["recall@20"] >= 0.99


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("cls", "floor_at_1"), [(BM25Retriever, 0.95), (TfidfRetriever, 0.94)])
def test_recall_on_embedded_validation_set_char_bigrams(corpus, questions, cls, floor_at_1, engine):
    # Measured: BM25 0.974 / 0.996 / 1.000, TF-IDF 0.967 / 0.993 / 1.000.
    metrics = _recall(cls(tokenizer=CHAR, engine=engine).index(corpus), corpus, questions)
    assert metrics["recall@1"] >= floor_at_1
    assert metrics["recall@20"] >= 0.99


def test_metrics_by_hand():
    ranked = {"q1": ["a", "b", "c"], "q2": ["c", "d", "b"], "q3": ["x"]}
    gold = {"q1": {"a"}, "q2": {"b"}, "q3": set()}
    assert recall_at_k(ranked, gold, 1) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, gold, 3) == pytest.approx(2 / 3)
    assert mrr_at_k(ranked, gold, 100) == pytest.approx((1 + 1 / 3) / 3)
    assert retrieval_metrics(ranked, gold)["gold_not_in_corpus"] == 1


# ----------------------------------------------------------------------------- save / load


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: BM25Retriever(tokenizer=CHAR, **kw),
        lambda **kw: BM25Retriever(tokenizer=CHAR, mode="rank_bm25", variant="bm25plus", **kw),
        lambda **kw: TfidfRetriever(tokenizer=CHAR, **kw),
        lambda **kw: BM25Retriever(tokenizer={"name": "hf", "hf_vocab_size": 1000}, **kw),
        lambda **kw: BM25Retriever(tokenizer=CHAR, dtype="float32", **kw),
        lambda **kw: TfidfRetriever(tokenizer=CHAR, dtype="float32", **kw),
    ],
    ids=["bm25-fast", "bm25-rank_bm25", "tfidf", "bm25-hf", "bm25-float32", "tfidf-float32"],
)
@pytest.mark.parametrize(("engine", "mmap"), [("numpy", False), ("numba", True)])
def test_save_load_round_trip(small, questions, tmp_path, make, engine, mmap):
    """Every kind of index saves as one .npy per array (no pickle) and loads, into RAM or memory-mapped
    (``mmap``: BM25's fast mode also builds through files), to the same results."""
    from retrievals.index_files import npy_file

    retriever = make(engine=engine, mmap=mmap, cache_dir=tmp_path / "cache").index(small)
    queries = [q.question for q in questions[:30]]
    before = retriever.search(queries, 10)
    retriever.save(tmp_path / "index")
    files = sorted(p.name for p in (tmp_path / "index").iterdir())
    assert "manifest.json" in files and all(p.endswith((".json", ".npy")) for p in files), files
    for name in files:
        if name.endswith(".npy"):
            assert np.load(tmp_path / "index" / name, allow_pickle=False).dtype != object
    loaded = load_retriever(
        tmp_path / "index",
        passages=small,
        tokenizer=retriever.tokenizer.config,
        params=retriever.params(),
        engine=engine,
        mmap=mmap,
    )
    if getattr(loaded, "_index", None) is not None:
        mapped = npy_file(loaded._index.data)
        assert (mapped is not None) == mmap and (not mmap or mapped.parent == tmp_path / "index")
    assert type(loaded) is type(retriever)
    assert loaded.params() == retriever.params()  # dtype included
    if getattr(retriever, "_index", None) is not None:
        assert loaded._index.data.dtype == retriever._index.data.dtype
        assert loaded._index.dense_terms.tolist() == retriever._index.dense_terms.tolist()
    after = loaded.search(queries, 10)
    assert after.ids == before.ids
    assert after.scores == before.scores
    if "dtype" in retriever.params():
        other = "float32" if retriever.dtype == "float64" else "float64"
        with pytest.raises(DataFormatError, match=f"dtype: index '{retriever.dtype}' vs asked '{other}'"):
            load_retriever(tmp_path / "index", params={**retriever.params(), "dtype": other})


def test_format_1_index_still_loads(small, questions, tmp_path):
    """An index saved before dense rows and retriever.dtype (format 1: all postings, float64) loads as float64
    and ranks as it did."""
    retriever = BM25Retriever(tokenizer=CHAR).index(small)
    queries = [q.question for q in questions[:30]]
    before = retriever.search(queries, 10)
    index = retriever._index
    assert index.dense_terms.size > 0
    # Put the dense rows back as postings: the format-1 arrays.
    rows = {t: np.flatnonzero(row) for t, row in zip(index.dense_terms.tolist(), index.dense_rows, strict=True)}
    indptr, indices, data = [0], [], []
    for term in range(index.n_terms):
        if term in rows:
            docs = rows[term]
            weights = index.dense_rows[index.dense_slot[term]][docs]
        else:
            docs = index.indices[index.indptr[term] : index.indptr[term + 1]]
            weights = index.data[index.indptr[term] : index.indptr[term + 1]]
        indices.append(docs)
        data.append(weights)
        indptr.append(indptr[-1] + docs.size)
    retriever.save(tmp_path / "v1")
    np.savez(tmp_path / "v1" / "index.npz", indptr=np.array(indptr), indices=np.concatenate(indices),
             data=np.concatenate(data), idf=retriever._idf)
    manifest = json.loads((tmp_path / "v1" / "manifest.json").read_text(encoding="utf-8"))
    manifest["format_version"] = 1
    del manifest["params"]["dtype"]
    (tmp_path / "v1" / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    loaded = load_retriever(tmp_path / "v1", passages=small, params=retriever.params())
    assert loaded.dtype == "float64" and loaded._index.dense_terms.tolist() == index.dense_terms.tolist()
    after = loaded.search(queries, 10)
    assert after.ids == before.ids and after.scores == before.scores


# ----------------------------------------------------------------------------- robustness


def test_empty_corpus_is_refused(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataFormatError, match="empty"):
        load_corpus(empty)
    (tmp_path / "wiki.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DataFormatError):
        load_corpus(tmp_path / "wiki.json")
    with pytest.raises(ValueError, match="empty corpus"):
        BM25Retriever(tokenizer="whitespace").index([])


def test_duplicate_passage_ids_are_refused(tmp_path):
    path = tmp_path / "dup.jsonl"
    rows = [{"id": "a", "title": "", "text": "하나"}, {"id": "b", "text": "둘"}, {"id": "a", "text": "셋"}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"duplicate passage id 'a' \(first at line 1\)") as info:
        load_corpus(path)
    assert "line 3" in str(info.value) and "fix:" in str(info.value)
    with pytest.raises(DataFormatError, match="duplicate passage id"):
        BM25Retriever(tokenizer="whitespace").index([Passage("a", "x"), Passage("a", "y")])


def test_passages_without_tokens_warn_and_all_empty_is_an_error(caplog):
    passages = [Passage("p0", "서울은 수도이다"), Passage("p1", "...!"), Passage("p2", "")]
    with caplog.at_level(logging.WARNING, logger="retrievals"):
        retriever = BM25Retriever(tokenizer="whitespace").index(passages)
    assert "2 of 3 passages have no tokens" in caplog.text and "'p1'" in caplog.text
    assert retriever.search(["서울은"], 3).ids == [["p0", "p1", "p2"]]
    with pytest.raises(ValueError, match="no passage has any token"):
        BM25Retriever(tokenizer="whitespace").index([Passage("p0", "?!"), Passage("p1", " ")])


def test_queries_without_tokens_get_no_results_and_a_warning(small, caplog):
    retriever = BM25Retriever(tokenizer=CHAR).index(small)
    with caplog.at_level(logging.WARNING, logger="retrievals"):
        result = retriever.search(["?!", "뷁뷁뷁뷁", small[0].title], 3)
    assert result.ids[0] == [] and result.ids[1] == [] and len(result.ids[2]) == 3
    assert "1 of 3 queries have no tokens" in caplog.text
    assert "1 of 3 queries share no token with the index vocabulary" in caplog.text
    with pytest.raises(ValueError, match="list of queries"):
        retriever.search("한 문장", 3)


def test_k_larger_than_corpus_is_refused(small):
    retriever = BM25Retriever(tokenizer=CHAR).index(small[:5])
    with pytest.raises(ValueError, match=r"k=6 is larger than the corpus \(5 passages\)"):
        retriever.search(["질문"], 6)
    with pytest.raises(ValueError, match="positive integer"):
        retriever.search(["질문"], 0)


def test_index_loaded_against_another_corpus_tokenizer_or_parameters(small, tmp_path):
    BM25Retriever(tokenizer=CHAR).index(small).save(tmp_path / "ix")
    with pytest.raises(DataFormatError, match="different corpus") as info:
        load_retriever(tmp_path / "ix", passages=small[:-1])
    assert "delete that directory" in str(info.value)
    with pytest.raises(DataFormatError, match="built with tokenizer"):
        load_retriever(tmp_path / "ix", tokenizer="whitespace")
    with pytest.raises(DataFormatError, match=r"other parameters \(k1: index 1.5 vs asked 1.2\)"):
        load_retriever(tmp_path / "ix", params={"k1": 1.2})
    with pytest.raises(DataFormatError, match="not a tfidf one"):
        TfidfRetriever.load(tmp_path / "ix")
    with pytest.raises(DataFormatError, match="no manifest.json"):
        load_retriever(tmp_path)


def test_bad_settings_have_clear_messages():
    with pytest.raises(ValueError, match="unknown tokenizer"):
        build_tokenizer("mecab")
    with pytest.raises(ValueError, match="unknown option"):
        build_tokenizer({"name": "kiwi", "tags": ["NNG"]})
    with pytest.raises(ValueError, match="retriever.b="):
        BM25Retriever(tokenizer="whitespace", b=1.5)
    with pytest.raises(ValueError, match="retriever.mode="):
        BM25Retriever(tokenizer="whitespace", mode="turbo")
    with pytest.raises(ValueError, match="retriever.engine="):
        BM25Retriever(tokenizer="whitespace", engine="gpu")
    with pytest.raises(ValueError, match=r"retriever.dtype='float16': use one of float64, float32"):
        TfidfRetriever(tokenizer="whitespace", dtype="float16")


# ----------------------------------------------------------------------------- corpora and gold


def test_corpus_layouts_and_gold_links(tmp_path, corpus, questions):
    wiki = {"0": {"text": "경복궁은 조선의 궁궐이다.", "title": "경복궁", "document_id": 7, "html": "<p>"},
            "1": {"text": "판소리는 음악이다.", "title": "판소리", "document_id": 8}}
    (tmp_path / "wikipedia_documents.json").write_text(json.dumps(wiki, ensure_ascii=False), encoding="utf-8")
    passages = load_corpus(tmp_path / "wikipedia_documents.json")
    assert [(p.id, p.title, p.document_id) for p in passages] == [("0", "경복궁", "7"), ("1", "판소리", "8")]
    assert "html" not in passages[0].meta
    # The embedded corpus: gold by document_id, and the same passage by context text.
    gold = gold_passage_ids(questions, corpus)
    assert all(len(ids) == 1 for ids in gold.values())
    by_text = gold_passage_ids([Query("q", "?", questions[0].context)], corpus)
    assert by_text["q"] == gold[questions[0].id]


def test_mrc_contexts_are_deduplicated_with_stable_ids(questions):
    first = read_corpus(SAMPLE / "validation.json")
    again = read_corpus(SAMPLE / "validation.json")
    assert len(first) == 135 and [p.id for p in first] == [p.id for p in again]
    assert first[0].id == context_id(first[0].title, first[0].text)
    gold = gold_passage_ids(questions, first)
    assert len(gold) == 459 and all(gold.values())


def test_questions_only_file(tmp_path):
    path = tmp_path / "test.json"
    path.write_text(json.dumps([{"guid": "t1", "question": "경복궁은 언제 지어졌나?"}], ensure_ascii=False))
    queries = read_queries(path)
    assert queries == [Query("t1", "경복궁은 언제 지어졌나?")] and not queries[0].has_gold


# ----------------------------------------------------------------------------- tokenisers


def test_kiwi_keeps_content_morphemes():
    pytest.importorskip("kiwipiepy")
    tok = build_tokenizer({"name": "kiwi"})
    tokens = tok("경복궁은 1395년에 지어진 조선의 궁궐이다.")
    assert {"경복궁", "1395", "년", "조선", "궁궐"} <= set(tokens)
    assert not {"은", "에", "의", "이다", "."} & set(tokens)
    content = build_tokenizer({"name": "kiwi", "kiwi_tags": ["VV", "NNG"]})("궁궐을 지었다")
    assert content == ["궁궐", "짓"]


def test_kiwi_multi_word_dictionary_is_an_option_in_the_fingerprint():
    pytest.importorskip("kiwipiepy")
    default, multi = build_tokenizer({"name": "kiwi"}), build_tokenizer({"name": "kiwi", "kiwi_multi_dict": True})
    assert default.config["kiwi_multi_dict"] is False and "kiwi_multi_dict" not in multi.config
    # with the dictionary: the fingerprint of every index built before the option existed
    assert multi.fingerprint() != default.fingerprint()
    sentence = "세종대왕은 1443년에 훈민정음을 창제하였다."
    assert default(sentence) == multi(sentence)
    assert build_tokenizer("char_ngram").config == build_tokenizer({"name": "char_ngram", "kiwi_multi_dict": True}).config


def test_char_ngrams_whitespace_and_combination():
    assert build_tokenizer("whitespace")("「서울」은, 수도!") == ["서울」은", "수도"]
    assert build_tokenizer(CHAR)("서울은 강") == ["서울", "울은", "강"]
    assert build_tokenizer({**CHAR, "ngram_min": 1})("서울") == ["서", "울", "서울"]
    combined = build_tokenizer("whitespace+char_ngram")("서울은")
    assert combined == ["w:서울은", "c:서울", "c:울은"]
    assert build_tokenizer("whitespace")("ABC abc") == ["abc", "abc"]


def test_parallel_tokenisation_equals_one_process(small, monkeypatch):
    import retrievals.token_cache as token_cache

    monkeypatch.setattr(token_cache, "_PARALLEL_MIN_TEXTS", 10)
    texts = [p.text for p in small[:60]]
    one = tokenize_corpus(build_tokenizer(CHAR), texts, corpus_key="p")
    two = tokenize_corpus(build_tokenizer({**CHAR, "num_workers": 2}), texts, corpus_key="p")
    assert two.vocab == one.vocab
    assert two.ids.tolist() == one.ids.tolist() and two.offsets.tolist() == one.offsets.tolist()


def test_tokenised_corpus_is_cached(small, tmp_path, monkeypatch):
    tok = build_tokenizer(CHAR)
    texts = [p.text for p in small]
    first = tokenize_corpus(tok, texts, corpus_key="k1", cache_dir=tmp_path)
    monkeypatch.setattr(type(tok), "tokenize", lambda *a, **k: pytest.fail("tokenised twice"))
    second = tokenize_corpus(tok, texts, corpus_key="k1", cache_dir=tmp_path)
    assert second.as_lists() == first.as_lists()
    assert isinstance(second, TokenizedCorpus) and len(second) == len(small)


# ----------------------------------------------------------------------------- task=retrieve


def _cfg(tmp_path, **over):
    cfg = OmegaConf.load(ROOT / "conf" / "retriever" / "bm25.yaml")
    cfg.cache_dir = str(tmp_path / "cache")
    cfg.corpus_file = str(SAMPLE / "corpus.jsonl")
    cfg.tokenizer.name = "char_ngram"
    for key, value in over.items():
        OmegaConf.update(cfg, key, value)
    return cfg


@pytest.mark.parametrize(("engine", "mmap"), [("numpy", False), ("numba", True)])
def test_run_retrieve_writes_results_metrics_and_plot(tmp_path, engine, mmap):
    cfg = _cfg(tmp_path, top_k=5, index_dir=str(tmp_path / "ix"), engine=engine, mmap=mmap)
    metrics = run_retrieve(cfg, str(SAMPLE / "validation.json"), tmp_path / "run")
    retrieved = json.loads((tmp_path / "run" / "retrieved.json").read_text(encoding="utf-8"))
    assert len(retrieved) == 459 and all(len(v) == 5 for v in retrieved.values())
    assert set(retrieved["val-00001"][0]) == {"passage_id", "score"}
    saved = json.loads((tmp_path / "run" / "retrieval_metrics.json").read_text(encoding="utf-8"))
    for key in ("recall@1", "recall@5", "recall@10", "recall@20", "recall@50", "recall@100", "mrr@100",
                "index_seconds", "queries_per_second"):
        assert key in saved and saved[key] == metrics[key]
    assert metrics["recall@1"] >= 0.95 and metrics["index_loaded"] is False
    assert (tmp_path / "run" / "recall_at_k.png").read_bytes()[:4] == b"\x89PNG"
    # Second run: the saved index is loaded; a different tokenizer is refused.
    again = run_retrieve(cfg, str(SAMPLE / "validation.json"), tmp_path / "run2")
    assert again["index_loaded"] is True and again["recall@1"] == metrics["recall@1"]
    cfg.tokenizer.name = "whitespace"
    with pytest.raises(DataFormatError, match="built with tokenizer"):
        run_retrieve(cfg, str(SAMPLE / "validation.json"), tmp_path / "run3")


def test_run_retrieve_defaults_to_the_question_contexts_and_checks_top_k(tmp_path):
    cfg = _cfg(tmp_path, corpus_file=None, top_k=3)
    metrics = run_retrieve(cfg, str(SAMPLE / "validation.json"), tmp_path / "run")
    assert metrics["passages"] == 135 and metrics["recall@1"] >= 0.95
    with pytest.raises(ValueError, match=r"top_k=200 is larger than the corpus \(135 passages"):
        run_retrieve(_cfg(tmp_path, corpus_file=None, top_k=200), str(SAMPLE / "validation.json"), tmp_path / "r")


@pytest.mark.parametrize("option", ["bm25", "tfidf"])
def test_retriever_configs_compose_and_instantiate(option, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from core.config import register_resolvers

    register_resolvers()
    from tasks.retrieve import TASK_KEYS, instantiate_retriever

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"retriever={option}", f"paths.cache_dir={tmp_path}",
                                           "retriever.tokenizer.name=char_ngram"])
    GlobalHydra.instance().clear()
    node = OmegaConf.to_container(cfg.retriever, resolve=True)
    assert node["cache_dir"] == str(tmp_path) and node["corpus_file"] is None
    retriever = instantiate_retriever({k: v for k, v in node.items() if k not in TASK_KEYS})
    assert retriever.kind == option and retriever.tokenizer.name == "char_ngram"


def test_task_keys_live_outside_the_retriever_options(tmp_path):
    """conf/config.yaml holds the task keys' defaults; an option holds its _target_ and arguments only; the
    command line still sets retriever.top_k and friends, whichever retriever is chosen."""
    from tasks.retrieve import TASK_KEYS
    from tasks.runner import compose_config

    assert tuple(OmegaConf.load(ROOT / "conf" / "config.yaml").retriever) == TASK_KEYS
    for option in sorted((ROOT / "conf" / "retriever").glob("*.yaml")):
        node = OmegaConf.load(option)
        assert "_target_" in node and not set(TASK_KEYS) & set(node), option.name
    for option in ("bm25", "tfidf", "elasticsearch"):
        cfg = compose_config([f"retriever={option}", "retriever.top_k=7", "retriever.corpus_file=c.jsonl"], tmp_path)
        assert (cfg.retriever.top_k, cfg.retriever.corpus_file, cfg.retriever.index_dir) == (7, "c.jsonl", None)
        assert cfg.retriever._target_.startswith("retrievals.")


def test_retrievals_reads_no_mrc_format_itself(tmp_path):
    """An MRC file is a corpus / questions file only through a reader the task layer hands over."""
    with pytest.raises(DataFormatError, match="holds no passages") as info:
        load_corpus(SAMPLE / "validation.json")
    assert "mrc_examples" in str(info.value)
    assert len(read_corpus(SAMPLE / "validation.json")) == 135
    csv_corpus = tmp_path / "corpus.csv"
    csv_corpus.write_text("id,title,text\np1,경복궁,경복궁은 궁궐이다\np2,,판소리는 음악이다\n", encoding="utf-8")
    assert [(p.id, p.title, p.text) for p in load_corpus(csv_corpus)] == [
        ("p1", "경복궁", "경복궁은 궁궐이다"), ("p2", "", "판소리는 음악이다")]


def test_manifest_names_its_class_and_older_manifests_still_load(small, questions, tmp_path):
    retriever = TfidfRetriever(tokenizer=CHAR).index(small)
    retriever.save(tmp_path / "ix")
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["target"] == "retrievals.tfidf.TfidfRetriever" and manifest["retriever"] == "tfidf"
    # indexes saved before the manifest said "target" named the class "class"
    manifest["class"] = manifest.pop("target")
    (tmp_path / "ix" / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    loaded = load_retriever(tmp_path / "ix", passages=small, like=TfidfRetriever(tokenizer=CHAR))
    queries = [q.question for q in questions[:10]]
    assert type(loaded) is TfidfRetriever and loaded.search(queries, 5) == retriever.search(queries, 5)
    with pytest.raises(DataFormatError, match=r"other parameters \(sublinear_tf: index False vs asked True\)"):
        TfidfRetriever.load(tmp_path / "ix", like=TfidfRetriever(tokenizer=CHAR, sublinear_tf=True))
