"""Exact resume: a run stopped at step 20 and resumed to 40 ends exactly where an uninterrupted run does."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.utils.data import BatchSampler

from callbacks.resume import ExactResume, LastCheckpoint
from datamodules.mrc import MRCDataModule
from datamodules.samplers import CurriculumSampler, SeededShuffleSampler, SkipFirst
from models.backbone import iter_texts, train_tokenizer
from tests.conftest import ROOT, SAMPLE, TINY_RUN, read_json, run_main

# 48 features in batches of 8: 6 batches an epoch, so step 20 is batch 2 of epoch 3, a shuffled epoch
# (mrc_curriculum orders epoch 0 only). Dropout makes the random state matter; the LR schedule does not
# depend on max_steps (warmup and cycles in steps), so a 20-step run is the first half of a 40-step run.
EXACT = [
    "+experiment=mrc_curriculum",
    *(o for o in TINY_RUN if not o.startswith("trainer.max_epochs")),
    "trainer.max_epochs=20",
    "trainer.deterministic=true",
    "callbacks.early_stopping=null",
    "callbacks.model_checkpoint=null",  # metrics.json then scores the final weights
    "backbone.config.mlp_dropout=0.1",
    "model/scheduler=cosine_warm_restarts",
    "model.scheduler.warmup_steps=4",
    "model.scheduler.T_0=8",
    "model.scheduler.T_mult=2",
]
TIMING_KEYS = {"train_samples_per_second", "train_seconds"}


class SignalAt(Callback):
    """Test helper, loaded by main.py through Hydra: sends this process ``signal`` after optimiser step ``step``."""

    def __init__(self, step: int, signal: str) -> None:
        self.step = step
        self.signal = signal
        self.sent = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), getattr(signal, self.signal))


def train_losses(run_dir: Path) -> dict[int, float]:
    rows = csv.DictReader((run_dir / "csv" / "metrics.csv").open(encoding="utf-8"))
    return {int(row["step"]): float(row["train_loss"]) for row in rows if row.get("train_loss")}


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def assert_same_run(resumed: Path, reference: Path) -> None:
    got, want = read_json(resumed / "metrics.json"), read_json(reference / "metrics.json")
    assert set(got) == set(want)
    for key in set(want) - TIMING_KEYS:
        if key == "hf_model":  # each run exports into its own dir
            assert Path(got[key]).relative_to(resumed) == Path(want[key]).relative_to(reference)
        elif isinstance(want[key], float):
            assert got[key] == pytest.approx(want[key], abs=1e-6), key
        else:
            assert got[key] == want[key], key
    weights, expected_weights = final_weights(resumed), final_weights(reference)
    assert all(torch.allclose(weights[k], expected_weights[k], atol=1e-6) for k in expected_weights)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("resume")
    run_main(*EXACT, "++trainer.max_steps=40", run_dir=base / "full", cache_dir=base / "cache")
    return base / "full"


def test_20_steps_resumed_to_40_match_40_steps(uninterrupted: Path, tmp_path: Path) -> None:
    """20 steps, resumed and stopped by Ctrl-C at step 32 (mid-epoch), resumed again to 40: the same run."""
    cache = uninterrupted.parent / "cache"
    first = tmp_path / "first"
    run_main(*EXACT, "++trainer.max_steps=20", run_dir=first, cache_dir=cache)
    assert read_json(first / "metrics.json")["global_step"] == 20
    second = tmp_path / "second"
    stopped = run_main(
        *EXACT, "++trainer.max_steps=40", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}",
        "+callbacks.ctrl_c._target_=tests.test_resume.SignalAt", "+callbacks.ctrl_c.step=32",
        "+callbacks.ctrl_c.signal=SIGINT", run_dir=second, cache_dir=cache, check=False,
    )
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert not (second / "metrics.json").exists()
    assert "Resuming epoch 3 at batch 2 (global step 20)" in (second / "main.log").read_text(encoding="utf-8")
    assert torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 32
    # the CSV logger writes every 100 steps: steps 21..32 are on disk because Ctrl-C flushed it
    assert max(train_losses(second)) == 31
    third = tmp_path / "third"
    run_main(
        *EXACT, "++trainer.max_steps=40", f"ckpt_path={second / 'checkpoints' / 'last.ckpt'}",
        run_dir=third, cache_dir=cache,
    )
    assert "Resuming epoch 5 at batch 2 (global step 32)" in (third / "main.log").read_text(encoding="utf-8")
    expected = train_losses(uninterrupted)
    losses = {**train_losses(second), **train_losses(third)}
    assert sorted(losses) == list(range(20, 40))  # the resumed runs trained steps 21..40, each once
    assert [losses[s] for s in sorted(losses)] == pytest.approx([expected[s] for s in sorted(losses)], abs=1e-6)
    assert_same_run(third, uninterrupted)


def test_sigterm_from_outside_writes_last_ckpt(uninterrupted: Path, tmp_path: Path) -> None:
    """What a cluster scheduler sends: training stops after the current batch, exit code 143, last.ckpt."""
    run_dir = tmp_path / "run"
    overrides = [*EXACT, "++trainer.max_steps=100000", "datamodule.max_train_examples=400",
                 "++logger.csv.flush_logs_every_n_steps=1"]
    args = [sys.executable, str(ROOT / "main.py"), *overrides, f"hydra.run.dir={run_dir}",
            f"paths.cache_dir={uninterrupted.parent / 'cache'}"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HYDRA_FULL_ERROR": "0"}
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics_csv = run_dir / "csv" / "metrics.csv"
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:  # wait until it is training
        if metrics_csv.exists() and "train_loss" in metrics_csv.read_text(encoding="utf-8"):
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 143, output[-3000:]
    assert "SIGTERM: wrote" in output
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert 0 < checkpoint["global_step"] < 62  # mid-epoch: 400 examples make 62 batches
    assert not (run_dir / "metrics.json").exists()


class SigtermAtTrainEnd(Callback):
    """A SIGTERM after Lightning's last check for one (it looks between batches and epochs), as a Ctrl-C
    landing while the final checkpoints are written does."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        signal.raise_signal(signal.SIGTERM)


