"""DDP on CPU (trainer=ddp_cpu: 2 processes, gloo): sharded samplers and metrics equal to one process."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.data import _is_dataloader_shuffled
from torch.utils.data import DataLoader, Sampler

from datamodules.samplers import CurriculumSampler, SeededShuffleSampler
from tests.conftest import TINY_RUN, read_json, run_main

WORLD = 2


def _samplers(n: int) -> dict[str, Sampler[int]]:
    difficulty = [float((7 * i) % 23) for i in range(n)]
    lengths = [10 + (5 * i) % 37 for i in range(n)]
    return {
        "curriculum": CurriculumSampler(difficulty),
        "curriculum_then_shuffle": CurriculumSampler(
            difficulty, ordered_epochs=1, then=SeededShuffleSampler(n, seed=3)
        ),
        "shuffle": SeededShuffleSampler(n, seed=5),
        "shuffle_grouped_by_length": SeededShuffleSampler(n, seed=5, lengths=lengths, batch_size=4),
    }


@pytest.mark.parametrize("n", [50, 51])
@pytest.mark.parametrize("name", list(_samplers(2)))
def test_lightning_shards_every_sampler_without_loss(name: str, n: int) -> None:
    """What Lightning does to our samplers under DDP, epoch after epoch (set_epoch reaches the sampler)."""
    sampler = _samplers(n)[name]
    loader = DataLoader(list(range(n)), batch_size=4, sampler=sampler)
    assert not _is_dataloader_shuffled(loader)  # so the wrapper keeps our order: no second shuffle
    shards = [
        _get_distributed_sampler(
            loader, shuffle=False, overfit_batches=0, mode=RunningStage.TRAINING, num_replicas=WORLD, rank=rank
        )
        for rank in range(WORLD)
    ]
    assert all(isinstance(s, DistributedSamplerWrapper) for s in shards)
    orders = []
    for epoch in range(3):
        for shard in shards:
            shard.set_epoch(epoch)  # what Lightning's fit loop calls; the wrapper forwards it to our sampler
        parts = [list(shard) for shard in shards]
        sampler.set_epoch(epoch)
        expected = list(sampler)
        orders.append(expected)
        # equal shares so ranks step in lockstep; rank r reads every WORLD-th index of the epoch's order
        assert len(parts[0]) == len(parts[1]) == -(-n // WORLD)
        assert [i for pair in zip(*parts, strict=True) for i in pair][:n] == expected
        combined = parts[0] + parts[1]
        assert set(combined) == set(range(n))  # nothing dropped
        # nothing duplicated, except DistributedSampler's padding of an odd count with the order's first index
        padding = len(combined) - n
        assert padding == (-n) % WORLD
        assert sorted(combined) == sorted([*range(n), *expected[:padding]])
    if name.startswith("shuffle") or name.endswith("then_shuffle"):
        assert orders[1] != orders[2]  # a new order each epoch under DDP too
    if name.startswith("curriculum"):
        assert orders[0] == sorted(range(n), key=lambda i: ((7 * i) % 23, i))


@pytest.fixture(scope="module")
def ddp_fit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    """A 2-process fit of a few steps; windows of 96 tokens split examples across ranks, and the 25 eval
    features are an odd count, so DistributedSampler pads rank 1 with a duplicate."""
    base = tmp_path_factory.mktemp("ddp")
    run_dir = base / "ddp"
    result = run_main(
        "+experiment=mrc_curriculum", *TINY_RUN, *WINDOWS, "trainer=ddp_cpu", run_dir=run_dir, cache_dir=base / "cache"
    )
    return run_dir, base / "cache", result


WINDOWS = ["datamodule.max_seq_length=96", "datamodule.doc_stride=32", "datamodule.eval_batch_size=4"]


def test_ddp_cpu_fit_writes_its_files_once(ddp_fit: tuple[Path, Path, object]) -> None:
    run_dir, _, result = ddp_fit
    assert (run_dir / "train_ddp_process_1.log").exists()  # Lightning launched a second process
    assert result.stdout.count('"task": "fit"') == 1 and result.stdout.count("Run dir:") == 1  # rank 0 only
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["examples"] == 12 and Path(metrics["best_checkpoint"]).exists()
    # 66 training features: 33 per rank, 5 steps of 8 (one process would take 9)
    assert metrics["global_step"] == 5
    assert set(read_json(run_dir / "predictions.json")) == set(read_json(run_dir / "nbest_predictions.json"))


def test_ddp_validation_equals_one_process(ddp_fit: tuple[Path, Path, object], tmp_path: Path) -> None:
    """The fit's last step validated its best checkpoint in 2 processes; validate it again in 1."""
    run_dir, cache, _ = ddp_fit
    two = read_json(run_dir / "metrics.json")
    single = tmp_path / "single"
    run_main(
        "+experiment=mrc_curriculum", *TINY_RUN, *WINDOWS, "trainer=cpu", "task=validate",
        f"ckpt_path={two['best_checkpoint']}", run_dir=single, cache_dir=cache,
    )
    one = read_json(single / "metrics.json")
    assert (one["exact_match"], one["f1"], one["examples"]) == (two["exact_match"], two["f1"], two["examples"])
    assert one["f1"] > 0  # a real comparison, not two zeros
    assert read_json(single / "predictions.json") == read_json(run_dir / "predictions.json")
    nbest_one, nbest_two = read_json(single / "nbest_predictions.json"), read_json(run_dir / "nbest_predictions.json")
    assert {q: [e["text"] for e in v] for q, v in nbest_one.items()} == {
        q: [e["text"] for e in v] for q, v in nbest_two.items()
    }


