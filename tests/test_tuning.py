"""Lightning's Tuner from config: the LR finder and the batch-size finder write their results and are used."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
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


def _trained_batch_size(run_dir: Path, steps: int = FIT_STEPS) -> int:
    """Samples per optimiser step of the fit, from its throughput (all batches are full here)."""
    metrics = read_json(run_dir / "metrics.json")
    samples = round(metrics["train_samples_per_second"] * metrics["train_seconds"])
    assert metrics["global_step"] == steps
    return samples // steps


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
        assert found["stopped"] == "max_trials" and [t["batch_size"] for t in found["trials"]] == [2, 4]
        assert all(t["result"] == "fit" and t["peak_bytes"] is not None for t in found["trials"])

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


# ----------------------------------------------------------------------------- memory budget, dataset size

BUDGET = 100_000_000  # bytes over the pre-search memory: the tiny reader takes ~75 MB at 32, ~130 MB at 64
SEARCH_RUN = [
    *(o for o in TUNE_RUN if not o.startswith(("tune.max_trials", "tune.steps_per_trial"))),
    "tune.batch_size=power",
    "tune.steps_per_trial=1",
    "export.enabled=false",
    "trainer.accelerator=cpu",  # the budget is a CPU one (on CUDA the device's out-of-memory error stops the search)
]


def _fits(found: dict) -> list[int]:
    return [t["batch_size"] for t in found["trials"] if t["result"] == "fit"]


def test_the_search_stops_at_the_memory_budget_and_at_the_training_set(tmp_path: Path) -> None:
    """Job 0 stops at a small budget (first: a later job of the process reuses memory the first one freed);
    job 1, with the default budget, at the 192 training features: a batch can hold no more."""
    sweep = tmp_path / "sweep"
    run_main(
        "-m", *SEARCH_RUN, f"tune.max_memory_bytes={BUDGET},null", f"hydra.sweep.dir={sweep}",
        run_dir=tmp_path / "unused", cache_dir=tmp_path / "cache",
    )  # fmt: skip
    found = read_json(sweep / "0" / "batch_size_finder.json")
    assert found["stopped"] == "memory_budget" and found["memory_budget_bytes"] == BUDGET
    assert found["memory"] == "rss" and found["baseline_bytes"] > 0 and found["max_memory_bytes"] == BUDGET
    assert found["batch_size"] == max(_fits(found)) < found["train_features"]
    assert _trained_batch_size(sweep / "0") == found["batch_size"]
    for trial in found["trials"]:
        if trial["result"] == "fit":
            assert 0 < trial["peak_bytes"] <= BUDGET
    # the doubling after the size found was refused: its predicted peak (at the longest features) passed the budget
    refused = found["trials"][-1]
    assert refused["batch_size"] == 2 * found["batch_size"] and refused["predicted_bytes"] > BUDGET
    assert refused["stopped_by"] in ("prediction", "longest_batch")
    assert (refused["peak_bytes"] is None) == (refused["stopped_by"] == "prediction")  # not run / ran
    # a trial's tokens are its batch x the padded length (the first trial too, though Lightning starts it
    # with the loader of datamodule.batch_size=8)
    assert all(t["tokens"] == t["batch_size"] * t["length"] for t in found["trials"] if t["result"] == "fit")

    whole = read_json(sweep / "1" / "batch_size_finder.json")
    features = whole["train_features"]
    assert whole["stopped"] == "dataset_size" and whole["batch_size"] == features == 192
    assert max(t["batch_size"] for t in whole["trials"]) == features  # 256 ran as the whole set: 192
    assert whole["memory_budget_bytes"] > 10 * BUDGET and whole["max_memory_bytes"] is None
    assert _trained_batch_size(sweep / "1", steps=3) == features  # one batch an epoch, trainer.max_epochs=3


def test_a_trial_past_the_budget_is_stopped_and_no_size_fitting_is_one_clear_error(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_main(
        *SEARCH_RUN, "tune.max_memory_bytes=1000000", run_dir=run_dir,
        cache_dir=tmp_path / "cache", check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "error: tune.batch_size: not even batch size 1 fits: the memory budget is 1 MiB" in result.stderr
    assert "raise tune.max_memory_fraction (or tune.max_memory_bytes)" in result.stderr
    found = read_json(run_dir / "batch_size_finder.json")
    assert found["batch_size"] is None and found["stopped"] == "memory_budget"
    first, last = found["trials"][0], found["trials"][-1]
    # the first trial ran past the budget: stopped mid-step by the kernel's data limit (1.5 x the budget), or
    # at its end when the memory it took was reused, not newly reserved; then the process holds too much for 1
    assert first["batch_size"] == 2 and first["stopped_by"] in ("memory_limit", "peak") and first["peak_bytes"] > 0
    assert last["batch_size"] == 1 and last["result"] == "memory_budget"
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_memory_fraction", 0, r"tune.max_memory_fraction=0 must be a number in \(0, 1\]"),
        ("max_memory_fraction", 1.5, r"tune.max_memory_fraction=1.5 must be a number in \(0, 1\]"),
        ("max_memory_bytes", -5, r"tune.max_memory_bytes=-5 must be null or a positive number of bytes"),
        ("memory_hard_limit", 0.5, r"tune.memory_hard_limit=0.5 must be a multiple of the memory budget, at least 1"),
        ("memory_poll_interval", 0, r"tune.memory_poll_interval=0 must be a positive number of seconds"),
    ],
)
def test_bad_memory_settings_are_clear_errors(tmp_path: Path, key: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tune({"batch_size": "power", key: value}, trainer=None, model=None, datamodule=None, output_dir=tmp_path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA counts mmap'd memory on Linux only")
def test_the_kernel_limit_turns_a_runaway_allocation_into_lightnings_out_of_memory_error() -> None:
    """What stops a trial mid-step: past the limit torch's allocation fails with the error Lightning's
    search handles (on CPU, without it, the allocation succeeds and the machine runs out)."""
    import resource

    from lightning.pytorch.utilities.memory import is_oom_error

    from callbacks.batch_size_search import data_limit

    before = resource.getrlimit(resource.RLIMIT_DATA)
    limit = psutil.Process().memory_info().data + 64 * 2**20  # statm's data + stack >= VmData
    with data_limit(limit) as limited, pytest.raises(RuntimeError) as error:
        torch.empty(256 * 2**20, dtype=torch.uint8)
    assert limited and is_oom_error(error.value)
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
    assert torch.empty(256 * 2**20, dtype=torch.uint8).numel() == 256 * 2**20  # the limit is gone again