def test_a_stop_after_the_last_check_still_stops(tmp_path: Path) -> None:
    """Lightning lets fit return; main.py stops anyway (exit 143, last.ckpt kept, no metrics.json), so a sweep
    interrupted at that moment marks the trial interrupted instead of going on."""
    run_dir = tmp_path / "run"
    result = run_main("+experiment=mrc_curriculum", *TINY_RUN, "export.enabled=false",
                      f"+callbacks.late_stop._target_={__name__}.SigtermAtTrainEnd", run_dir=run_dir,
                      cache_dir=tmp_path / "cache", check=False)  # fmt: skip
    assert result.returncode == 143, result.stdout[-2000:] + result.stderr[-2000:]
    assert (run_dir / "checkpoints" / "last.ckpt").exists() and not (run_dir / "metrics.json").exists()


# ----------------------------------------------------------------------------- units


@pytest.mark.parametrize("world_size", [1, 2])
def test_skip_first_drops_whole_batches_of_each_rank_once(world_size: int) -> None:
    order = CurriculumSampler(list(range(53, 0, -1)), ordered_epochs=1, then=SeededShuffleSampler(53, seed=3))
    order.set_epoch(2)  # a shuffled epoch
    for rank in range(world_size):
        sampler = DistributedSamplerWrapper(order, num_replicas=world_size, rank=rank, shuffle=False)
        full = list(BatchSampler(sampler, 4, drop_last=False))
        skipping = SkipFirst(sampler, 3 * 4)
        batches = BatchSampler(skipping, 4, drop_last=False)
        assert len(batches) == len(full)  # Lightning counts the epoch's batches from the full length
        assert list(batches) == full[3:]
        assert list(batches) == full  # the next epoch is whole again
    with pytest.raises(ValueError, match="skip"):
        SkipFirst(order, -1)


