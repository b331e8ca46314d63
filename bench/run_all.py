"""Every CPU benchmark, one after the other, with all their tables: the one command docs/benchmarks.md documents.

    nice -n 19 python bench/run_all.py                  # the full set, sized for < 10 minutes on 2 CPU cores
    python bench/run_all.py --quick                     # every script's seconds-long smoke run
    python bench/run_all.py --only train_throughput,postprocess

Runs, each in its own process with its defaults (``--quick`` passes ``--quick``):

1. ``train_throughput.py``: samples/s, tokens/s, padding and peak RSS of a raw PyTorch loop, HF Trainer
   (run_qa-style) and this framework, with and without length-grouped batches, on the embedded set and a
   generated long-context set;
2. ``preprocess.py``: doc-stride features/s against run_qa's ``prepare_*_features``; cold build and cache hit;
3. ``postprocess.py``: span decoding of 6,000 questions against ``utils_qa.postprocess_qa_predictions``,
   with the agreement of the predictions (must be 100%);
4. ``memory.py``: peak RSS of building a retrieval index (ours, rank-bm25, bm25s, scikit-learn).

``bench/retrieval.py`` (BM25 query speed on 60,000 passages) and ``bench/retrieval_tokenizers.py`` (recall
per tokenizer) are slower and stay separate. Extra arguments after ``--`` go to every script.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SCRIPTS = ("train_throughput", "preprocess", "postprocess", "memory")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="every script's --quick smoke run")
    parser.add_argument(
        "--only", default=",".join(SCRIPTS), help=f"comma-separated subset of {', '.join(SCRIPTS)}"
    )
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    chosen = [s.strip().removesuffix(".py") for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCRIPTS))
    if unknown:
        parser.error(f"unknown --only {unknown}: choose from {', '.join(SCRIPTS)}")
    start = time.perf_counter()
    failed, times = [], []
    for name in chosen:
        command = [sys.executable, str(BENCH / f"{name}.py"), *(["--quick"] if args.quick else []), *extra]
        print(f"\n$ {' '.join(['python', f'bench/{name}.py', *command[2:]])}\n", flush=True)
        began = time.perf_counter()
        code = subprocess.call(command, cwd=BENCH.parent)
        times.append((name, time.perf_counter() - began))
        if code != 0:
            failed.append(f"{name} (exit {code})")
    print("\n" + ", ".join(f"{name} {seconds:.0f}s" for name, seconds in times))
    print(
        f"all benchmarks: {time.perf_counter() - start:.0f}s"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
