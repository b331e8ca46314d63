"""Curriculum ordering: a sampler that Lightning shards for DDP without losing the order."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch.utilities.data import _is_dataloader_shuffled

from datamodules.mrc import MRCDataModule
from datamodules.samplers import CurriculumSampler, SeededShuffleSampler
from models.backbone import iter_texts, train_tokenizer
from tests.conftest import SAMPLE


def test_sampler_orders_by_difficulty_stably() -> None:
    scores = [3.0, 1.0, 2.0, 1.0, 5.0]
    assert list(CurriculumSampler(scores)) == [1, 3, 2, 0, 4]
    assert list(CurriculumSampler(scores, descending=True)) == [4, 0, 2, 1, 3]
    assert len(CurriculumSampler(scores)) == 5


@pytest.fixture(scope="module")
def tokenizer():
    texts = list(iter_texts([SAMPLE / "train.json"], ["context", "question"]))
    return train_tokenizer(texts, vocab_size=2000)


def _datamodule(tokenizer, tmp_path: Path, **curriculum) -> MRCDataModule:
    dm = MRCDataModule(
        tokenizer,
        train_file=str(SAMPLE / "train.json"),
        validation_file=str(SAMPLE / "validation.json"),
        max_seq_length=128,
        doc_stride=32,
        batch_size=16,
        max_train_examples=300,
        max_eval_examples=20,
        cache_dir=str(tmp_path),
        curriculum=curriculum or None,
    )
    dm.setup("fit")
    return dm


def test_length_curriculum_feeds_short_contexts_first(tokenizer, tmp_path: Path) -> None:
    dm = _datamodule(tokenizer, tmp_path, name="length", key="context_length", ascending=True)
    loader = dm.train_dataloader()
    order = list(loader.sampler)
    difficulty = [dm.train_difficulty[i] for i in order]
    assert difficulty == sorted(difficulty)
    assert len(set(difficulty)) > 10  # the sample really has varied lengths
    assert not _is_dataloader_shuffled(loader)  # so Lightning wraps it with shuffle=False under DDP
    # Every epoch sees the same easy-to-hard order (the competition recipe: no shuffle).
    assert list(loader.sampler) == order
    first = next(iter(loader))
    assert first["input_ids"].size(0) == 16


def test_descending_and_other_keys(tokenizer, tmp_path: Path) -> None:
    dm = _datamodule(tokenizer, tmp_path, name="length", key="question_length", ascending=False)
    difficulty = [dm.train_difficulty[i] for i in dm.train_dataloader().sampler]
    assert difficulty == sorted(difficulty, reverse=True)


def test_no_curriculum_shuffles_with_a_seed_per_epoch(tokenizer, tmp_path: Path) -> None:
    dm = _datamodule(tokenizer, tmp_path, name="none")
    sampler = dm.train_dataloader().sampler
    assert isinstance(sampler, SeededShuffleSampler)
    sampler.set_epoch(0)
    first = list(sampler)
    assert sorted(first) == list(range(len(dm.train_features))) and first != sorted(first)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


def _padding_fraction(loader) -> float:
    real = padded = 0
    for batch in loader:
        real += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].numel()
    return 1 - real / padded


def test_group_by_length_cuts_padding(tokenizer, tmp_path: Path) -> None:
    plain = _datamodule(tokenizer, tmp_path, name="none")
    grouped = _datamodule(tokenizer, tmp_path, name="none")
    grouped.group_by_length = True
    loader = grouped.train_dataloader()
    assert sorted(loader.sampler) == list(range(len(grouped.train_features)))
    # HF's algorithm puts the longest feature in the first batch, so memory errors come early.
    first = next(iter(loader))
    assert first["input_ids"].size(1) == max(grouped.train_features.lengths())
    assert _padding_fraction(loader) < 0.5 * _padding_fraction(plain.train_dataloader())


def test_unknown_curriculum_is_a_clear_error(tokenizer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="curriculum.key"):
        _datamodule(tokenizer, tmp_path, name="length", key="vibes")


def test_ddp_shards_keep_the_order_on_every_rank() -> None:
    """What Lightning does to a custom sampler under DDP: DistributedSamplerWrapper(shuffle=False)."""
    scores = [float((7 * i) % 23) for i in range(50)]
    sampler = CurriculumSampler(scores)
    shards = [list(DistributedSamplerWrapper(sampler, num_replicas=2, rank=r, shuffle=False)) for r in (0, 1)]
    for shard in shards:
        values = [scores[i] for i in shard]
        assert values == sorted(values)
    assert set(shards[0]) | set(shards[1]) == set(range(50))


def test_ordered_epochs_then_seeded_shuffle() -> None:
    scores = [float(i % 17) for i in range(60)]
    sampler = CurriculumSampler(scores, ordered_epochs=1, then=SeededShuffleSampler(len(scores), seed=3))
    sampler.set_epoch(0)
    first = list(sampler)
    assert [scores[i] for i in first] == sorted(scores)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(second) == list(range(60)) and second != first
    sampler.set_epoch(1)
    assert list(sampler) == second  # the shuffle is seeded: resumable and identical on every rank
    strict = CurriculumSampler(scores)
    strict.set_epoch(5)
    assert list(strict) == first
