"""Which tokenizer should BM25 / TF-IDF use for Korean?  recall@1/5/20 of each choice, side by side.

    python bench/retrieval_tokenizers.py                  # embedded mrc_sample (+ KLUE-NLI proxy if present)
    python bench/retrieval_tokenizers.py --retriever tfidf

Datasets:

* ``mrc_sample``: the embedded validation questions against ``data/mrc_sample/corpus.jsonl`` (5,361 passages in
  mrc_sample 1.1).
* ``klue-nli (proxy)``: when ``../shared/data/klue-nli-v1.1_dev.json`` exists, each hypothesis is a query and
  its premise the gold passage among the 1000 distinct premises.  Real Korean text, but not QA: read it
  as a check on how each tokenizer copes with real morphology, not as a QA recall.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retrievals.bm25 import BM25Retriever  # noqa: E402
from retrievals.corpus import Passage, Query, context_id, gold_passage_ids, load_corpus  # noqa: E402
from retrievals.metrics import retrieval_metrics  # noqa: E402
from retrievals.tfidf import TfidfRetriever  # noqa: E402
from retrievals.tokenizers import CONTENT_KIWI_TAGS, DEFAULT_KIWI_TAGS  # noqa: E402
from tasks.retrieve import read_queries  # noqa: E402

NLI_FILE = ROOT.parent / "shared" / "data" / "klue-nli-v1.1_dev.json"
NOUN_TAGS = list(DEFAULT_KIWI_TAGS)
CHOICES: dict[str, dict] = {
    "whitespace": {"name": "whitespace"},
    "char_ngram 1-1": {"name": "char_ngram", "ngram_min": 1, "ngram_max": 1},
    "char_ngram 2-2": {"name": "char_ngram", "ngram_min": 2, "ngram_max": 2},
    "char_ngram 1-2": {"name": "char_ngram", "ngram_min": 1, "ngram_max": 2},
    "char_ngram 2-3": {"name": "char_ngram", "ngram_min": 2, "ngram_max": 3},
    "kiwi (content)": {"name": "kiwi", "kiwi_tags": list(CONTENT_KIWI_TAGS)},
    "kiwi (nouns)": {"name": "kiwi", "kiwi_tags": NOUN_TAGS},
    "hf wordpiece-8k": {"name": "hf", "hf_vocab_size": 8000},
    "kiwi (content)+char_ngram 2-2": {"name": "kiwi+char_ngram", "kiwi_tags": list(CONTENT_KIWI_TAGS)},
    "kiwi (nouns)+char_ngram 2-2 [default]": {"name": "kiwi+char_ngram", "kiwi_tags": NOUN_TAGS},
    "kiwi (nouns, multi-word dict)+char_ngram 2-2": {
        "name": "kiwi+char_ngram", "kiwi_tags": NOUN_TAGS, "kiwi_multi_dict": True
    },
    "kiwi (nouns)+char_ngram 2-3": {"name": "kiwi+char_ngram", "kiwi_tags": NOUN_TAGS, "ngram_max": 3},
    "kiwi (nouns)+char_ngram 1-2": {"name": "kiwi+char_ngram", "kiwi_tags": NOUN_TAGS, "ngram_min": 1},
    "whitespace+char_ngram 2-2": {"name": "whitespace+char_ngram"},
    "kiwi (content)+whitespace": {"name": "kiwi+whitespace", "kiwi_tags": list(CONTENT_KIWI_TAGS)},
}


def mrc_sample() -> tuple[list[Passage], list[Query]]:
    sample = ROOT / "data" / "mrc_sample"
    return load_corpus(sample / "corpus.jsonl"), read_queries(sample / "validation.json")


def klue_nli() -> tuple[list[Passage], list[Query]] | None:
    if not NLI_FILE.exists():
        return None
    rows = json.loads(NLI_FILE.read_text(encoding="utf-8"))
    passages = {}
    for row in rows:
        pid = context_id("", row["premise"])
        passages.setdefault(pid, Passage(pid, row["premise"]))
    queries = [Query(row["guid"], row["hypothesis"], row["premise"]) for row in rows]
    return list(passages.values()), queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retriever", choices=["bm25", "tfidf"], default="bm25")
    parser.add_argument("--only", nargs="*", help="subset of the choices (names as printed)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    datasets = {"mrc_sample": mrc_sample()}
    nli = klue_nli()
    if nli is not None:
        datasets["klue-nli (proxy)"] = nli
    cls = BM25Retriever if args.retriever == "bm25" else TfidfRetriever
    header = f"{'tokenizer':<38}" + "".join(f"| {name:^34} " for name in datasets)
    sub = f"{'':<38}" + "".join(f"| {'R@1':>6} {'R@5':>6} {'R@20':>6} {'tok s':>6} {'q/s':>6} " for _ in datasets)
    print(f"{args.retriever}: recall@k of each tokenizer (tok s: corpus tokenisation, q/s: search incl. tokenising)")
    print(header)
    print(sub)
    for label, spec in CHOICES.items():
        if args.only and label not in args.only:
            continue
        cells = []
        for passages, queries in datasets.values():
            gold = gold_passage_ids(queries, passages)
            retriever = cls(tokenizer=spec, cache_dir=None).index(passages)
            start = time.perf_counter()
            result = retriever.search([q.question for q in queries], 20)
            qps = len(queries) / (time.perf_counter() - start)
            m = retrieval_metrics(dict(zip([q.id for q in queries], result.ids, strict=True)), gold, (1, 5, 20))
            cells.append(f"| {m['recall@1']:6.3f} {m['recall@5']:6.3f} {m['recall@20']:6.3f} "
                         f"{retriever.tokenize_seconds:6.1f} {qps:6.0f} ")
        print(f"{label:<38}" + "".join(cells), flush=True)


if __name__ == "__main__":
    main()
