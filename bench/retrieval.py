"""BM25 speed and memory: this framework's two modes, rank-bm25 and bm25s, on the same tokens, in one run.

    nice -n 19 python bench/retrieval.py                        # 60k generated passages + the embedded corpus
    python bench/retrieval.py --passages 10000 --queries 500    # quicker

Two corpora: a generated one of ``--passages`` (default 60,000) Korean-like passages (Zipf-distributed
pseudo-words of Hangul syllables with particles, ~120 words each) with questions drawn from one passage
each, and the embedded ``data/mrc_sample`` corpus (5,361 passages in 1.1) with its 459 validation questions.

Every library gets the same tokens (``--tokenizer``, default character bigrams, tokenised once, cached under
``--cache-dir`` and not timed) as lists of strings.  Each library runs in its own process so that its peak RSS is its own:

* index s: building the index from token lists (vocabulary included);
* q/s: queries per second for top-``k`` (default 100), token lists in, ranked ids out (after two warm-up
  queries, which also compile numba kernels);
* peak RSS: the process's maximum resident set; +index: the rise over the RSS after loading the tokens.

The token lists are loaded, garbage-collected and frozen (``gc.freeze``) before anything is timed, so that
a full collection over the harness's own millions of objects lands in no library's timings.

rank-bm25 (and our ``rank_bm25`` mode, which calls it) scores one query in Python over every passage,
so on the generated corpus they run ``--slow-queries`` (default 10) queries and q/s is extrapolated per
query; the output says so.  Our fast mode (``dtype`` float64, its default, and float32) and bm25s each run
with numpy (bm25s's default backend) and, when numba is installed, with numba; every library runs on one
thread (bm25s ``n_threads=1``).  recall@1 / recall@10 (gold: the passage a question was drawn from) check
that every library ranks alike.

End to end (one table per ``--e2e-tokenizer``, generated corpus; default: character bigrams, then the framework's
default, Kiwi nouns + character bigrams): raw question strings in, ranked passage ids out, query tokenisation
included. The corpus is tokenised once with it (cached under ``--cache-dir``; not timed) and both libraries index
those tokens; the timing covers tokenising and searching every question, ``--repeats`` passes (median shown),
every contender in one process with their passes interleaved, so that a busy machine's swings land on all alike:

* ``ours-e2e`` (numba) / ``ours-e2e-numpy``: ``BM25Retriever.search(questions)``; it tokenises in chunks of 256
  questions, the next chunk in a worker thread while this one is scored (Kiwi and the numba kernel release the
  GIL), Kiwi with its default threads (one per core);
* ``bm25s-e2e-splitter`` (the baseline of the 2x target): bm25s with our token function the way bm25s takes
  one, its own ``Tokenizer(splitter=ours)``, which calls it once per question (what a list comprehension over
  the questions does too), then ``retrieve``: the same tokens, produced the way a bm25s user gets them;
* ``bm25s-e2e-batched``: the strictest: our tokenizer on the whole batch of questions (Kiwi's threaded batch
  path, timed) then ``retrieve``, i.e. bm25s given our batching and Kiwi's threads too.

bm25s runs its numba backend, one thread (``n_threads=1``), as ours scores on one. Nobody caches query tokens.
``e2e x`` = ours-e2e q/s / that row's; the issue's target is 2x.

    python bench/retrieval.py --quick     # 2,000 generated passages, 200 questions, generated corpus only
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import table  # noqa: E402
from retrievals.token_cache import TokenizedCorpus  # noqa: E402
from retrievals.tokenizers import build_tokenizer  # noqa: E402

LIBRARIES = (
    "ours-fast",
    "ours-fast-numba",
    "ours-fast-f32",
    "ours-fast-numba-f32",
    "ours-rank_bm25",
    "rank-bm25",
    "bm25s",
    "bm25s-numba",
)
NEEDS_NUMBA = {"ours-fast-numba", "ours-fast-numba-f32", "bm25s-numba"}
E2E = "e2e"  # the worker that times every end-to-end contender
SLOW = {"ours-rank_bm25", "rank-bm25"}
PARTICLES = [
    "",
    "",
    "",
    "",
    "이",
    "가",
    "은",
    "는",
    "을",
    "를",
    "의",
    "에",
    "에서",
    "으로",
    "로",
    "와",
    "과",
    "도",
    "이다",
    "였다",
    "했다",
    "하는",
    "된",
    "에게",
]
QUESTION_WORDS = ["무엇인가", "언제", "어디인가", "누구인가", "몇", "어느", "무엇을", "어떤"]


# ----------------------------------------------------------------------------- data


def korean_like_corpus(
    n_passages: int, n_queries: int, seed: int = 0
) -> tuple[list[str], list[str], list[int]]:
    """Passages of Zipf-distributed pseudo-words, and questions made of words of one passage (its gold)."""
    rng = np.random.default_rng(seed)
    stems = korean_like_stems(rng)
    return korean_like_passages(rng, stems, n_passages, n_queries)


def korean_like_stems(rng: np.random.Generator, n_stems: int = 150_000) -> list[str]:
    """The pseudo-word stems (1-4 Hangul syllables, Zipf-distributed syllables), most frequent first."""
    initials = np.array([0, 2, 3, 5, 6, 7, 9, 11, 12, 14, 15, 16, 17, 18])  # ㄱㄴㄷㄹㅁㅂㅅㅇㅈㅊㅋㅌㅍㅎ
    vowels = np.array([0, 4, 8, 13, 18, 20, 1, 5, 6, 12, 17])  # ㅏㅓㅗㅜㅡㅣㅐㅔ ㅕ ㅛ ㅠ
    finals = np.array([0, 0, 0, 4, 8, 21, 1, 16, 17])  # none (x3) ㄴ ㄹ ㅇ ㄱ ㅁ ㅂ
    syllables = sorted(
        {chr(0xAC00 + (i * 21 + v) * 28 + f) for i in initials for v in vowels for f in finals}
    )
    syl_p = 1.0 / np.arange(1, len(syllables) + 1) ** 0.8
    syl = np.array(syllables)[rng.permutation(len(syllables))]
    lengths = rng.choice([1, 2, 2, 2, 3, 3, 4], n_stems)
    picks = rng.choice(len(syl), lengths.sum(), p=syl_p / syl_p.sum())
    flat, stems = syl[picks].tolist(), []
    pos = 0
    for size in lengths.tolist():
        stems.append("".join(flat[pos : pos + size]))
        pos += size
    return stems


def korean_like_passages(
    rng: np.random.Generator, stems: list[str], n_passages: int, n_queries: int
) -> tuple[list[str], list[str], list[int]]:
    """``n_passages`` passages of ~120 stems with particles (Zipf over ``stems``), and ``n_queries`` questions
    of 3-6 words of one passage each (its index: the gold)."""
    n_stems = len(stems)
    word_p = 1.0 / np.arange(1, n_stems + 1) ** 1.07
    word_p /= word_p.sum()
    doc_words = np.clip(rng.lognormal(np.log(110), 0.45, n_passages).astype(int), 15, 600)
    words = rng.choice(n_stems, int(doc_words.sum()), p=word_p).tolist()
    parts = rng.integers(0, len(PARTICLES), int(doc_words.sum())).tolist()
    passages, pos = [], 0
    for size in doc_words.tolist():
        passages.append(
            " ".join(
                stems[w] + PARTICLES[p]
                for w, p in zip(words[pos : pos + size], parts[pos : pos + size], strict=True)
            )
        )
        pos += size
    queries, gold = [], []
    starts = np.concatenate(([0], np.cumsum(doc_words)))
    for _ in range(n_queries):
        doc = int(rng.integers(n_passages))
        doc_stems = words[int(starts[doc]) : int(starts[doc + 1])]
        chosen = rng.choice(doc_stems, min(len(doc_stems), int(rng.integers(3, 7))), replace=False).tolist()
        q = [stems[w] + PARTICLES[int(rng.integers(len(PARTICLES)))] for w in chosen]
        q.append(QUESTION_WORDS[int(rng.integers(len(QUESTION_WORDS)))])
        queries.append(" ".join(q) + "?")
        gold.append(doc)
    return passages, queries, gold


def embedded_corpus() -> tuple[list[str], list[str], list[int]]:
    from retrievals.corpus import gold_passage_ids, load_corpus
    from tasks.retrieve import read_queries

    passages = load_corpus(ROOT / "data" / "mrc_sample" / "corpus.jsonl")
    queries = read_queries(ROOT / "data" / "mrc_sample" / "validation.json")
    gold = gold_passage_ids(queries, passages)
    position = {p.id: i for i, p in enumerate(passages)}
    texts = [f"{p.title}\n{p.text}" for p in passages]
    return texts, [q.question for q in queries], [position[next(iter(gold[q.id]))] for q in queries]


# ----------------------------------------------------------------------------- one library, own process


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process.  Not ru_maxrss: Linux carries that over from the
    parent through fork + exec, so every worker would report the driver's peak."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(library: str, data_dir: Path, k: int, n_queries: int) -> dict:
    corpus = TokenizedCorpus.load(data_dir, "corpus").as_lists()
    queries = TokenizedCorpus.load(data_dir, "queries").as_lists()[:n_queries]
    gold = json.loads((data_dir / "gold.json").read_text())[: len(queries)]
    # The harness's token lists are ~20M Python objects on the 60k corpus: a full garbage collection
    # walks them all (~0.2s), whenever a library's own allocations happen to trigger one.  Frozen, they
    # are left out; what a library allocates is still collected, and timed.
    gc.collect()
    gc.freeze()
    dtype = "float32" if library.endswith("-f32") else "float64"
    if library in NEEDS_NUMBA and library.startswith(
        "ours"
    ):  # import numba, load the kernel outside the timings
        from retrievals.bm25 import BM25Retriever
        from retrievals.corpus import Passage

        BM25Retriever(tokenizer="whitespace", engine="numba", dtype=dtype).index_tokens(
            [Passage("0", "")], [["x"]]
        )
    base_rss = _status_mb("VmRSS")
    start = time.perf_counter()
    if library.startswith("ours"):
        from retrievals.bm25 import BM25Retriever
        from retrievals.corpus import Passage

        passages = [Passage(str(i), "") for i in range(len(corpus))]
        mode = "rank_bm25" if library == "ours-rank_bm25" else "fast"
        engine = "numba" if library in NEEDS_NUMBA else "numpy"
        model = BM25Retriever(tokenizer="whitespace", mode=mode, engine=engine, dtype=dtype).index_tokens(
            passages, corpus
        )
        index_s = time.perf_counter() - start
        model.search_tokens(queries[:2], k)  # warm-up
        start = time.perf_counter()
        ids = model.search_tokens(queries, k).ids  # passage ids, as the task writes them
        search_s = time.perf_counter() - start
        ranked = [[int(i) for i in row] for row in ids]  # the ids are positions here; not timed
    elif library == "rank-bm25":
        import rank_bm25

        model = rank_bm25.BM25Okapi(corpus)
        index_s = time.perf_counter() - start
        start = time.perf_counter()
        ranked = [np.argsort(-model.get_scores(q), kind="stable")[:k].tolist() for q in queries]
        search_s = time.perf_counter() - start
    else:
        import bm25s

        backend = "numba" if library == "bm25s-numba" else "numpy"
        model = bm25s.BM25(method="robertson", k1=1.5, b=0.75, backend=backend)
        model.index(corpus, show_progress=False)
        index_s = time.perf_counter() - start
        model.retrieve(queries[:2], k=k, show_progress=False, n_threads=1)  # warm-up (numba compiles here)
        start = time.perf_counter()
        ranked = model.retrieve(queries, k=k, show_progress=False, n_threads=1).documents.tolist()
        search_s = time.perf_counter() - start
    peak = _status_mb("VmHWM")
    hits = [
        next((r for r, d in enumerate(row, 1) if d == g), None) for row, g in zip(ranked, gold, strict=True)
    ]
    return {
        "index_s": index_s,
        "qps": len(queries) / search_s,
        "queries": len(queries),
        "peak_rss_mb": peak,
        "index_mb": peak - base_rss,
        "recall@1": sum(1 for h in hits if h == 1) / len(hits),
        "recall@10": sum(1 for h in hits if h is not None and h <= 10) / len(hits),
    }


def e2e_worker(data_dir: Path, k: int, tokenizer: str, repeats: int) -> dict:
    """Every end-to-end contender in this one process, their passes interleaved (ours, then each bm25s way, round
    after round) so that a busy machine's swings land on all alike. The indexes are built from the cached
    corpus tokens first (not timed), the tokenizers' models loaded and one warm-up search made each."""
    import bm25s

    from retrievals.bm25 import BM25Retriever
    from retrievals.corpus import Passage

    corpus = TokenizedCorpus.load(data_dir, "corpus")
    raw = json.loads((data_dir / "queries.json").read_text(encoding="utf-8"))
    gold = json.loads((data_dir / "gold.json").read_text())
    passages = [Passage(str(i), "") for i in range(len(corpus))]
    runs = {}
    for name, engine in (("ours-e2e", "numba"), ("ours-e2e-numpy", "numpy")):
        ours_model = BM25Retriever(tokenizer=tokenizer, engine=engine).index_tokens(passages, corpus)
        runs[name] = partial(_ours_e2e, ours_model, k)
    table_ = list(range(len(corpus.vocab)))  # shared int objects: 8 bytes a token in the lists
    offsets = corpus.offsets.tolist()
    ids = [
        [table_[t] for t in corpus.ids[a:b].tolist()] for a, b in zip(offsets[:-1], offsets[1:], strict=True)
    ]
    vocab = {token: i for i, token in enumerate(corpus.vocab)}
    model = bm25s.BM25(method="robertson", k1=1.5, b=0.75, backend="numba")
    model.index(bm25s.tokenization.Tokenized(ids=ids, vocab=vocab), show_progress=False)
    del ids, corpus
    ours = build_tokenizer(tokenizer).prepare()
    theirs = bm25s.tokenization.Tokenizer(
        lower=False, splitter=ours, stopwords=None
    )  # calls ours per question
    theirs.word_to_id = vocab  # the index's vocabulary, as if bm25s had tokenised the corpus itself

    def splitter(questions: list[str]) -> list[list[int]]:
        tokens = theirs.tokenize(questions, update_vocab=False, show_progress=False, return_as="tuple")
        return model.retrieve(tokens, k=k, show_progress=False, n_threads=1).documents.tolist()

    def batched(questions: list[str]) -> list[list[int]]:
        return model.retrieve(
            ours.tokenize(questions), k=k, show_progress=False, n_threads=1
        ).documents.tolist()

    runs.update({"bm25s-e2e-splitter": splitter, "bm25s-e2e-batched": batched})
    for run in runs.values():
        run(raw[:2])  # warm-up: compiles / loads the kernels, starts Kiwi's threads
    gc.collect()
    gc.freeze()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    ranked: dict[str, list] = {}  # per contender: ranked passage ids (ours) or positions (bm25s)
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            ranked[name] = run(raw)
            seconds[name].append(time.perf_counter() - start)
    out = {}
    for name in runs:
        # ours returns passage ids (here the positions as strings), bm25s positions: compared after the timing
        hits = [
            next((r for r, d in enumerate(row, 1) if int(d) == g), None)
            for row, g in zip(ranked[name], gold, strict=True)
        ]
        out[name] = {
            "qps": len(raw) / float(np.median(seconds[name])),
            "all_qps": [round(len(raw) / s) for s in seconds[name]],
            "recall@1": sum(1 for h in hits if h == 1) / len(hits),
            "recall@10": sum(1 for h in hits if h is not None and h <= 10) / len(hits),
        }
    return {"rows": out, "peak_rss_mb": _status_mb("VmHWM")}


