"""Wiki-scale open-domain QA: ``task=odqa`` against the contest baseline's path, end to end, in one run.

    nice -n 19 python bench/odqa_scale.py                      # 60,000 passages, 600 questions (contest size)
    python bench/odqa_scale.py --quick                         # 1,000 passages, 30 questions
    python bench/odqa_scale.py --corpus wikipedia_documents.json --reader outputs/<mrc fit run>

The contest retrieves from a 60,613-document Korean Wikipedia dump and reads 600 test questions. The corpus is
``--corpus`` (any layout ``retriever.corpus_file`` reads; texts deduplicated, as the baseline does) or
``bench/retrieval.py``'s Korean-like generator. Each question is made from one passage: an answer word of it
and 3-6 words near that word, plus a question word (``bench.retrieval.QUESTION_WORDS``); its gold is that
passage and that span. The reader is ``--reader`` (a fit run dir with ``checkpoints/last.ckpt`` and the
``hf_model/`` the fit exported from the same weights) or one trained first with ``--reader-overrides``.

Each side runs in its own process (its own peak RSS), after its libraries are imported:

* **ours**: ``tasks.runner.run_task`` of the config ``python main.py task=odqa ckpt_path=<reader>/checkpoints/
  last.ckpt backbone=local backbone.name_or_path=<reader>/backbone retriever=bm25 retriever.top_k=K
  retriever.corpus_file=... datamodule.validation_file=...`` composes (defaults otherwise: BM25
  ``kiwi+char_ngram``, ``odqa.mode=separate``, a fresh token cache);
* **baseline** (the contest baseline's path): scikit-learn ``TfidfVectorizer(tokenizer=<the reader's
  tokenizer>.tokenize, ngram_range=(1, 2))`` fitted on the passages, query vectors x passage matrix (dense
  result, ``argsort`` per question), the top K texts joined with " " into one context, run_qa's
  ``prepare_validation_features`` (``bench/_runqa.py``), HF ``Trainer.predict`` of ``hf_model/`` and
  ``utils_qa.postprocess_qa_predictions`` (``bench/postprocess.py``), with the reader run's max_seq_length,
  doc_stride, eval batch size, n_best_size and max_answer_length;
* **ours, baseline passages**: ``task=odqa``'s reading (``tasks.odqa.read_retrieved``, ``odqa.mode=concat``)
  of exactly the passages the baseline retrieved, to check that the same passages give the same answers.

Each side runs twice (``--runs both``, the default): a **first run** with nothing saved, which builds its index
and saves it (ours: ``retriever.index_dir``; the baseline pickles its fitted vectorizer and passage matrix, as the
contest baseline's ``get_sparse_embedding`` does), and a **next run**, which loads it, as every later experiment
on the same corpus does (ours with a fresh ``paths.cache_dir``: only the index is reused, no cached features).
The next run must give the same answers as the first.

Stages: index (corpus loaded, index built or loaded), retrieval (top K for every question), reading (features, model,
post-processing, answer files). Seconds are wall clock; peak RSS is ``VmHWM`` of ``/proc/self/status`` read
after each stage (the process's peak so far, so it only grows). End to end is the sum of the stages.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, emit, machine_line, number, ratio, run_worker, status_mb, table  # noqa: E402

STAGES = ("index", "retrieval", "reading")
# --runs: what each side has saved before it starts
RUNS = {
    "first": "first run: nothing saved (index built from the corpus, then saved)",
    "next": "next run: each side loads the index its first run saved (ours retriever.index_dir, the baseline its "
    "pickles)",
}
QUICK = {"passages": 1_000, "questions": 30}
READER_OVERRIDES = ["+experiment=mrc_curriculum", "trainer.max_steps=150", "datamodule.max_eval_examples=64"]
QUICK_READER_OVERRIDES = [
    "+experiment=mrc_curriculum",
    "trainer.max_steps=8",
    "datamodule.max_train_examples=128",
    "datamodule.max_eval_examples=16",
    "backbone.config.hidden_size=32",
    "backbone.config.num_hidden_layers=1",
    "backbone.config.num_attention_heads=2",
    "backbone.config.intermediate_size=64",
    "backbone.tokenizer.vocab_size=2000",
]


# ----------------------------------------------------------------------------- data


def corpus_texts(corpus: Path | None, n_passages: int, seed: int) -> list[str]:
    """``--corpus``'s distinct texts (first seen first), or ``n_passages`` generated Korean-like passages."""
    if corpus is None:
        from bench.retrieval import korean_like_corpus

        return korean_like_corpus(n_passages, 0, seed=seed)[0]
    from retrievals.corpus import load_corpus

    return list(dict.fromkeys(p.text for p in load_corpus(corpus)))


