"""Partial validation (``limit_val_batches``, the sanity check, DDP padding): every example counted once, the
missing ones reported, and the scores equal the official KorQuAD script run on the examples that were seen."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules.mrc_formats import to_squad_json
from models.cls_metrics import ClassificationOutputs
from models.eval_coverage import describe_subset, log_coverage, window_coverage
from models.qa_metrics import evaluate
from tests.conftest import TINY_LOOP, read_json

# 25 windows for 12 examples; 2 batches of 9 end inside example 6 (windows 16-19)
WINDOWS = ["datamodule.max_seq_length=96", "datamodule.doc_stride=32", "datamodule.eval_batch_size=9"]


def official_scores(examples: list[dict], predictions: dict[str, str]) -> dict[str, float]:
    """The official script over the seen examples only (the reference the logged scores must equal)."""
    seen = [ex for ex in examples if ex["id"] in predictions]
    return evaluate(to_squad_json(seen)["data"], predictions)


def test_limit_val_batches_scores_the_seen_examples_and_reports_the_rest(fitted_run: Path, tmp_path: Path) -> None:
    """2 batches of 9 windows (96 tokens) cover some examples fully, one partly, and leave the rest unseen."""
    from tasks.build import build_run, eval_metrics
    from tasks.runner import compose_config

    best = read_json(fitted_run / "metrics.json")["best_checkpoint"]
    cfg = compose_config(
        ["+experiment=mrc_curriculum", *TINY_LOOP, *WINDOWS, "trainer.limit_val_batches=2", "trainer=cpu",
         "backbone=local", f"backbone.name_or_path={fitted_run / 'backbone'}", f"paths.cache_dir={tmp_path / 'cache'}"],
        tmp_path / "run",
    )  # fmt: skip
    run = build_run(cfg)
    results = run["trainer"].validate(run["model"], datamodule=run["datamodule"], ckpt_path=best, weights_only=True,
                                      verbose=False)  # fmt: skip
    metrics = eval_metrics(results)
    eval_set = run["datamodule"].eval_set("validation")
    predictions = run["model"].last_predictions
    # the seen examples are exactly those with a window among the first 18 features (the loader keeps their order)
    seen, partial = window_coverage(eval_set.example_index, range(18))
    assert set(predictions) == {eval_set.examples[i]["id"] for i in seen}
    assert 0 < len(seen) < len(eval_set.examples) == 12 and len(partial) >= 1, "the cut must fall inside an example"
    assert (metrics["examples"], metrics["examples_total"]) == (len(seen), 12)
    assert (metrics["examples_missing"], metrics["examples_partial"]) == (12 - len(seen), len(partial))
    assert metrics["subset"] == f"{len(seen)} of 12 examples ({12 - len(seen)} not evaluated, {len(partial)} from only some windows)"
    reference = official_scores(eval_set.examples, predictions)
    assert metrics["exact_match"] == pytest.approx(reference["exact_match"], abs=1e-9)
    assert metrics["f1"] == pytest.approx(reference["f1"], abs=1e-9)
    if reference["f1"] > 0:  # the tiny model may answer every seen question wrong; if not, the scores are
        # not what scoring the unseen examples 0 would give (the official script's default for a missing id)
        assert metrics["f1"] > evaluate(to_squad_json(eval_set.examples)["data"], predictions)["f1"]


def test_full_validation_says_so(fitted_run: Path) -> None:
    """The fit's final validation (the best checkpoint) covers every example, and metrics.json says so."""
    metrics = read_json(fitted_run / "metrics.json")
    assert (metrics["examples"], metrics["examples_total"], metrics["examples_missing"]) == (12, 12, 0)
    assert metrics["subset"] == "all 12 examples"


class Recorder:
    """Stands in for a LightningModule's ``log`` (outside a Trainer: no warning)."""

    def __init__(self) -> None:
        self.logged: dict[str, float] = {}

    def log(self, name: str, value: float) -> None:
        self.logged[name] = value


def test_coverage_counts_each_example_once() -> None:
    """Repeated rows (DDP padding) count once; windows of an example seen in part are reported as partial."""
    seen, partial = window_coverage([0, 0, 0, 1, 2, 2], [0, 1, 3, 3, 4, 0])  # example 2 only half, 0 fully
    assert (seen, partial) == ({0, 1, 2}, {0, 2})
    outputs = ClassificationOutputs()
    outputs.update(torch.tensor([3, 1, 3]), torch.tensor([[0.2, 0.8], [0.9, 0.1], [0.2, 0.8]]), torch.tensor([1, 0, 1]))
    state = outputs.compute()
    assert state["index"].tolist() == [1, 3]
    recorder = Recorder()
    log_coverage(recorder, "val", [f"id{i}" for i in state["index"].tolist()], [f"id{i}" for i in range(5)])
    assert recorder.logged == {"val_examples": 2.0, "val_examples_total": 5.0, "val_examples_missing": 3.0}
    assert describe_subset(5, 5, 0) == "all 5 examples"
