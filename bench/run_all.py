"""Every CPU benchmark, one after the other, with all their tables: the one command docs/benchmarks.md documents.

    nice -n 19 python bench/run_all.py                  # the full set (about 30 minutes on 2 CPU cores)
    python bench/run_all.py --quick                     # every script's seconds-long smoke run
    python bench/run_all.py --only train_throughput,postprocess
    python bench/run_all.py --report outputs/bench/report.md   # the tables also go to one markdown file

Runs, each in its own process with its defaults (``--quick`` passes ``--quick``):

1. ``train_throughput.py``: samples/s, tokens/s, padding and peak RSS of a raw PyTorch loop, HF Trainer
   (run_qa-style) and this framework, with and without length-grouped batches, on the embedded set and a
   generated long-context set;
2. ``preprocess.py``: doc-stride features/s against run_qa's ``prepare_*_features``; cold build and cache hit;
3. ``postprocess.py``: span decoding of 6,000 questions against ``utils_qa.postprocess_qa_predictions``,
   with the agreement of the predictions (must be 100%);
4. ``memory.py``: peak RSS of building a retrieval index (ours, rank-bm25, bm25s, scikit-learn) and of
   ``task=retrieve`` against its index;
5. ``retrieval.py``: BM25 queries/s on 60,000 passages, query tokenisation included, against bm25s and
   rank-bm25;
6. ``odqa_scale.py``: ``task=odqa`` on a 60,000-passage corpus with 600 questions against the contest
   baseline (scikit-learn TF-IDF + run_qa + ``Trainer.predict``), seconds and peak RSS per stage.

Not in the set: ``retrieval_scale.py`` (1M passages, memory-mapped indexes; tables in docs/retrieval.md),
``retrieval_tokenizers.py``, ``dense_hybrid.py`` and ``odqa_passages.py`` (recall and EM, not speed; tables
in docs/retrieval.md, docs/dense.md, docs/odqa.md) and ``gpu.py`` (needs a GPU). Extra arguments after
``--`` go to every script.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SCRIPTS = ("train_throughput", "preprocess", "inference", "postprocess", "memory", "retrieval", "odqa_scale")


def run_script(name: str, arguments: list[str], report: list[str]) -> int:
    """Run one script, echoing its output as it comes and keeping it for the report."""
    command = [sys.executable, str(BENCH / f"{name}.py"), *arguments]
    header = f"$ {' '.join(['python', f'bench/{name}.py', *arguments])}"
    print(f"\n{header}\n", flush=True)
    report.append(f"\n```\n{header}\n```\n")
    with subprocess.Popen(command, cwd=BENCH.parent, stdout=subprocess.PIPE, text=True, bufsize=1) as process:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            report.append(line.rstrip("\n"))
    return process.returncode


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="every script's --quick smoke run")
    parser.add_argument(
        "--only", default=",".join(SCRIPTS), help=f"comma-separated subset of {', '.join(SCRIPTS)}"
    )
    parser.add_argument("--report", type=Path, help="also write every script's output to this markdown file")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    chosen = [s.strip().removesuffix(".py") for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCRIPTS))
    if unknown:
        parser.error(f"unknown --only {unknown}: choose from {', '.join(SCRIPTS)}")
    start = time.perf_counter()
    failed, times, report = [], [], []
    for name in chosen:
        began = time.perf_counter()
        code = run_script(name, [*(["--quick"] if args.quick else []), *extra], report)
        times.append((name, time.perf_counter() - began))
        if code != 0:
            failed.append(f"{name} (exit {code})")
    summary = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in times)
    total = f"all benchmarks: {time.perf_counter() - start:.0f}s" + (
        f"; FAILED: {', '.join(failed)}" if failed else ""
    )
    print(f"\n{summary}\n{total}")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text("\n".join([*report, "", summary, total, ""]), encoding="utf-8")
        print(f"report: {args.report}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