def test_ddp_scores_equal_the_official_script_over_the_examples_seen(ddp_fit: tuple[Path, Path, object]) -> None:
    """DistributedSampler repeats a window on rank 1: each example still counts once, none is reported missing,
    and EM/F1 are the official KorQuAD script's over the predictions."""
    from datamodules.mrc_formats import load_mrc_examples
    from tests.conftest import SAMPLE
    from tests.test_partial_validation import official_scores

    run_dir, _, _ = ddp_fit
    metrics, predictions = read_json(run_dir / "metrics.json"), read_json(run_dir / "predictions.json")
    assert (metrics["examples"], metrics["examples_total"], metrics["examples_missing"]) == (12, 12, 0)
    assert metrics["subset"] == "all 12 examples" and len(predictions) == 12
    assert (Path(metrics["hf_model"]) / "model.safetensors").exists()  # rank 0 exported the best checkpoint once
    reference = official_scores(load_mrc_examples(SAMPLE / "validation.json", require_answers=True), predictions)
    assert metrics["exact_match"] == pytest.approx(reference["exact_match"], abs=1e-9)
    assert metrics["f1"] == pytest.approx(reference["f1"], abs=1e-9)


def ddp_fit_then_validate_alone(run: list[str], tmp_path: Path) -> tuple[dict, dict, Path, Path]:
    """Fit ``run`` on 2 CPU processes, then validate its best checkpoint in one: (2-process metrics, 1-process
    metrics, their run dirs)."""
    two_dir, one_dir = tmp_path / "ddp", tmp_path / "single"
    run_main(*run, "trainer=ddp_cpu", run_dir=two_dir, cache_dir=tmp_path / "cache")
    two = read_json(two_dir / "metrics.json")
    assert (two_dir / "train_ddp_process_1.log").exists()
    run_main(*run, "trainer=cpu", "task=validate", f"ckpt_path={two['best_checkpoint']}", run_dir=one_dir,
             cache_dir=tmp_path / "cache")  # fmt: skip
    return two, read_json(one_dir / "metrics.json"), two_dir, one_dir


def test_ddp_classifier_trains_and_scores_like_one_process(tmp_path: Path) -> None:
    """The classifier's outputs are gathered across ranks (a tensor after the sync, not a list) and
    deduplicated: 25 validation examples leave rank 1 a padded duplicate."""
    run = ["+experiment=nli", *TINY_RUN, "datamodule.max_eval_examples=25"]
    two, one, two_dir, one_dir = ddp_fit_then_validate_alone(run, tmp_path)
    assert two["global_step"] == 3  # 48 examples: 24 per rank
    for key in ("accuracy", "macro_f1", "auprc"):
        assert one[key] == pytest.approx(two[key], abs=1e-6), key
    assert one["examples"] == two["examples"] == two["examples_total"] == 25 and two["examples_missing"] == 0
    assert read_json(one_dir / "predictions.json") == read_json(two_dir / "predictions.json")


def test_ddp_generator_gathers_generated_texts_like_one_process(tmp_path: Path) -> None:
    """Generated summaries are gathered from both ranks (Python objects, not tensors) and deduplicated: 7
    validation records leave rank 1 a padded duplicate. ROUGE and predictions equal one process's."""
    tiny_gpt = {"n_embd": 32, "n_layer": 1, "n_head": 2, "n_inner": 64, "n_positions": 256}
    run = [
        "model=generator", "datamodule=summarization", "backbone=tiny_gpt", "print_config=false", "logger=csv",
        "trainer.max_epochs=1", "datamodule.batch_size=8", "datamodule.max_train_examples=32",
        "datamodule.max_eval_examples=7", "model.generation.max_new_tokens=8", "backbone.tokenizer.vocab_size=800",
        *(f"backbone.config.{k}={v}" for k, v in tiny_gpt.items()),
    ]
    two, one, two_dir, one_dir = ddp_fit_then_validate_alone(run, tmp_path)
    assert two["global_step"] == 2  # 32 records: 16 per rank
    for key in ("rouge1", "rouge2", "rougeL"):
        assert one[key] == pytest.approx(two[key], abs=1e-6), key
    predictions = read_json(two_dir / "predictions.json")
    assert len(predictions) == 7 and read_json(one_dir / "predictions.json") == predictions
