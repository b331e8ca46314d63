"""Retrieval for Korean ODQA: the retriever protocol, corpora, tokenisers, sparse (BM25 / TF-IDF) and
Elasticsearch retrievers, index manifests, metrics.

    from retrievals import BM25Retriever, load_corpus
    retriever = BM25Retriever().index(load_corpus("data/mrc_sample/corpus.jsonl"))
    ids, scores = retriever.search(["치차추강이 발원하는 산은?"], k=5)

The task verbs that use them (``task=retrieve``, ``task=odqa``) are in ``tasks/``; this package imports only
``core``.
"""

from retrievals.bm25 import BM25Retriever
from retrievals.corpus import (
    Passage,
    Query,
    gold_passage_ids,
    load_corpus,
    load_queries,
    passages_from_examples,
    queries_from_examples,
)
from retrievals.manifest import load_retriever, read_manifest
from retrievals.protocol import Retriever, SearchResult
from retrievals.sparse import SparseRetriever
from retrievals.tfidf import TfidfRetriever
from retrievals.tokenizers import Tokenizer, build_tokenizer

__all__ = [
    "BM25Retriever",
    "Passage",
    "Query",
    "Retriever",
    "SearchResult",
    "SparseRetriever",
    "TfidfRetriever",
    "Tokenizer",
    "build_tokenizer",
    "gold_passage_ids",
    "load_corpus",
    "load_queries",
    "load_retriever",
    "passages_from_examples",
    "queries_from_examples",
    "read_manifest",
]
