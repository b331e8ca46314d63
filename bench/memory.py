"""Peak memory (RSS) of building a retrieval index: this framework against rank-bm25, bm25s and scikit-learn.

    nice -n 19 python bench/memory.py                    # 20,000 generated passages + the embedded corpus
    python bench/memory.py --passages 60000
    python bench/memory.py --quick                       # seconds-long smoke run

The peak RSS of *training* is a column of ``bench/train_throughput.py``'s table (each path in its own
process); this script covers the other memory-hungry step, indexing a passage corpus.

Corpora: ``--passages`` generated Korean-like passages (``bench/retrieval.py``'s generator: Zipf-distributed
Hangul pseudo-words with particles) and the embedded ``data/mrc_sample/corpus.jsonl``. Every library
indexes the same tokens (``--tokenizer``, default character bigrams; tokenised once by the driver, not
measured) and runs in its own process, one after the other:

* ours BM25 / TF-IDF: ``BM25Retriever`` (``mode: fast``) / ``TfidfRetriever`` ``.index_tokens`` with the
  numpy engine;
* rank-bm25 ``BM25Okapi``, bm25s ``BM25`` (numpy backend), scikit-learn ``TfidfVectorizer`` (the tokens as
  its analyzer) on the same token lists;
* ours end to end, in-process: what ``python main.py task=retrieve`` runs, with only the imports
  ``task=retrieve`` needs: the config composed with Hydra (``retriever=bm25``, default ``engine: auto``, the
  tokenizer above), ``run_retrieve``: read the JSONL corpus, tokenise it (cold cache, chunk by chunk into token
  ids), build the index, search ``--queries`` generated questions (top 100) and write ``retrieved.json``;
* ours CLI: the same run as ``python main.py task=retrieve`` in a child process (peak: the child's maximum RSS);
  it also loads what ``main.py`` itself imports (Hydra, the config machinery; ``tasks/registry.py`` imports a
  task's module only when it runs, so no torch).

peak RSS = the process's maximum resident set (VmHWM) at the end, reset (``/proc/self/clear_refs``) once the
libraries are imported and the tokens loaded, so that loading's own transient peak does not count; +index =
its rise over the RSS at that point (end to end: after the imports and the numba kernel's loading, so it
includes the corpus, its tokens, the search and the output); "x ours" = that library's +index / ours BM25's.
The two ratios the issue sets, printed under the table:

* index memory = ours BM25 +index / bm25s +index (target: at most 1);
* task=retrieve = ours end to end's peak / the index's own peak (target: at most 1.5). **The index's own
  peak** is the peak RSS of a process that builds only the index: it imports the retrieval modules, loads the
  corpus's tokens (the ``ours BM25`` row: as Python lists, as every library gets them; the ``from token ids``
  row: as the compact arrays ``task=retrieve`` itself holds) and builds ours BM25 (numpy engine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (  # noqa: E402
    ROOT,
    emit,
    machine_line,
    missing,
    number,
    ratio,
    run_worker,
    status_mb,
    table,
)

LIBRARIES = {
    "ours-bm25": "ours BM25 (fast, numpy)",
    "ours-bm25-ids": "ours BM25 (fast, numpy) from token ids",
    "ours-tfidf": "ours TF-IDF (numpy)",
    "rank-bm25": "rank-bm25 BM25Okapi",
    "bm25s": "bm25s BM25 (numpy backend)",
    "sklearn-tfidf": "scikit-learn TfidfVectorizer",
    "ours-e2e": "ours end to end (task=retrieve in-process: read, tokenise, index, search, write)",
    "ours-cli": "ours CLI (python main.py task=retrieve, child process)",
}
REFERENCE_MODULES = {"rank-bm25": "rank_bm25", "bm25s": "bm25s", "sklearn-tfidf": "sklearn"}


# ----------------------------------------------------------------------------- one library, own process


def _baseline() -> float:
    """The RSS now, with the peak (VmHWM) reset to it: loading the tokens has a transient peak of its own (their
    strings and lists) that would otherwise count as the index's. Linux only; elsewhere the peak stays."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")  # 5: reset the peak RSS
    return status_mb("VmRSS")


def _overrides(data: Path, tokenizer: str, run: str) -> list[str]:
    return [
        "task=retrieve",
        "retriever=bm25",
        f"retriever.corpus_file={data / 'corpus.jsonl'}",
        f"retriever.tokenizer.name={tokenizer}",
        f"paths.cache_dir={data / f'{run}-cache'}",
        "retriever.top_k=100",
    ]


