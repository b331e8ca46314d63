"""Smoke runs of the benchmarks: each ``bench/`` script's ``--quick`` mode prints its table.

The numbers of a quick run mean nothing (a few steps on a few questions); these tests check that every
path still runs end to end, that the tables come out, and that span decoding agrees with utils_qa.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"{script} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def table_rows(output: str, first_cell: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(f"| {first_cell}")]


@pytest.mark.slow
def test_train_throughput_quick() -> None:
    out = run_bench("train_throughput.py", "--datasets", "long")  # the embedded set runs the same code
    assert "| path" in out
    for label in (
        "(a) raw PyTorch loop",
        "(b) HF Trainer, run_qa default",
        "(b) HF Trainer, dynamic padding",
        "(c) this framework, shuffled",
        "(c) this framework, length-grouped",
    ):
        rows = table_rows(out, label)
        assert rows, f"no row for {label}:\n{out}"
        assert "failed" not in rows[0], rows[0]
    assert "ours-shuffled / raw = " in out
    # HF Trainer's rows need accelerate (the bench extra); without it they say "not installed"
    if importlib.util.find_spec("accelerate"):
        assert "ours-shuffled / hf-dynamic = " in out
    assert "raw and ours-shuffled trained on identical batches: yes" in out


def test_preprocess_quick() -> None:
    out = run_bench("preprocess.py")
    assert out.count("| what") == 2  # one table per data set
    for label in (
        "ours build_train_features",
        "ours cache hit",
        "run_qa cache hit",
        "ours build_eval_features",
    ):
        assert table_rows(out, label), f"no row for {label}:\n{out}"
    assert "MISSED its cache" not in out


def test_postprocess_quick_agrees_with_utils_qa() -> None:
    out = run_bench("postprocess.py")
    assert table_rows(out, "utils_qa postprocess_qa_predictions") and table_rows(out, "ours: topk_candidates")
    found = re.search(r"predictions (\d[\d,]*)/(\d[\d,]*) \(([\d.]+)%\)", out)
    assert found, out
    assert found.group(1) == found.group(2) and found.group(3) == "100.00", found.group(0)


def test_memory_quick() -> None:
    out = run_bench("memory.py")
    assert "| library" in out
    for label in ("ours BM25", "ours TF-IDF", "rank-bm25", "bm25s", "scikit-learn", "ours end to end"):
        rows = table_rows(out, label)
        assert rows and "failed" not in rows[0], f"{label}:\n{out}"


def test_run_all_writes_one_report(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    out = run_bench("run_all.py", "--only", "postprocess", "--report", str(report))
    text = report.read_text(encoding="utf-8")
    assert "$ python bench/postprocess.py --quick" in text and "all benchmarks:" in text
    assert table_rows(text, "ours: topk_candidates") == table_rows(out, "ours: topk_candidates")
