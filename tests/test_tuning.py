"""Lightning's Tuner from config: the LR finder and the batch-size finder write their results and are used."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from callbacks.tuning import tune
from tests.conftest import TINY_RUN, read_json, run_main

# The finders need batches: 160 examples make ~20 batches of 8. The LR range test may span epochs (up to
# trainer.max_epochs); the fit itself then stops after 4 steps (max_steps is the tuners' own during tuning).
TUNE_RUN = [
    *(o for o in TINY_RUN if not o.startswith(("trainer.max_epochs", "datamodule.max_train_examples"))),
    "datamodule.max_train_examples=160",
    "trainer.max_epochs=3",
    "++trainer.max_steps=4",
    "callbacks.early_stopping=null",
    "tune.num_training=15",
    "tune.steps_per_trial=2",
    "tune.max_trials=2",
]
FIT_STEPS = 4


def _last_checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def _trained_batch_size(run_dir: Path) -> int:
    """Samples per optimiser step of the fit, from its throughput (all batches are full here)."""
    metrics = read_json(run_dir / "metrics.json")
    samples = round(metrics["train_samples_per_second"] * metrics["train_seconds"])
    assert metrics["global_step"] == FIT_STEPS
    return samples // FIT_STEPS


def test_both_finders_in_a_hydra_multirun(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_main(
        "-m", *TUNE_RUN, "tune.lr_find=true", "tune.batch_size=power,binsearch", f"hydra.sweep.dir={sweep}",
        run_dir=tmp_path / "unused", cache_dir=tmp_path / "cache",
    )
    for job, mode in (("0", "power"), ("1", "binsearch")):
        run_dir = sweep / job
        found = read_json(run_dir / "batch_size_finder.json")
        assert found["mode"] == mode and found["applied"] is True and found["initial_batch_size"] == 8
        assert found["batch_size"] != 8 and _trained_batch_size(run_dir) == found["batch_size"]

        lr = read_json(run_dir / "lr_finder.json")
        assert lr["applied"] is True and lr["suggestion"] is not None
        assert len(lr["lr"]) == len(lr["loss"]) == 15 and lr["lr"] == sorted(lr["lr"])
        assert lr["lr"][0] >= 1e-7 and lr["lr"][-1] <= 1.0
        assert (run_dir / "lr_finder.png").stat().st_size > 10_000
        checkpoint = _last_checkpoint(run_dir)
        assert checkpoint["hyper_parameters"]["optimizer"]["lr"] == pytest.approx(lr["suggestion"])
        # the fit's schedule peaks at the suggestion (the optimiser was built from the tuned hparams)
        assert checkpoint["lr_schedulers"][0]["base_lrs"] == pytest.approx([lr["suggestion"]] * 2)
        assert not list(run_dir.glob(".lr_find_*.ckpt")) and not list(run_dir.glob(".scale_batch_size_*.ckpt"))
        assert "Resuming epoch" not in (run_dir / "main.log").read_text(encoding="utf-8")  # tuners restore != resume


def test_apply_false_writes_the_results_but_trains_as_configured(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_main(
        *TUNE_RUN, "tune.lr_find=true", "tune.batch_size=power", "tune.apply=false", "model.optimizer.lr=0.002",
        run_dir=run_dir, cache_dir=tmp_path / "cache",
    )
    found = read_json(run_dir / "batch_size_finder.json")
    lr = read_json(run_dir / "lr_finder.json")
    assert found["applied"] is False and found["batch_size"] != 8
    assert lr["applied"] is False and lr["suggestion"] is not None and lr["initial_lr"] == 0.002
    assert (run_dir / "lr_finder.png").exists()
    assert _trained_batch_size(run_dir) == 8
    checkpoint = _last_checkpoint(run_dir)
    assert checkpoint["hyper_parameters"]["optimizer"]["lr"] == 0.002
    assert checkpoint["lr_schedulers"][0]["base_lrs"] == [0.002, 0.002]


def test_unknown_batch_size_mode_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"tune.batch_size='double' is unknown: use null, power or binsearch"):
        tune({"batch_size": "double"}, trainer=None, model=None, datamodule=None, output_dir=tmp_path)
    assert tune({"lr_find": False, "batch_size": None}, trainer=None, model=None, datamodule=None, output_dir=tmp_path) == {}


def test_finders_tune_the_classifier_too(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_main("+experiment=nli", *TUNE_RUN, "tune.lr_find=true", "tune.batch_size=power", run_dir=run_dir,
             cache_dir=tmp_path / "cache")  # fmt: skip
    found, lr = read_json(run_dir / "batch_size_finder.json"), read_json(run_dir / "lr_finder.json")
    assert found["applied"] and found["batch_size"] != 8 and _trained_batch_size(run_dir) == found["batch_size"]
    assert lr["applied"] and _last_checkpoint(run_dir)["hyper_parameters"]["optimizer"]["lr"] == pytest.approx(
        lr["suggestion"]
    )