class BatchRecorder(LightningModule):
    """Trains nothing; remembers every training batch it was given (epoch, batch index, token ids)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.seen: dict[int, tuple] = {}

    def training_step(self, batch, batch_idx):
        self.seen[self.global_step] = (self.current_epoch, batch_idx, batch["input_ids"].tolist())
        return self.weight.sum() * 0.0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(iter_texts([SAMPLE / "train.json"], ["context", "question"]), vocab_size=2000)


LENGTH_THEN_SHUFFLE = {"name": "length", "key": "context_length", "ascending": True, "ordered_epochs": 1}


def _record(tokenizer, tmp_path: Path, max_steps: int, ckpt_path: Path | None = None, num_workers: int = 0,
            resume_callback: bool = True, curriculum: dict | None = None) -> dict[int, tuple]:
    datamodule = MRCDataModule(
        tokenizer, train_file=str(SAMPLE / "train.json"), validation_file=str(SAMPLE / "validation.json"),
        max_seq_length=128, doc_stride=64, batch_size=8, max_train_examples=48, max_eval_examples=4,
        num_workers=num_workers, group_by_length=True, seed=7, cache_dir=str(tmp_path / "cache"),
        curriculum=curriculum or LENGTH_THEN_SHUFFLE,
    )
    model = BatchRecorder()
    callbacks = [LastCheckpoint(str(tmp_path / "checkpoints"))] + ([ExactResume()] if resume_callback else [])
    trainer = Trainer(
        max_steps=max_steps, max_epochs=-1, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=callbacks,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model.seen


@pytest.mark.parametrize("num_workers", [0, 2])
def test_mid_epoch_resume_feeds_the_batches_an_uninterrupted_run_would(tokenizer, tmp_path: Path, num_workers: int) -> None:
    """Loader workers read ahead from the sampler as soon as the iterator exists: they must start right too."""
    reference = _record(tokenizer, tmp_path / "full", max_steps=16)
    first = _record(tokenizer, tmp_path / "first", max_steps=9)  # mid-way through epoch 1 (shuffled)
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = _record(tokenizer, tmp_path / "resumed", max_steps=16, ckpt_path=checkpoint, num_workers=num_workers)
    assert sorted(first) == list(range(9)) and sorted(resumed) == list(range(9, 16))
    assert {**first, **resumed} == reference
    # Lightning alone keeps the batch counter but replays the epoch from its first batch
    replayed = _record(tokenizer, tmp_path / "replay", max_steps=16, ckpt_path=checkpoint, resume_callback=False)
    per_epoch = sum(1 for epoch, _, _ in reference.values() if epoch == 0)
    assert per_epoch < 9 < 2 * per_epoch  # the checkpoint is mid-way through epoch 1
    assert [replayed[9 + i][2] for i in range(3)] == [reference[per_epoch + i][2] for i in range(3)]


def test_classifier_resumes_mid_epoch_to_the_same_run(tmp_path: Path) -> None:
    """The same guarantee for the classifier: 48 examples in batches of 8, stopped at step 8 (epoch 1, batch 2)."""
    run = [
        "+experiment=nli", *(o for o in TINY_RUN if not o.startswith("trainer.max_epochs")), "trainer.max_epochs=5",
        "trainer.deterministic=true", "callbacks.early_stopping=null", "callbacks.model_checkpoint=null",
        "backbone.config.mlp_dropout=0.1", "model/scheduler=cosine_warm_restarts", "model.scheduler.warmup_steps=4",
        "model.scheduler.T_0=8",
    ]  # fmt: skip
    cache = tmp_path / "cache"
    run_main(*run, "++trainer.max_steps=16", run_dir=tmp_path / "full", cache_dir=cache)
    run_main(*run, "++trainer.max_steps=8", run_dir=tmp_path / "first", cache_dir=cache)
    run_main(*run, "++trainer.max_steps=16", f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}",
             run_dir=tmp_path / "second", cache_dir=cache)  # fmt: skip
    log = (tmp_path / "second" / "main.log").read_text(encoding="utf-8")
    assert "Resuming epoch 1 at batch 2 (global step 8)" in log
    expected, resumed = train_losses(tmp_path / "full"), train_losses(tmp_path / "second")
    assert sorted(resumed) == list(range(8, 16))
    assert [resumed[s] for s in resumed] == pytest.approx([expected[s] for s in resumed], abs=1e-6)
    assert_same_run(tmp_path / "second", tmp_path / "full")
