"""Sparse retrieval beyond RAM: build, save and serve a memory-mapped BM25 index, ours against bm25s.

    nice -n 19 python bench/retrieval_scale.py --passages 100000      # then 300000
    nice -n 19 python bench/retrieval_scale.py --passages 1000000 --libraries ours   # bm25s's build: ~15 GB
    python bench/retrieval_scale.py --quick                           # 2,000 passages, seconds

Why: issue 21 asks that a generated 1M-passage corpus index and serve on one 24 GB machine. Passages come
from ``bench/retrieval.py``'s generator, tokenised once by the driver (character bigrams by default, not
timed) and saved as a token file. Each library runs in its own process (its own peak RSS), twice:

* build: tokens in, index built and saved to disk (ours: ``BM25Retriever(mmap=True)``, which builds
  chunk by chunk through ``.npy`` files; bm25s: ``BM25.index`` then ``save``, numba backend);
* serve: a fresh process loads the saved index memory-mapped (ours ``retriever.mmap: true``, bm25s
  ``load(mmap=True)``) and answers ``--queries`` token lists for top-``k``, one thread, after two warm-ups.

peak RSS = VmHWM of that process (the token lists it loaded included, the same for both libraries).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import emit, machine_line, number, ratio, run_worker, status_mb, table  # noqa: E402

LIBRARIES = ("ours", "bm25s")


def worker(library: str, step: str, data: Path, k: int) -> dict[str, Any]:
    """One library's build (tokens in, index saved) or serve (index mapped, queries answered) step."""
    from retrievals.token_cache import TokenizedCorpus

    index_dir = data / f"index-{library}"
    if step == "build":
        corpus = TokenizedCorpus.load(data, "corpus")
        start = time.perf_counter()
        if library == "ours":
            from retrievals.bm25 import BM25Retriever
            from retrievals.corpus import Passage

            passages = [Passage(str(i), "") for i in range(len(corpus))]
            model = BM25Retriever(tokenizer="whitespace", engine="numba", mmap=True, cache_dir=data)
            model.index_tokens(passages, corpus).save(index_dir)
        else:
            import bm25s

            model = bm25s.BM25(method="robertson", k1=1.5, b=0.75, backend="numba")
            model.index(corpus.as_lists(), show_progress=False)
            model.save(str(index_dir))
        return {"seconds": time.perf_counter() - start, "peak_rss_mb": status_mb("VmHWM")}
    queries = TokenizedCorpus.load(data, "queries").as_lists()
    if library == "ours":
        from retrievals.bm25 import BM25Retriever

        model = BM25Retriever.load(index_dir, engine="numba", mmap=True)
        model.search_tokens(queries[:2], k)
        start = time.perf_counter()
        model.search_tokens(queries, k)
    else:
        import bm25s

        model = bm25s.BM25.load(str(index_dir), mmap=True)
        model.backend = "numba"
        model.retrieve(queries[:2], k=k, show_progress=False, n_threads=1)
        start = time.perf_counter()
        model.retrieve(queries, k=k, show_progress=False, n_threads=1)
    return {"qps": len(queries) / (time.perf_counter() - start), "peak_rss_mb": status_mb("VmHWM")}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passages", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--tokenizer", default="char_ngram")
    parser.add_argument("--quick", action="store_true", help="2,000 passages, 100 queries")
    parser.add_argument(
        "--libraries", nargs="+", choices=LIBRARIES, default=list(LIBRARIES),
        help="which to run (bm25s's in-memory build needs ~15 GB at 1M passages: --libraries ours)",
    )
    parser.add_argument(
        "--work", type=Path, help="where the tokens and indexes go (default: a temporary folder)"
    )
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--step", choices=("build", "serve"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        emit(worker(args.worker, args.step, args.data, args.k))
        return
    if args.quick:
        args.passages, args.queries = 2_000, 100
    from bench.retrieval import korean_like_corpus
    from retrievals.token_cache import TokenizedCorpus
    from retrievals.tokenizers import build_tokenizer

    start = time.perf_counter()
    print(f"# Sparse index at scale, memory-mapped ({machine_line(torch_info=False)})")
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-scale-", dir=args.work) as tmp:
        data = Path(tmp)
        texts, queries, _ = korean_like_corpus(args.passages, args.queries)
        tokenizer = build_tokenizer(args.tokenizer)
        TokenizedCorpus.from_chunks(
            tokenizer.tokenize(texts[i : i + 20_000]) for i in range(0, len(texts), 20_000)
        ).save(data, "corpus")
        del texts
        TokenizedCorpus.from_lists(tokenizer.tokenize(queries)).save(data, "queries")
        skipped = {"error": "not run (--libraries)"}
        results: dict[str, dict[str, Any]] = {lib: {"build": skipped, "serve": skipped} for lib in LIBRARIES}
        for library in args.libraries:
            for step in ("build", "serve"):
                flags = ["--worker", library, "--step", step, "--data", str(data), "--k", str(args.k)]
                out = run_worker(Path(__file__), flags)
                results[library][step] = (
                    out if isinstance(out, dict) else {"error": f"failed: {out}"}
                )
                print(f"  ... {library} {step} done", file=sys.stderr, flush=True)
    ours, ref = results["ours"], results["bm25s"]

    def cell(side: dict[str, Any], step: str, key: str, digits: int = 0) -> str:
        return number(side[step].get(key), digits) if key in side[step] else side[step].get("error", "-")

    rows = [
        [
            name,
            cell(side, "build", "seconds", 1),
            cell(side, "build", "peak_rss_mb"),
            cell(side, "serve", "qps", 1),
            cell(side, "serve", "peak_rss_mb"),
        ]
        for name, side in (("ours (mmap: true, numba)", ours), ("bm25s (mmap=True, numba)", ref))
    ]
    print(
        f"\n{args.passages:,} passages, {args.queries:,} queries, top-{args.k}, tokenizer {tokenizer.name}\n"
    )
    print(table(["library", "build s", "build peak MB", "q/s", "serve peak MB"], rows, "lrrrr"))
    if all("error" not in side[step] for side in (ours, ref) for step in ("build", "serve")):
        print(
            f"\nours / bm25s: build s {ratio(ours['build']['seconds'], ref['build']['seconds'])}, build peak "
            f"{ratio(ours['build']['peak_rss_mb'], ref['build']['peak_rss_mb'])}, q/s "
            f"{ratio(ours['serve']['qps'], ref['serve']['qps'])}, serve peak "
            f"{ratio(ours['serve']['peak_rss_mb'], ref['serve']['peak_rss_mb'])}"
        )
    print(f"\ntotal {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