def _compose(overrides: list[str], output_dir: Path) -> Any:
    """The config ``main.py`` runs with (Hydra's compose API), without importing ``tasks.runner``: its task
    registry imports every verb (torch, transformers), which ``task=retrieve`` does not need."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from core.config import CONF_DIR, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"hydra.run.dir={output_dir}"], return_hydra_config=True)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def worker(library: str, data: Path, tokenizer: str) -> dict[str, Any]:
    """Build one library's index; every import happens before the baseline RSS is read."""
    if library == "ours-cli":  # the child's peak: getrusage of the waited-for children
        start = time.perf_counter()
        command = [sys.executable, str(ROOT / "main.py"), *_overrides(data, tokenizer, "cli"),
                   f"datamodule.validation_file={data / 'questions.json'}", f"hydra.run.dir={data / 'cli-run'}"]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            raise SystemExit(f"main.py failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        return {"seconds": time.perf_counter() - start, "peak_rss_mb": peak, "base_rss_mb": None, "terms": "-",
                "note": "imports included (no baseline)"}

    from retrievals.bm25 import BM25Retriever
    from retrievals.corpus import Passage
    from retrievals.tfidf import TfidfRetriever
    from retrievals.token_cache import TokenizedCorpus

    if library == "ours-e2e":
        from retrievals.term_index import numba_kernel
        from tasks.retrieve import run_retrieve

        kernel = numba_kernel("auto")
        if kernel is not None:  # load the compiled kernel before the baseline, as the imports
            BM25Retriever(tokenizer="whitespace", engine="numba").index_tokens([Passage("0", "")], [["x"]])
        cfg = _compose(_overrides(data, tokenizer, "e2e"), data / "e2e-run")
        base = _baseline()
        start = time.perf_counter()
        metrics = run_retrieve(cfg.retriever, str(data / "questions.json"), data / "e2e-run")
        seconds = time.perf_counter() - start
        engine = "numba" if kernel is not None else "numpy"
        return {
            "seconds": seconds,
            "peak_rss_mb": status_mb("VmHWM"),
            "base_rss_mb": base,
            "terms": metrics.get("vocab_size", "-"),
            "note": f"engine auto ({engine}); searched {metrics['questions']:,} questions; "
            f"torch imported: {'torch' in sys.modules}",
        }

    if library == "rank-bm25":
        import rank_bm25
    elif library == "bm25s":
        import bm25s
    elif library in ("sklearn-tfidf", "ours-tfidf"):  # ours TF-IDF builds on scikit-learn
        from sklearn.feature_extraction.text import TfidfVectorizer
    compact = TokenizedCorpus.load(data, "corpus")
    tokens: Any = compact if library == "ours-bm25-ids" else compact.as_lists()
    del compact
    base = _baseline()
    start = time.perf_counter()
    if library in ("ours-bm25", "ours-bm25-ids", "ours-tfidf"):
        passages = [Passage(str(i), "") for i in range(len(tokens))]
        if library == "ours-tfidf":
            model: Any = TfidfRetriever(tokenizer="whitespace", sublinear_tf=True, engine="numpy")
        else:
            model = BM25Retriever(tokenizer="whitespace", mode="fast", engine="numpy")
        model.index_tokens(passages, tokens)
        terms = len(model.vocab)
    elif library == "rank-bm25":
        model = rank_bm25.BM25Okapi(tokens)
        terms = len(model.idf)
    elif library == "bm25s":
        model = bm25s.BM25(method="robertson", k1=1.5, b=0.75, backend="numpy")
        model.index(tokens, show_progress=False)
        terms = len(model.vocab_dict)
    else:
        model = TfidfVectorizer(analyzer=lambda doc: doc, sublinear_tf=True)
        model.fit_transform(tokens)
        terms = len(model.vocabulary_)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": status_mb("VmHWM"), "base_rss_mb": base, "terms": terms}


# ----------------------------------------------------------------------------- driver


