"""Sparse retrieval for Korean ODQA: corpora, tokenisers, BM25 / TF-IDF retrievers, metrics, task=retrieve.

    from retrievals import BM25Retriever, load_corpus
    retriever = BM25Retriever().index(load_corpus("data/mrc_sample/corpus.jsonl"))
    ids, scores = retriever.search(["치차추강이 발원하는 산은?"], k=5)
"""

from retrievals.base import Retriever, SearchResult, load_retriever
from retrievals.bm25 import BM25Retriever
from retrievals.corpus import Passage, Query, gold_passage_ids, load_corpus, load_queries
from retrievals.tfidf import TfidfRetriever
from retrievals.tokenizers import Tokenizer, build_tokenizer

__all__ = [
    "BM25Retriever",
    "Passage",
    "Query",
    "Retriever",
    "SearchResult",
    "TfidfRetriever",
    "Tokenizer",
    "build_tokenizer",
    "gold_passage_ids",
    "load_corpus",
    "load_queries",
    "load_retriever",
]
