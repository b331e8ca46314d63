"""Smoke run of ``bench/inference.py --quick``: every path runs end to end and the table comes out.

The numbers of a quick run mean nothing (a few batches of a few questions); the test checks that HF
``Trainer.predict`` and our ``task=validate`` / ``task=predict`` paths all run, that the ratio lines are
printed and that the two tasks of this framework write the same predictions.
"""

from __future__ import annotations

import importlib.util

import pytest

from tests.test_bench import run_bench, table_rows

LABELS = (
    "(a) HF Trainer.predict, run_qa eval defaults",
    "(a) HF Trainer.predict, our eval batch, pad to max_seq_length",
    "(a) HF Trainer.predict, our eval batch, dynamic padding",
    "(b) this framework, task=validate",
    "(b) this framework, task=predict",
)


@pytest.mark.slow
def test_inference_quick() -> None:
    out = run_bench("inference.py", "--datasets", "long")  # the embedded set runs the same code
    assert "| path" in out
    hf_installed = importlib.util.find_spec("accelerate") is not None  # HF Trainer needs it (the bench extra)
    for label in LABELS:
        rows = table_rows(out, label)
        assert rows, f"no row for {label}:\n{out}"
        assert "failed" not in rows[0], rows[0]
        if label.startswith("(a)") and not hf_installed:
            assert "not installed" in rows[0], rows[0]
    if hf_installed:
        for ours in ("ours-validate", "ours-predict"):
            assert f"{ours} / hf-runqa = " in out and f"{ours} / hf-dynamic = " in out
    assert "task=validate and task=predict wrote identical predictions: yes" in out