def bench_corpus(
    name: str,
    passages: list[tuple[str, str, str]],
    questions: list[str],
    args: argparse.Namespace,
    work: Path,
) -> None:
    """``passages``: (id, title, text); ``questions``: what the end-to-end run searches."""
    from retrievals.token_cache import TokenizedCorpus
    from retrievals.tokenizers import build_tokenizer

    data = work / name
    data.mkdir(parents=True, exist_ok=True)
    with open(data / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for pid, title, text in passages:
            handle.write(json.dumps({"id": pid, "title": title, "text": text}, ensure_ascii=False) + "\n")
    rows_q = [{"id": f"q{i}", "question": q} for i, q in enumerate(questions)]
    (data / "questions.json").write_text(json.dumps(rows_q, ensure_ascii=False), encoding="utf-8")
    tokenizer = build_tokenizer(args.tokenizer)
    texts = [f"{title}\n{text}" if title else text for _, title, text in passages]
    corpus = TokenizedCorpus.from_lists(tokenizer.tokenize(texts))
    corpus.save(data, "corpus")
    n_tokens = int(corpus.offsets[-1])
    results: dict[str, dict | str] = {}
    for library in LIBRARIES:
        absent = missing(REFERENCE_MODULES[library]) if library in REFERENCE_MODULES else None
        if absent:
            results[library] = absent
            continue
        results[library] = run_worker(
            Path(__file__), ["--worker", library, "--data", str(data), "--tokenizer", args.tokenizer]
        )
        print(f"  ... {name}: {library} done", file=sys.stderr, flush=True)
    ours = results.get("ours-bm25")
    rows = []
    for library, result in results.items():
        if not isinstance(result, dict):
            note = result if result.startswith("not installed") else f"failed: {result}"
            rows.append([LIBRARIES[library], "-", "-", "-", "-", "-", note])
            continue
        base = result["base_rss_mb"]
        grown = None if base is None else result["peak_rss_mb"] - base
        ours_grown = ours["peak_rss_mb"] - ours["base_rss_mb"] if isinstance(ours, dict) else None
        rows.append(
            [
                LIBRARIES[library],
                f"{result['seconds']:.2f}",
                number(result["terms"]) if isinstance(result["terms"], int) else "-",
                number(result["peak_rss_mb"]),
                "-" if grown is None else number(grown),
                ratio(grown, ours_grown, 1) if library not in ("ours-e2e", "ours-cli") else "-",
                result.get("note", ""),
            ]
        )
    print(
        f"\n### {name}: {len(passages):,} passages, {n_tokens:,} tokens ({len(corpus.vocab):,} distinct), "
        f"tokenizer {tokenizer.describe()}\n"
    )
    print(
        table(["library", "index s", "terms", "peak RSS MB", "+index MB", "x ours", "note"], rows, "lrrrrrl")
    )
    _targets(results)


def _targets(results: dict[str, dict | str]) -> None:
    """Issue 21's two memory targets: ours BM25's +index at most bm25s's; task=retrieve's peak within 1.5x
    of the index's own (the peak of a process that builds only the index: both ``ours BM25`` rows)."""
    ours, ids, ref = (results.get(name) for name in ("ours-bm25", "ours-bm25-ids", "bm25s"))
    if isinstance(ours, dict) and isinstance(ref, dict):
        grown = ours["peak_rss_mb"] - ours["base_rss_mb"]
        ref_grown = ref["peak_rss_mb"] - ref["base_rss_mb"]
        got = grown / ref_grown
        print(f"\nindex memory: ours BM25 +{grown:,.0f} MB / bm25s +{ref_grown:,.0f} MB = {got:.2f}x "
              f"(target <= 1.0x: {'met' if got <= 1 else 'not met'})")
    for run, label in (("ours-e2e", "task=retrieve in-process"), ("ours-cli", "python main.py task=retrieve")):
        e2e = results.get(run)
        for index, how in ((ours, "tokens as lists"), (ids, "tokens as ids")):
            if isinstance(e2e, dict) and isinstance(index, dict):
                got = e2e["peak_rss_mb"] / index["peak_rss_mb"]
                print(f"{label}: peak {e2e['peak_rss_mb']:,.0f} MB / the index's own peak ({how}) "
                      f"{index['peak_rss_mb']:,.0f} MB = {got:.2f}x (target <= 1.5x: "
                      f"{'met' if got <= 1.5 else 'not met'})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passages", type=int, default=20_000, help="generated passages")
    parser.add_argument(
        "--tokenizer", default="char_ngram", help="retriever tokenizer name (same for every library)"
    )
    parser.add_argument("--skip-embedded", action="store_true", help="only the generated corpus")
    parser.add_argument("--queries", type=int, default=1_000, help="questions the end-to-end run searches")
    parser.add_argument(
        "--quick", action="store_true", help="seconds-long smoke run (300 generated passages)"
    )
    parser.add_argument("--worker", choices=list(LIBRARIES), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        emit(worker(args.worker, args.data, args.tokenizer))
        return
    if args.quick:
        args.passages, args.skip_embedded, args.queries = 300, True, 50
    from bench.retrieval import korean_like_corpus

    start = time.perf_counter()
    print(f"# Index memory ({machine_line(torch_info=False)})")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        texts, questions, _ = korean_like_corpus(args.passages, args.queries)
        bench_corpus("generated", [(f"g{i}", "", t) for i, t in enumerate(texts)], questions, args, work)
        if not args.skip_embedded:
            from bench._common import SAMPLE
            from retrievals.corpus import load_corpus

            corpus = load_corpus(SAMPLE / "corpus.jsonl")
            bench_corpus("embedded", [(p.id, p.title, p.text) for p in corpus], questions, args, work)
    print(
        "\npeak RSS MB: the process's VmHWM, reset once the libraries were imported and the tokens loaded (the "
        "CLI row: the child process's maximum RSS, imports included). The index's own peak: the 'ours BM25' rows, "
        "processes that build only the index. +index MB: peak RSS minus the RSS once the libraries were imported "
        "and the tokens loaded (end to end: once the libraries were imported); x ours: +index MB / ours BM25's."
    )
    print(f"\ntotal {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
