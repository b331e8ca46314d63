"""The chunked BM25 build (``retrievals/postings.py``) and the streamed query tokenisation: whatever the chunk
and block sizes, in RAM or spilled to memory-mapped ``.npy`` files, the index and the rankings are exactly
those of one pass over the whole corpus, on both engines."""

from __future__ import annotations

import numpy as np
import pytest

import retrievals.postings as postings
import retrievals.sparse as sparse
from retrievals.bm25 import BM25Retriever
from retrievals.corpus import Passage
from retrievals.index_files import npy_file

ENGINES = ["numpy", "numba"]


def _corpus(n_passages: int, seed: int = 0) -> list[list[str]]:
    """Zipf-like tokens: common terms (dense rows) and rare ones (postings), some passages empty."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 30, n_passages)
    return [[f"w{w}" for w in rng.zipf(1.3, n) % 500] for n in lengths.tolist()]


def _arrays(retriever: BM25Retriever) -> dict[str, np.ndarray]:
    return {name: np.asarray(array) for name, array in retriever._index.arrays().items()}


@pytest.mark.parametrize("variant", ["okapi", "bm25plus"])
@pytest.mark.parametrize("engine", ENGINES)
def test_chunked_build_equals_one_pass(tmp_path, monkeypatch, variant, engine):
    tokens = _corpus(3_000)
    passages = [Passage(f"p{i}", "") for i in range(len(tokens))]
    whole = BM25Retriever(tokenizer="whitespace", variant=variant, engine=engine).index_tokens(
        passages, tokens
    )
    monkeypatch.setattr(postings, "_CHUNK_TOKENS", 1_000)  # ~35 chunks
    monkeypatch.setattr(postings, "_BLOCK_POSTINGS", 700)  # many merge blocks, some one term each
    for mmap in (False, True):
        chunked = BM25Retriever(
            tokenizer="whitespace", variant=variant, engine=engine, mmap=mmap, cache_dir=tmp_path
        ).index_tokens(passages, tokens)
        assert (npy_file(chunked._index.data) is not None) == mmap
        got, expected = _arrays(chunked), _arrays(whole)
        assert got.keys() == expected.keys()
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
        queries = [tokens[i] for i in (1, 5, 900)] + [["w0"], ["w1", "w7", "w7"], ["w499", "nope"]]
        assert chunked.search_tokens(queries, 25) == whole.search_tokens(queries, 25)
    spill = tmp_path / "retrieval" / "spill"
    assert not any(p.suffix in (".docs", ".tf") for p in spill.rglob("*"))  # the chunks are removed


@pytest.mark.parametrize("engine", ENGINES)
def test_streamed_query_tokenisation_equals_one_batch(monkeypatch, engine):
    """Queries tokenised a chunk ahead of the scoring (a worker thread) give what one batch gives, in order,
    with the empty and unknown queries reported at their own positions."""
    texts = [" ".join(t) for t in _corpus(800, seed=1)]
    passages = [Passage(f"p{i}", text) for i, text in enumerate(texts)]
    retriever = BM25Retriever(tokenizer="whitespace", engine=engine, index_title=False).index(passages)
    queries = texts[:300:3] + ["", "unknownword"] + texts[300:700:7]
    monkeypatch.setattr(sparse, "_QUERY_CHUNK", 16)
    streamed = retriever.search(queries, 10)
    expected = retriever.search_tokens(retriever.tokenizer.tokenize(queries), 10)
    assert streamed == expected
    assert streamed.ids[100] == [] and streamed.ids[101] == []
