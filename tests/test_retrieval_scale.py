"""Sparse retrieval at scale: the chunked (and spilled) index build gives the very index the whole corpus gives,
memory-mapped indexes serve the same results, queries tokenised one chunk ahead rank as pre-tokenised ones,
older index directories still load, and the scale benchmark's quick mode runs."""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import retrievals.postings as postings
import retrievals.sparse as sparse
from retrievals.bm25 import BM25Retriever
from retrievals.corpus import Passage, load_corpus
from retrievals.index_files import npy_file
from retrievals.manifest import load_retriever
from retrievals.term_index import TermIndex
from retrievals.token_cache import TokenizedCorpus
from tasks.retrieve import read_queries

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "mrc_sample"
CHAR = {"name": "char_ngram", "ngram_min": 2, "ngram_max": 2}
ENGINES = ["numpy", "numba"]


def _zipf_tokens(n_passages: int, seed: int = 0) -> list[list[str]]:
    """Token lists over a 300-word Zipf vocabulary (common words become dense rows), a few of them empty."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, 301)
    words = rng.choice(300, size=(n_passages, 30), p=p / p.sum())
    lengths = rng.integers(0, 30, n_passages)
    return [[f"w{w}" for w in row[:n]] for row, n in zip(words.tolist(), lengths.tolist(), strict=True)]


def _whole_corpus_bm25(tokens: list[list[str]], dtype: str, k1: float = 1.5, b: float = 0.75) -> TermIndex:
    """Okapi weights as the engine computed them before the chunked build: the whole corpus's (term, passage)
    pairs sorted at once (the reference the chunked build must equal bit for bit)."""
    corpus = TokenizedCorpus.from_lists(tokens)
    n_docs, n_terms = len(corpus), len(corpus.vocab)
    docs = np.repeat(np.arange(n_docs, dtype=np.int64), corpus.lengths)
    keys = np.sort(corpus.ids.astype(np.int64) * n_docs + docs, kind="stable")
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    tf = np.diff(np.append(starts, keys.size)).astype(np.float64)
    terms, docs = keys[starts] // n_docs, keys[starts] % n_docs
    df = np.bincount(terms, minlength=n_terms).astype(np.float64)
    doc_len = corpus.lengths.astype(np.float64)
    length_norm = 1.0 - b + b * doc_len / (float(doc_len.sum()) / n_docs)
    idf = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
    idf = np.where(idf < 0, 0.25 * (float(idf.sum()) / n_terms), idf)
    data = idf[terms] * (tf * (k1 + 1) / (tf + k1 * length_norm[docs]))
    indptr = np.concatenate(([0], np.cumsum(np.bincount(terms, minlength=n_terms))))
    return TermIndex(indptr, docs, data, n_docs, dtype=dtype)


@pytest.mark.parametrize("spill", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_chunked_build_equals_the_whole_corpus_build(tmp_path, monkeypatch, dtype, spill):
    """Tiny chunks and merge blocks (dozens of each), in RAM or spilled to files: the same arrays, bit for bit."""
    monkeypatch.setattr(postings, "_CHUNK_TOKENS", 3_000)
    monkeypatch.setattr(postings, "_BLOCK_POSTINGS", 700)
    tokens = _zipf_tokens(2_000)
    passages = [Passage(f"p{i}", "") for i in range(len(tokens))]
    retriever = BM25Retriever(tokenizer="whitespace", dtype=dtype, engine="numpy", mmap=spill, cache_dir=tmp_path)
    retriever.index_tokens(passages, tokens)
    expected = _whole_corpus_bm25(tokens, dtype)
    got = retriever._index
    assert got.dense_terms.size > 0
    for name, array in expected.arrays().items():
        assert got.arrays()[name].dtype == array.dtype, name
        assert np.array_equal(got.arrays()[name], array), name
    assert (npy_file(got.data) is not None) == spill


@pytest.mark.parametrize("engine", ENGINES)
def test_mmap_build_and_load_serve_the_same_results_and_clean_up(tmp_path, engine):
    corpus = load_corpus(SAMPLE / "corpus.jsonl")[:600]
    queries = [q.question for q in read_queries(SAMPLE / "validation.json")][:80]
    in_ram = BM25Retriever(tokenizer=CHAR, engine=engine).index(corpus)
    mapped = BM25Retriever(tokenizer=CHAR, engine=engine, mmap=True, cache_dir=tmp_path / "cache").index(corpus)
    spill = npy_file(mapped._index.data).parent
    assert spill.parent == tmp_path / "cache" / "retrieval" / "spill"
    assert not list(spill.glob("chunk*")), "the spilled chunks are removed once merged"
    expected = in_ram.search(queries, 20)
    assert mapped.search(queries, 20) == expected
    mapped.save(tmp_path / "ix")
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format_version"] == 3 and "indices" in manifest["arrays"]
    del mapped
    gc.collect()
    assert not spill.exists(), "the spill folder goes with its retriever"
    like = BM25Retriever(tokenizer=CHAR, engine=engine, mmap=True)
    loaded = BM25Retriever.load(tmp_path / "ix", passages=corpus, like=like)
    assert npy_file(loaded._index.dense_rows).parent == tmp_path / "ix"
    assert loaded.search(queries, 20) == expected
    assert BM25Retriever.load(tmp_path / "ix", passages=corpus, like=in_ram).search(queries, 20) == expected


@pytest.mark.parametrize("engine", ENGINES)
def test_queries_tokenised_ahead_rank_as_pretokenised_ones(monkeypatch, caplog, engine):
    """search() tokenises chunk i+1 in a thread while chunk i is scored: the results and the warnings about
    empty queries are those of one tokenise-then-search (chunks of 7 here, so queries straddle them)."""
    monkeypatch.setattr(sparse, "_QUERY_CHUNK", 7)
    corpus = load_corpus(SAMPLE / "corpus.jsonl")[:300]
    retriever = BM25Retriever(tokenizer=CHAR, engine=engine).index(corpus)
    queries = [q.question for q in read_queries(SAMPLE / "validation.json")][:40]
    queries[3], queries[11], queries[30] = "?!", "뷁뷁뷁뷁", ""
    with caplog.at_level(logging.WARNING, logger="retrievals"):
        got = retriever.search(queries, 10)
    assert "2 of 40 queries have no tokens" in caplog.text and "'?!'" in caplog.text
    assert "1 of 40 queries share no token" in caplog.text
    assert got == retriever.search_tokens(retriever.tokenizer.tokenize(queries), 10)
    assert got.ids[3] == got.ids[11] == got.ids[30] == []


def test_format_2_npz_index_still_loads(tmp_path):
    """An index saved before format 3 (one index.npz) loads, into RAM, whatever mmap asks."""
    corpus = load_corpus(SAMPLE / "corpus.jsonl")[:200]
    retriever = BM25Retriever(tokenizer=CHAR).index(corpus)
    queries = [q.question for q in read_queries(SAMPLE / "validation.json")][:20]
    retriever.save(tmp_path / "v2")
    folder = tmp_path / "v2"
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    arrays = {name: np.load(folder / f"index.{name}.npy") for name in manifest["arrays"]}
    np.savez(folder / "index.npz", **arrays)
    for name in manifest.pop("arrays"):
        (folder / f"index.{name}.npy").unlink()
    manifest["format_version"] = 2
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    loaded = load_retriever(folder, passages=corpus, mmap=True)
    assert npy_file(loaded._index.data) is None
    assert loaded.search(queries, 10) == retriever.search(queries, 10)


def test_retrieval_scale_bench_quick(tmp_path):
    """bench/retrieval_scale.py --quick: ours and bm25s (when installed) build, save, reload memory-mapped and
    answer the same generated questions; the table comes out."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "retrieval_scale.py"), "--quick", "--work", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ours")]
    assert rows and not any("failed" in row for row in rows), done.stdout


def test_retrieval_scale_bench_runs_only_the_libraries_asked(tmp_path):
    """``--libraries ours``: the 1M run leaves out bm25s, whose in-memory build would need ~15 GB there."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "retrieval_scale.py"), "--quick", "--libraries", "ours",
         "--work", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ours = [line for line in done.stdout.splitlines() if line.startswith("| ours")]
    bm25s = [line for line in done.stdout.splitlines() if line.startswith("| bm25s")]
    assert ours and "not run" not in ours[0] and "failed" not in ours[0], done.stdout
    assert bm25s and "not run (--libraries)" in bm25s[0], done.stdout
    assert "ours / bm25s" not in done.stdout  # no ratio without both