def _ours_e2e(model: object, k: int, questions: list[str]) -> list[list[str]]:
    return model.search(questions, k).ids  # passage ids (strings), as the task writes them


def run_library(
    library: str, data_dir: Path, k: int, n_queries: int, extra: tuple[str, ...] = ()
) -> dict | str:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        library,
        "--data",
        str(data_dir),
        "--k",
        str(k),
        "--queries",
        str(n_queries),
        *extra,
    ]
    result = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()
        return tail[-1] if tail else f"exit {result.returncode}"
    return json.loads(result.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- driver


def bench_corpus(
    name: str, texts: list[str], queries: list[str], gold: list[int], args: argparse.Namespace
) -> None:
    from retrievals.token_cache import tokenize_corpus

    tokenizer = build_tokenizer(args.tokenizer)
    start = time.perf_counter()
    key = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()[:24]
    corpus_tokens = tokenize_corpus(  # cached under --cache-dir, shared with the end-to-end table
        tokenizer, texts, corpus_key=f"bench-retrieval-{key}", cache_dir=args.cache_dir
    )
    query_tokens = TokenizedCorpus.from_lists(tokenizer.tokenize(queries))
    tok_s = time.perf_counter() - start
    n_tokens = int(corpus_tokens.offsets[-1])
    print(
        f"\n## {name}: {len(texts):,} passages, {n_tokens:,} tokens ({n_tokens / len(texts):.0f}/passage, "
        f"{len(corpus_tokens.vocab):,} distinct), {len(queries):,} questions; tokenizer {tokenizer.name} "
        f"{tokenizer.describe()} took {tok_s:.1f}s (not timed below); top-k = {args.k}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        corpus_tokens.save(data, "corpus")
        query_tokens.save(data, "queries")
        (data / "gold.json").write_text(json.dumps(gold))
        rows: dict[str, dict | str] = {}
        for library in args.libraries.split(",") if args.libraries else LIBRARIES:
            if library in NEEDS_NUMBA and not _has_numba():
                rows[library] = "numba not installed (pip install numba)"
                continue
            slow = library in SLOW and len(texts) > 5000
            n = min(len(queries), args.slow_queries) if slow else len(queries)
            rows[library] = run_library(library, data, args.k, n)
            if slow and isinstance(rows[library], dict):
                rows[library]["note"] = f"{n} queries, q/s extrapolated per query"
            print(f"  ... {library} done", file=sys.stderr, flush=True)
    ours = {name: rows[name] for name in ("ours-fast", "ours-fast-numba") if isinstance(rows.get(name), dict)}
    base = ours.get("ours-fast") or next((row for row in rows.values() if isinstance(row, dict)), None)
    head = (
        f"| {'library':<19} | {'index s':>8} | {'q/s':>10} | {'peak RSS MB':>11} | {'+index MB':>9} | "
        f"{'R@1':>5} | {'R@10':>5} | {'numpy q/s x':>11} | {'numba q/s x':>11} | {'index s x':>9} | note |"
    )
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for library, row in rows.items():
        if not isinstance(row, dict):
            cells = " | ".join(f"{'-':>{w}}" for w in (8, 10, 11, 9, 5, 5, 11, 11, 9))
            print(f"| {library:<19} | {cells} | {row} |")
            continue

        def ratio(name: str, row: dict = row) -> str:
            return f"{ours[name]['qps'] / row['qps']:.1f}x" if name in ours else "-"

        build = f"{row['index_s'] / base['index_s']:.1f}x" if base is not None else "-"
        print(
            f"| {library:<19} | {row['index_s']:8.2f} | {row['qps']:10.1f} | {row['peak_rss_mb']:11.0f} | "
            f"{row['index_mb']:9.0f} | {row['recall@1']:5.3f} | {row['recall@10']:5.3f} | "
            f"{ratio('ours-fast'):>11} | {ratio('ours-fast-numba'):>11} | {build:>9} | {row.get('note', '')} |"
        )
    print(
        "(numpy / numba q/s x: ours-fast (numpy engine) / (numba engine) q/s divided by that library's q/s; "
        "index s x: that library's index seconds / ours-fast's)"
    )


def bench_end_to_end(
    texts: list[str], queries: list[str], gold: list[int], args: argparse.Namespace, tokenizer_name: str
) -> None:
    """The end-to-end table: raw questions in (tokenisation timed), the corpus tokens cached and shared."""
    from retrievals.token_cache import tokenize_corpus

    tokenizer = build_tokenizer(tokenizer_name)
    key = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()[:24]
    start = time.perf_counter()
    corpus = tokenize_corpus(tokenizer, texts, corpus_key=f"bench-retrieval-{key}", cache_dir=args.cache_dir)
    n_tokens = int(corpus.offsets[-1])
    print(
        f"\n## end to end: {len(texts):,} generated passages ({n_tokens:,} tokens, {len(corpus.vocab):,} distinct; "
        f"corpus tokens cached in {args.cache_dir}, {time.perf_counter() - start:.0f}s), {len(queries):,} raw "
        f"questions, tokenizer {tokenizer.describe()}, top-k = {args.k}, median of {args.repeats}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        corpus.save(data, "corpus")
        (data / "gold.json").write_text(json.dumps(gold))
        (data / "queries.json").write_text(json.dumps(queries, ensure_ascii=False), encoding="utf-8")
        extra = ("--e2e-tokenizer", tokenizer_name, "--repeats", str(args.repeats))
        result = run_library(E2E, data, args.k, len(queries), extra)
    if not isinstance(result, dict):
        print(f"end to end failed: {result}")
        return
    rows = result["rows"]
    ours = rows["ours-e2e"]
    table_rows = [
        [name, f"{row['qps']:,.0f}", ", ".join(f"{q:,}" for q in row["all_qps"]), f"{row['recall@1']:.3f}",
         f"{row['recall@10']:.3f}", f"{ours['qps'] / row['qps']:.2f}x"]
        for name, row in rows.items()
    ]  # fmt: skip
    print(table(["library", "q/s (median)", "each pass q/s", "R@1", "R@10", "e2e x"], table_rows, "lrlrrr"))
    print(
        f"(one process, passes interleaved; its peak RSS {result['peak_rss_mb']:,.0f} MB holds all four indexes)"
    )
    for name in ("bm25s-e2e-splitter", "bm25s-e2e-batched"):
        if name in rows:
            got = ours["qps"] / rows[name]["qps"]
            target = (
                "target >= 2x" if name == "bm25s-e2e-splitter" else "the 2x target's baseline is the splitter"
            )
            print(
                f"end to end ({tokenizer.name}), ours-e2e / {name}: {got:.2f}x "
                f"({'met' if got >= 2 else 'not met'}: {target})"
            )


def _has_numba() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passages", type=int, default=60_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--slow-queries", type=int, default=10)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--tokenizer", default="char_ngram")
    parser.add_argument("--skip-generated", action="store_true")
    parser.add_argument("--libraries", default="", help="comma-separated subset of " + ", ".join(LIBRARIES))
    parser.add_argument(
        "--e2e-tokenizer",
        default="char_ngram,kiwi+char_ngram",
        help="the end-to-end tables' tokenizers, comma-separated (one table each)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="end-to-end passes over the questions")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=ROOT / "outputs" / "bench" / "cache",
        help="tokenised corpora (both tables)",
    )
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="2k passages, 200 queries, generated corpus only"
    )
    parser.add_argument("--worker", choices=(*LIBRARIES, E2E), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == E2E:
        print(json.dumps(e2e_worker(args.data, args.k, args.e2e_tokenizer, args.repeats)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.k, args.queries)))
        return
    if args.quick:
        args.passages, args.queries, args.slow_queries = 2_000, 200, 3
    start = time.perf_counter()
    print(f"BM25 benchmark (Okapi, k1=1.5, b=0.75; {os.cpu_count()} CPUs; numpy {np.__version__})")
    if not args.skip_generated:
        t0 = time.perf_counter()
        texts, queries, gold = korean_like_corpus(args.passages, args.queries)
        print(
            f"(generated {len(texts):,} passages in {time.perf_counter() - t0:.1f}s; e.g. {texts[0][:60]!r}...; "
            f"question {queries[0]!r})"
        )
        bench_corpus(f"generated Korean-like corpus ({args.passages:,})", texts, queries, gold, args)
        if not args.skip_e2e:
            for name in args.e2e_tokenizer.split(","):
                bench_end_to_end(texts, queries, gold, args, name.strip())
    if not args.quick:
        bench_corpus("embedded data/mrc_sample corpus", *embedded_corpus(), args)
    print(f"\ntotal {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
