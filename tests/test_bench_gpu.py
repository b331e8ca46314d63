"""Smoke runs of ``bench/gpu.py``: its ``--quick`` mode on CPU, so the GPU check still runs the day a GPU is lent.

The numbers of a quick run mean nothing (tiny model, two steps); these tests check that both tasks, both paths
(this framework, HF Trainer) and every precision row come out, that the JSON is written, that the default's
one-process-per-run plumbing works, and that the default refuses to run without CUDA.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
# HF Trainer needs accelerate (the bench extra); without it the HF rows say "not installed"
HAS_ACCELERATE = importlib.util.find_spec("accelerate") is not None


def run_gpu_bench(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300
    )
    if check:
        assert result.returncode == 0, (
            f"bench/gpu.py failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def section(output: str, task: str) -> list[str]:
    """The table rows printed under ``### <task>``."""
    lines = output.split(f"### {task}:", 1)[1].split("\n\n", 2)[1].splitlines()
    return [line for line in lines[2:] if line.startswith("| ")]


def row(rows: list[str], path: str, precision: str) -> list[str]:
    found = [r for r in rows if [c.strip() for c in r.strip("|").split("|")][:2] == [path, precision]]
    assert len(found) == 1, f"no single row for {path} {precision}:\n" + "\n".join(rows)
    return [c.strip() for c in found[0].strip("|").split("|")]


def check_measured(cells: list[str]) -> None:
    steps, samples_per_s, tokens_per_s, padding, _gpu, wait = cells[2:8]
    assert steps == "2", cells
    assert float(samples_per_s.replace(",", "")) > 0 and float(tokens_per_s.replace(",", "")) > 0, cells
    assert padding.endswith("%") and wait.endswith("%"), cells


@pytest.mark.slow
def test_gpu_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    stdout = run_gpu_bench("--quick", "--out", str(out)).stdout
    assert "# GPU check" in stdout and "klue/roberta-large" not in stdout.split("\n", 2)[1]
    for task in ("reader", "classifier"):
        rows = section(stdout, task)
        assert len(rows) == 6, rows  # 3 precisions x 2 paths
        for precision in ("fp32", "bf16-mixed"):
            check_measured(row(rows, "ours", precision))
            hf = row(rows, "HF Trainer", precision)
            if HAS_ACCELERATE:
                check_measured(hf)
                assert row(rows, "ours", precision)[-1].endswith("x"), rows  # ours / HF
            else:
                assert hf[2].startswith("not installed"), hf
        for path in ("ours", "HF Trainer"):
            assert row(rows, path, "16-mixed")[2] == "skipped: needs CUDA"
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["quick"] is True and set(results["results"]) == {"reader", "classifier"}
    ours = results["results"]["reader"]["runs"]["fp32"]["ours"]
    assert ours["samples_per_s"] > 0 and ours["peak_allocated_mib"] is None  # no CUDA: no GPU memory
    assert 0 <= ours["loader_wait_share"] < 1
    # the printed report, kept beside the JSON
    markdown = out.with_suffix(".md").read_text(encoding="utf-8").splitlines()
    assert sum(line.startswith("| ours ") for line in markdown) == 6


@pytest.mark.slow
def test_gpu_bench_one_process_per_run(tmp_path: Path) -> None:
    """The default's plumbing (a worker process per run, its result read back), on one task and precision."""
    out = tmp_path / "gpu.json"
    stdout = run_gpu_bench(
        "--quick", "--isolate", "--tasks", "classifier", "--precisions", "fp32", "--out", str(out)
    ).stdout
    rows = section(stdout, "classifier")
    check_measured(row(rows, "ours", "fp32"))
    if HAS_ACCELERATE:
        check_measured(row(rows, "HF Trainer", "fp32"))
    assert "fp32" in json.loads(out.read_text(encoding="utf-8"))["results"]["classifier"]["runs"]


def test_gpu_bench_refuses_without_cuda(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the default run would start")
    result = run_gpu_bench("--out", str(tmp_path / "gpu.json"), check=False)
    assert result.returncode != 0
    assert "found none" in result.stderr and "--quick" in result.stderr, result.stderr
    assert not (tmp_path / "gpu.json").exists()
