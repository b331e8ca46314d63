"""The query-speed side of the sparse engine (issue 21, item 2): which terms are stored as dense rows, that an
index saved under the older rule loads as it was built, and that the end-to-end benchmark's bm25s baseline
gets exactly our tokens."""

from __future__ import annotations

import numpy as np
import pytest

from retrievals.bm25 import BM25Retriever
from retrievals.corpus import Passage
from retrievals.term_index import DENSE_SHARE, TermIndex, dense_mask

ENGINES = ["numpy", "numba"]


def _corpus(n: int = 400) -> list[list[str]]:
    """``a`` in 30% of the passages (dense under DENSE_SHARE, sparse under the older memory rule), ``b`` in
    20% (sparse), ``c`` in 80% (dense under both), and a rare word per passage."""
    rows = []
    for i in range(n):
        row = [f"r{i % 97}", f"s{i % 13}"]
        if i % 10 < 3:
            row.append("a")
        if i % 5 == 0:
            row += ["b", "b"]
        if i % 5 != 0:
            row.append("c")
        rows.append(row)
    return rows


def test_terms_in_more_than_a_quarter_of_the_passages_are_dense_rows():
    assert DENSE_SHARE == 0.25
    df = np.array([100, 101, 25, 75])
    assert dense_mask(df, 400, "float64").tolist() == [False, True, False, False]
    tokens = _corpus()
    retriever = BM25Retriever(tokenizer="whitespace", engine="numpy").index_tokens(
        [Passage(f"p{i}", "") for i in range(len(tokens))], tokens
    )
    dense = {retriever._terms[t] for t in retriever._index.dense_terms.tolist()}
    assert dense == {"a", "c"}


@pytest.mark.parametrize("engine", ENGINES)
def test_scores_equal_rank_bm25_with_the_new_dense_terms(engine):
    """An independent reference: rank-bm25's BM25Okapi on the same tokens (dense rows for ``a`` and ``c``)."""
    rank_bm25 = pytest.importorskip("rank_bm25")
    tokens = _corpus()
    passages = [Passage(f"p{i}", "") for i in range(len(tokens))]
    ours = BM25Retriever(tokenizer="whitespace", engine=engine).index_tokens(passages, tokens)
    reference = rank_bm25.BM25Okapi(tokens)
    for query in (["a"], ["a", "b"], ["c", "a", "r3"], ["b", "b", "s4", "c"]):
        np.testing.assert_allclose(ours.get_scores(query), reference.get_scores(query), rtol=1e-9, atol=1e-9)
        got = ours.search_tokens([query], 20)
        expected = np.lexsort((np.arange(len(tokens)), -reference.get_scores(query)))[:20]
        assert got.ids[0] == [f"p{i}" for i in expected.tolist()]


def test_an_index_saved_under_the_older_rule_keeps_its_layout():
    """Given its dense rows (as a saved index gives them), a term below the older memory rule (``a``: 30%)
    stays in postings: loading, memory-mapped or not, never copies postings into RAM; scores are the same."""
    tokens = _corpus()
    passages = [Passage(f"p{i}", "") for i in range(len(tokens))]
    built = BM25Retriever(tokenizer="whitespace", engine="numpy").index_tokens(passages, tokens)
    index = built._index
    a_term = built.vocab["a"]
    c_term = built.vocab["c"]
    # the same weights laid out as before: only "c" dense
    sparse_terms = [t for t in range(index.n_terms) if t != c_term]
    indptr, indices, data = [0], [], []
    for t in range(index.n_terms):
        if t in sparse_terms:
            if index.dense_slot[t] >= 0:
                row = index.dense_rows[index.dense_slot[t]]
                docs = np.flatnonzero(row)
                indices.append(docs)
                data.append(row[docs])
            else:
                lo, hi = index.indptr[t], index.indptr[t + 1]
                indices.append(index.indices[lo:hi])
                data.append(index.data[lo:hi])
        indptr.append(indptr[-1] + (len(indices[-1]) if t in sparse_terms else 0))
    old = TermIndex(
        np.array(indptr),
        np.concatenate(indices),
        np.concatenate(data),
        index.n_docs,
        dense_terms=np.array([c_term]),
        dense_rows=index.dense_rows[index.dense_slot[c_term]][None, :],
    )
    assert old.dense_terms.tolist() == [c_term]
    assert old.dense_slot[a_term] == -1
    for terms in ([a_term], [a_term, c_term], [c_term, built.vocab["b"]]):
        query = np.array(terms)
        np.testing.assert_allclose(old.scores(query), index.scores(query), rtol=1e-12, atol=1e-12)
    # all sparse (a format-1 index, TF-IDF's build): the common terms move to rows by the new rule
    flat = TermIndex(np.array(indptr), np.concatenate(indices), np.concatenate(data), index.n_docs)
    assert flat.dense_terms.tolist() == [a_term]  # "c" was given as a row above and is not in these postings


def test_the_bm25s_baseline_gets_exactly_our_tokens():
    """bench/retrieval.py's ``bm25s-e2e-splitter`` hands our tokenizer to bm25s as its splitter: the ids bm25s
    looks up are our tokens that the index knows, in order, so both libraries score the same query terms."""
    bm25s = pytest.importorskip("bm25s")
    from retrievals.tokenizers import build_tokenizer

    ours = build_tokenizer("char_ngram")
    corpus = ["경복궁은 조선의 궁궐이다.", "서울의 궁궐과 경복궁", "한강은 서울을 흐른다"]
    vocab: dict[str, int] = {}
    for row in ours.tokenize(corpus):
        for token in row:
            vocab.setdefault(token, len(vocab))
    theirs = bm25s.tokenization.Tokenizer(lower=False, splitter=ours, stopwords=None)
    theirs.word_to_id = dict(vocab)
    questions = ["경복궁은 언제 지어졌나?", "서울의 궁궐", "xyz"]
    got = theirs.tokenize(questions, update_vocab=False, show_progress=False, return_as="tuple")
    words = {i: w for w, i in vocab.items()}
    assert [[words[i] for i in row] for row in got.ids] == [
        [t for t in row if t in vocab] for row in ours.tokenize(questions)
    ]