def make_questions(texts: list[str], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` questions, each an answer word of one passage and words near it: SQuAD-style records."""
    from bench.retrieval import QUESTION_WORDS

    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        doc = rng.randrange(len(texts))
        words = [(m.start(), m.group()) for m in re.finditer(r"\S+", texts[doc])]
        if len(words) < 8:
            continue
        at = rng.randrange(len(words))
        start, answer = words[at]
        near = [w for j, (_, w) in enumerate(words) if j != at and abs(j - at) <= 12]
        asked = rng.sample(near, min(len(near), rng.randint(3, 6)))
        out.append(
            {
                "id": f"q{len(out):05d}",
                "title": f"문서 {doc}",
                "context": texts[doc],
                "question": " ".join([*asked, rng.choice(QUESTION_WORDS)]) + "?",
                "answers": [{"text": answer, "answer_start": start}],
                "document_id": doc,
            }
        )
    return out


def write_data(work: Path, texts: list[str], questions: list[dict[str, Any]]) -> tuple[Path, Path]:
    """The corpus in the contest's ``wikipedia_documents.json`` layout and the questions as SQuAD JSON."""
    from bench._common import write_squad

    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "wikipedia_documents.json"
    documents = {
        str(i): {"title": f"문서 {i}", "text": text, "document_id": i} for i, text in enumerate(texts)
    }
    corpus.write_text(json.dumps(documents, ensure_ascii=False), encoding="utf-8")
    return corpus, write_squad(work / "questions.json", questions)


def train_reader(run_dir: Path, overrides: list[str]) -> Path:
    """``python main.py <overrides>`` into ``run_dir`` (kept: a second bench run reuses it)."""
    if (run_dir / "checkpoints" / "last.ckpt").exists() and (run_dir / "hf_model").is_dir():
        return run_dir
    command = [
        sys.executable,
        str(ROOT / "main.py"),
        *overrides,
        "logger=none",
        "print_config=false",
        "callbacks.progress_bar=null",
        f"hydra.run.dir={run_dir}",
    ]
    print(f"training the reader -> {run_dir}", file=sys.stderr, flush=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f"{run_dir.name}.log", "w", encoding="utf-8") as log:
        subprocess.run(command, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
    return run_dir


def ours_overrides(
    reader: Path, corpus: Path, questions: Path, top_k: int, cache: Path, index_dir: Path | None = None
) -> list[str]:
    """What a user types after ``python main.py`` to answer these questions with this reader (with
    ``index_dir``: the index saved there by the first run, loaded by the next)."""
    saved = [f"retriever.index_dir={index_dir}"] if index_dir else []
    return [
        *saved,
        "task=odqa",
        f"ckpt_path={reader / 'checkpoints' / 'last.ckpt'}",
        "backbone=local",
        f"backbone.name_or_path={reader / 'backbone'}",
        "retriever=bm25",
        f"retriever.top_k={top_k}",
        f"retriever.corpus_file={corpus}",
        f"datamodule.validation_file={questions}",
        "datamodule.validation_split=null",
        f"paths.cache_dir={cache}",
        "logger=none",
        "print_config=false",
        "callbacks.progress_bar=null",
    ]


# ----------------------------------------------------------------------------- workers (own processes)


class Stages:
    """Seconds and peak RSS (VmHWM, MB) at the end of each stage, timed from the previous stage's end."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, float]] = {}
        self.start_rss = status_mb("VmRSS")
        self.last = time.perf_counter()

    def done(self, stage: str) -> None:
        now = time.perf_counter()
        self.rows[stage] = {"seconds": now - self.last, "peak_rss_mb": status_mb("VmHWM")}
        self.last = now

    def timed(self, stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            out = function(*args, **kwargs)
            self.done(stage)
            return out

        return wrapped

    def result(self) -> dict[str, Any]:
        return {
            "stages": self.rows,
            "start_rss_mb": self.start_rss,
            "seconds": sum(row["seconds"] for row in self.rows.values()),
            "peak_rss_mb": max(row["peak_rss_mb"] for row in self.rows.values()),
        }


def ours_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """``task=odqa`` as ``main.py`` runs it; index and retrieval are timed where ``tasks.odqa`` calls them."""
    from tasks import odqa
    from tasks.runner import compose_config, run_task

    out = Path(spec["out"])
    stages = Stages()
    cfg = compose_config(spec["overrides"], out)
    # the stage boundaries: the module's own references to the retrieve functions, wrapped to time them
    odqa.prepare_retriever = stages.timed("index", odqa.prepare_retriever)
    odqa.retrieve_passages = stages.timed("retrieval", odqa.retrieve_passages)
    metrics = run_task(cfg)
    stages.done("reading")
    top_k = int(cfg.retriever.top_k)
    return {
        **stages.result(),
        "exact_match": metrics["exact_match"],
        "recall": metrics[f"retrieval_recall@{top_k}"],
        "predictions": json.loads((out / "predictions.json").read_text(encoding="utf-8")),
    }


def ours_same_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """``task=odqa``'s reading (concat) of the passages the baseline retrieved, in the baseline's order."""
    from tasks.odqa import concatenated_answers, read_retrieved
    from tasks.runner import compose_config

    chosen: dict[str, list[str]] = spec["retrieved"]

    def baseline_passages(queries: list, passages: list) -> dict:
        by_id = {p.id: p for p in passages}
        return {q.id: [(by_id[pid], 0.0) for pid in chosen[q.id]] for q in queries}

    cfg = compose_config(spec["overrides"], Path(spec["out"]))
    reading = read_retrieved(cfg, "concat", retrieve=baseline_passages)
    predictions, _ = concatenated_answers(reading.queries, reading.retrieved, reading.nbest)
    return {"predictions": predictions}


def baseline_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The contest baseline: TF-IDF top K, joined, run_qa features, ``Trainer.predict``, utils_qa decoding."""
    import pickle

    import numpy as np
    import torch
    from datasets import Dataset
    from sklearn.feature_extraction.text import TfidfVectorizer
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, Trainer, TrainingArguments

    from bench._runqa import prepare_validation_features
    from bench.postprocess import postprocess_qa_predictions

    torch.set_num_threads(int(spec["threads"]))
    stages = Stages()
    wiki = json.loads(Path(spec["corpus"]).read_text(encoding="utf-8"))
    keys = list(wiki)
    contexts = [wiki[key]["text"] for key in keys]
    del wiki
    tokenizer = AutoTokenizer.from_pretrained(spec["hf_model"])
    # as the contest baseline's get_sparse_embedding: fit and pickle once, later runs load the pickles
    saved = Path(spec["embedding_dir"])
    embedding_file, vectorizer_file = saved / "sparse_embedding.bin", saved / "tfidv.bin"
    if embedding_file.is_file() and vectorizer_file.is_file():
        with open(embedding_file, "rb") as file:
            p_embedding = pickle.load(file)
        with open(vectorizer_file, "rb") as file:
            vectorizer = pickle.load(file)
    else:
        vectorizer = TfidfVectorizer(tokenizer=tokenizer.tokenize, ngram_range=(1, 2), token_pattern=None)
        p_embedding = vectorizer.fit_transform(contexts)
        saved.mkdir(parents=True, exist_ok=True)
        with open(embedding_file, "wb") as file:
            pickle.dump(p_embedding, file)
        with open(vectorizer_file, "wb") as file:
            pickle.dump(vectorizer, file)
    stages.done("index")

    squad = json.loads(Path(spec["questions"]).read_text(encoding="utf-8"))["data"]
    rows = [
        (qa["id"], qa["question"])
        for article in squad
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]
    top_k = int(spec["top_k"])
    query_vec = vectorizer.transform([question for _, question in rows])
    result = query_vec * p_embedding.T
    result = result.toarray()
    doc_indices = [np.argsort(result[i, :])[::-1][:top_k].tolist() for i in range(result.shape[0])]
    del result
    stages.done("retrieval")

    examples = Dataset.from_dict(
        {
            "id": [qid for qid, _ in rows],
            "question": [question for _, question in rows],
            "context": [" ".join(contexts[d] for d in docs) for docs in doc_indices],
        }
    )
    features = examples.map(
        lambda batch: prepare_validation_features(
            batch, tokenizer, spec["max_seq_length"], spec["doc_stride"]
        ),
        batched=True,
        remove_columns=examples.column_names,
    )
    model = AutoModelForQuestionAnswering.from_pretrained(spec["hf_model"])
    arguments = TrainingArguments(
        output_dir=str(Path(spec["out"]) / "trainer"),
        per_device_eval_batch_size=int(spec["batch_size"]),
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    output = Trainer(model=model, args=arguments).predict(
        features.remove_columns(["example_id", "offset_mapping"])
    )
    predictions, _ = postprocess_qa_predictions(
        examples,
        features,
        output.predictions[:2],
        n_best_size=int(spec["n_best_size"]),
        max_answer_length=int(spec["max_answer_length"]),
    )
    stages.done("reading")
    hits = {qid: [keys[d] for d in docs] for (qid, _), docs in zip(rows, doc_indices, strict=True)}
    return {**stages.result(), "predictions": dict(predictions), "retrieved": hits, "features": len(features)}


WORKERS = {"ours": ours_worker, "ours-same": ours_same_worker, "baseline": baseline_worker}


def worker_main(kind: str, spec_file: Path) -> None:
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    emit(WORKERS[kind](spec))


# ----------------------------------------------------------------------------- driver


def call(kind: str, spec: dict[str, Any], work: Path, threads: int) -> dict[str, Any]:
    """One worker in its own process; a failure stops the bench with the worker's last error line."""
    spec_file = work / f"{kind}.spec.json"
    spec_file.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    print(f"running {kind} ...", file=sys.stderr, flush=True)
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    result = run_worker(Path(__file__), ["--worker", kind, "--spec", str(spec_file)], env=env)
    if isinstance(result, str):
        raise SystemExit(f"{kind} failed: {result} (log: run it with --worker {kind} --spec {spec_file})")
    summary = {k: v for k, v in result.items() if k not in ("predictions", "retrieved")}
    (work / f"{kind}.result.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"{kind}: {json.dumps(summary)}", file=sys.stderr, flush=True)
    return result


def gold_scores(questions: list[dict[str, Any]], predictions: dict[str, str]) -> float:
    from models.mrc_metrics import score_predictions

    return float(score_predictions(questions, predictions, "korquad")["exact_match"])


def reader_settings(overrides: list[str], work: Path) -> dict[str, Any]:
    """The reading settings ours runs with, for the baseline to use the same."""
    from datamodules.mrc import resolve_eval_batch_size
    from tasks.runner import compose_config

    cfg = compose_config(overrides, work / "compose")
    dm = cfg.datamodule
    return {
        "max_seq_length": int(dm.max_seq_length),
        "doc_stride": int(dm.doc_stride),
        "batch_size": resolve_eval_batch_size(dm.eval_batch_size, int(dm.batch_size)),
        "n_best_size": int(cfg.model.n_best_size),
        "max_answer_length": int(cfg.model.max_answer_length),
    }


def report(run: str, ours: dict, base: dict, top_k: int) -> list[str]:
    """One run's markdown table and its target lines."""
    rows = []
    for stage in (*STAGES, None):
        o, b = (ours["stages"][stage], base["stages"][stage]) if stage else (ours, base)
        rows.append(
            [
                stage or "**end to end**",
                number(o["seconds"], 1),
                number(b["seconds"], 1),
                ratio(o["seconds"], b["seconds"]),
                number(o["peak_rss_mb"]),
                number(b["peak_rss_mb"]),
                ratio(o["peak_rss_mb"], b["peak_rss_mb"]),
            ]
        )
    rows.append([f"recall@{top_k}", f"{ours['recall']:.3f}", f"{base['recall']:.3f}", "", "", "", ""])
    rows.append(
        ["EM vs generated gold", f"{ours['exact_match']:.1f}", f"{base['exact_match']:.1f}", "", "", "", ""]
    )
    header = ["stage", "ours s", "baseline s", "ours/base", "ours peak RSS MB", "baseline peak RSS MB", "ours/base"]
    faster = ours["seconds"] < base["seconds"]
    smaller = ours["peak_rss_mb"] <= base["peak_rss_mb"]
    return [
        f"\n### {RUNS[run]}\n",
        table(header, rows),
        "",
        f"start RSS (after imports): ours {ours['start_rss_mb']:,.0f} MB, baseline {base['start_rss_mb']:,.0f} MB; "
        f"baseline features read: {base['features']:,}",
        f"{run} run: target faster end to end: {'met' if faster else 'not met'} "
        f"({ratio(ours['seconds'], base['seconds'])}); target peak RSS at most the baseline's: "
        f"{'met' if smaller else 'not met'} ({ratio(ours['peak_rss_mb'], base['peak_rss_mb'])})",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passages", type=int, default=60_000)
    parser.add_argument("--questions", type=int, default=600)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument(
        "--corpus", type=Path, default=None, help="a corpus file instead of generated passages"
    )
    parser.add_argument("--reader", type=Path, default=None, help="a fit run dir (default: train one)")
    parser.add_argument("--reader-overrides", nargs="*", default=None, help="main.py overrides that train it")
    parser.add_argument(
        "--ours-overrides",
        nargs="*",
        default=[],
        help="more main.py overrides for ours (e.g. another tokenizer)",
    )
    parser.add_argument("--work", type=Path, default=Path("outputs/bench_odqa_scale"))
    parser.add_argument("--threads", type=int, default=1, help="torch / OMP threads of each side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK} and a tinier reader: for tests")
    parser.add_argument("--out", type=Path, default=None, help="write the results here as JSON")
    parser.add_argument(
        "--runs", choices=("both", "first"), default="both", help="the first run alone, or then the next (index saved)"
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.spec)
        return
    if args.quick:
        args.passages, args.questions = QUICK["passages"], QUICK["questions"]
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    tag = (
        f"{args.passages}x{args.questions}" if args.corpus is None else f"{args.corpus.stem}x{args.questions}"
    )
    data_dir = work / tag
    data_dir.mkdir(parents=True, exist_ok=True)
    texts = corpus_texts(args.corpus, args.passages, args.seed)
    questions = make_questions(texts, args.questions, args.seed + 1)
    corpus, questions_file = write_data(data_dir, texts, questions)
    overrides = args.reader_overrides or (QUICK_READER_OVERRIDES if args.quick else READER_OVERRIDES)
    reader = (
        args.reader or train_reader(work / ("reader-quick" if args.quick else "reader"), overrides)
    ).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    saved = data_dir / f"saved-{stamp}"  # each side's saved index: written by the first run, loaded by the next

    def ours_args(run: str) -> list[str]:
        # a fresh cache each run: the next run reuses the saved index, not the features of the first
        cache = data_dir / f"cache-{stamp}-{run}"
        return [*ours_overrides(reader, corpus, questions_file, args.top_k, cache, saved / "ours-index"),
                *args.ours_overrides]

    settings = reader_settings(ours_args("first"), data_dir)
    print("ours: python main.py " + " ".join(ours_args("first")), file=sys.stderr, flush=True)
    gold_doc = {q["id"]: str(q["document_id"]) for q in questions}
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for run in RUNS if args.runs == "both" else ("first",):
        base = call(
            "baseline",
            {
                "corpus": str(corpus),
                "questions": str(questions_file),
                "top_k": args.top_k,
                "hf_model": str(reader / "hf_model"),
                "embedding_dir": str(saved / "baseline"),
                "out": str(data_dir / f"baseline-{run}"),
                "threads": args.threads,
                **settings,
            },
            data_dir,
            args.threads,
        )
        base["recall"] = sum(gold_doc[q] in hits for q, hits in base["retrieved"].items()) / len(questions)
        base["exact_match"] = gold_scores(questions, base["predictions"])
        ours = call(
            "ours", {"overrides": ours_args(run), "out": str(data_dir / f"ours-{stamp}-{run}")}, data_dir, args.threads
        )
        runs[run] = {"ours": ours, "baseline": base}

    # the same passages: ours reads the baseline's, from a corpus of just those (no 60k index to rebuild)
    base = next(iter(runs.values()))["baseline"]
    chosen = sorted({pid for hits in base["retrieved"].values() for pid in hits}, key=int)
    subset, _ = write_data(data_dir / "baseline_passages", [texts[int(pid)] for pid in chosen], [])
    renamed = {pid: str(i) for i, pid in enumerate(chosen)}
    same_args = ours_overrides(reader, subset, questions_file, args.top_k, data_dir / f"cache-{stamp}-same")
    same = call(
        "ours-same",
        {
            "overrides": [
                *same_args,
                "odqa.mode=concat",
                "retriever.allow_missing_gold=true",
                # its index goes unused (the baseline's passages are read): the cheapest tokenizer builds it
                "retriever.tokenizer.name=whitespace",
            ],
            "out": str(data_dir / f"same-{stamp}"),
            "retrieved": {q: [renamed[p] for p in hits] for q, hits in base["retrieved"].items()},
        },
        data_dir,
        args.threads,
    )
    agree = sum(same["predictions"][q] == base["predictions"][q] for q in base["predictions"])
    share = agree / len(base["predictions"])
    info = {"passages": len(texts), "questions": len(questions), "reader": reader.name}
    print(f"{info['passages']:,} passages, {info['questions']} questions, top {args.top_k}; reader "
          f"{info['reader']}; {machine_line()}")
    for run, sides in runs.items():
        for line in report(run, sides["ours"], sides["baseline"], args.top_k):
            print(line)
    # a saved index must answer as the one it was saved from
    repeatable = {side: runs["next"][side]["predictions"] == runs["first"][side]["predictions"]
                  for side in ("ours", "baseline")} if "next" in runs else {}
    if repeatable:
        print(f"\nnext run's answers identical to the first run's: ours {repeatable['ours']}, baseline "
              f"{repeatable['baseline']}")
    print(f"\nsame passages (ours odqa.mode=concat on the baseline's top {args.top_k}): {share:.1%} of "
          f"{len(base['predictions'])} answers identical to the baseline's; target same answers on the same "
          f"passages: {'met' if share == 1.0 else 'not met'}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        drop = ("predictions", "retrieved")
        args.out.write_text(
            json.dumps(
                {
                    "info": info,
                    "top_k": args.top_k,
                    "same_passages_identical_share": share,
                    "next_run_same_answers": repeatable,
                    **{
                        f"{side}_{run}" if run != "first" else side: {
                            k: v for k, v in sides[side].items() if k not in drop
                        }
                        for run, sides in runs.items()
                        for side in ("ours", "baseline")
                    },
                    "ours_command": "python main.py " + " ".join(ours_args("first")),
                },
                indent=1,
                ensure_ascii=False,
            ),
            encoding="utf-8",
        )

if __name__ == "__main__":
    main()
