"""Curriculum ordering: a sampler that Lightning shards for DDP without losing the order."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.data import _is_dataloader_shuffled
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from core.record_files import iter_texts
from datamodules.curriculum import CurriculumSpec, build_sampler, curriculum_spec
from datamodules.mrc import DIFFICULTY_KEYS, MRCDataModule
from datamodules.mrc_features import build_train_features
from datamodules.samplers import (
    BabyStepsSampler,
    CompetenceSampler,
    CurriculumSampler,
    SeededShuffleSampler,
    competence,
)
from models.backbone import train_tokenizer
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


# ----------------------------------------------------------------------------- pacings (issue 9)


def _scores(n: int) -> list[float]:
    return [float((7 * i) % 23) + i / 1000 for i in range(n)]  # distinct, not in index order


def _rank(scores: list[float]) -> dict[int, int]:
    """Each index's place from easiest (0) to hardest: the reference the samplers are checked against."""
    return {index: place for place, index in enumerate(sorted(range(len(scores)), key=scores.__getitem__))}


def test_plain_names_and_the_older_keys_map_onto_pacing_and_difficulty() -> None:
    known = DIFFICULTY_KEYS
    assert curriculum_spec("length", known, "context_length") == CurriculumSpec(pacing="sorted")
    assert curriculum_spec("none", known, "context_length").pacing == "none"
    assert curriculum_spec(None, known, "context_length").pacing == "none"
    legacy = curriculum_spec({"name": "length", "key": "question_length", "ordered_epochs": 1}, known, "x")
    assert (legacy.pacing, legacy.difficulty, legacy.ordered_epochs) == ("sorted", "question_length", 1)
    # pacing and difficulty, when given, win over name and key
    spec = curriculum_spec({"name": "none", "pacing": "competence", "difficulty": "bm25", "c0": 0.2, "T": 3}, known, "x")
    assert (spec.pacing, spec.difficulty, spec.c0, spec.T) == ("competence", "bm25", 0.2, 3)
    for bad, message in [({"name": "vibes"}, "curriculum.name='vibes' is unknown"),
                         ({"pacing": "random"}, "curriculum.pacing='random' is unknown"),
                         ({"pacing": "sorted", "difficulty": "vibes"}, "curriculum.difficulty='vibes' is unknown"),
                         ({"pacing": "sorted", "difficulty": "loss"}, "teacher_ckpt="),
                         ({"pacing": "sorted", "bucket": 3}, "unknown option")]:  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(message)):
            curriculum_spec(bad, known, "context_length")


def test_the_mrc_slice_interface_still_composes_and_means_the_same(tmp_path: Path) -> None:
    from tasks.runner import compose_config

    cfg = compose_config(["+experiment=mrc_curriculum"], tmp_path)
    spec = curriculum_spec(OmegaConf.to_container(cfg.datamodule.curriculum), DIFFICULTY_KEYS, "context_length")
    assert (spec.pacing, spec.difficulty, spec.ascending, spec.ordered_epochs) == ("sorted", "context_length", True, 1)
    plain = compose_config(["datamodule.curriculum=length"], tmp_path)
    assert curriculum_spec(plain.datamodule.curriculum, DIFFICULTY_KEYS, "context_length").pacing == "sorted"


def test_sorted_is_monotone_and_anti_is_its_reverse() -> None:
    scores = _scores(60)
    shuffle = SeededShuffleSampler(60, seed=1)
    ascending = list(build_sampler(CurriculumSpec(pacing="sorted"), scores, shuffle, seed=1))
    descending = list(build_sampler(CurriculumSpec(pacing="anti"), scores, shuffle, seed=1))
    assert [scores[i] for i in ascending] == sorted(scores)
    assert descending == ascending[::-1]
    # ascending=false: a larger score is easier, so anti then goes from small to large
    flipped = list(build_sampler(CurriculumSpec(pacing="anti", ascending=False), scores, shuffle, seed=1))
    assert flipped == ascending


def test_competence_draws_from_the_easiest_c_of_t_fraction() -> None:
    n, c0, horizon = 400, 0.1, 2.0
    scores = _scores(n)
    rank = _rank(scores)
    sampler = CompetenceSampler(scores, c0=c0, horizon=horizon, seed=5)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        draws = list(sampler)
        assert len(draws) == n
        for k, index in enumerate(draws):  # Platanios et al.'s c(t), written out here independently
            c = min(1.0, math.sqrt((epoch + k / n) * (1 - c0**2) / horizon + c0**2))
            assert rank[index] < math.ceil(c * n - 1e-6)
        if epoch == 0:
            assert rank[draws[0]] < c0 * n  # t = 0: the easiest c0 fraction only
            assert len(set(draws)) < n  # with replacement, as in the paper
        sampler.set_epoch(epoch)
        assert list(sampler) == draws  # seeded: the same draws again
    # competence that stays at c0 (a huge T): a whole epoch drawn from the easiest c0 fraction, all of it
    frozen = CompetenceSampler(scores, c0=c0, horizon=1e12, seed=5)
    assert {rank[i] for i in frozen} == set(range(int(c0 * n)))
    # past T the pool is everything: the late draws reach the hardest decile
    assert max(rank[i] for i in draws) >= 0.9 * n
    assert np.allclose(competence(np.array([0.0, 1.0, 2.0, 5.0]), c0, horizon), [c0, math.sqrt(0.505), 1, 1])


def test_baby_steps_add_one_bucket_every_bucket_epochs() -> None:
    n, buckets = 100, 4
    scores = _scores(n)
    rank = _rank(scores)
    sampler = BabyStepsSampler(scores, num_buckets=buckets, bucket_epochs=2, seed=3)
    seen = []
    for epoch in range(10):
        sampler.set_epoch(epoch)
        draws = list(sampler)
        allowed = min(buckets, epoch // 2 + 1) * n // buckets
        assert len(draws) == n  # every epoch has the length of a plain one (LR schedule, resume)
        assert {rank[i] for i in draws} == set(range(allowed))  # the whole pool, nothing harder
        counts = np.bincount(draws, minlength=n)
        assert counts.max() - counts[counts > 0].min() <= 1  # repeated permutations: as even as possible
        seen.append(draws)
    assert seen[0] != seen[1] and sorted(seen[-1]) == list(range(n))


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("pacing", ["none", "sorted", "baby_steps", "competence", "anti"])
def test_every_pacing_splits_the_same_sequence_between_ranks(pacing: str, world_size: int) -> None:
    """What Lightning does under DDP (DistributedSamplerWrapper, shuffle=False): rank r reads every
    world_size-th draw of one sequence, so no draw is lost or read twice across ranks."""
    n = 101
    spec = CurriculumSpec(pacing=pacing, num_buckets=3, c0=0.2, T=1.5)
    scores = _scores(n)
    for epoch in range(3):
        reference = build_sampler(spec, scores, SeededShuffleSampler(n, seed=9), seed=9)
        reference.set_epoch(epoch)
        expected = list(reference)
        sampler = build_sampler(spec, scores, SeededShuffleSampler(n, seed=9), seed=9)
        loader = DataLoader(list(range(n)), batch_size=4, sampler=sampler)
        assert not _is_dataloader_shuffled(loader)
        shards = [_get_distributed_sampler(loader, shuffle=False, overfit_batches=0, mode=RunningStage.TRAINING,
                                           num_replicas=world_size, rank=rank) for rank in range(world_size)]  # fmt: skip
        for shard in shards:
            shard.set_epoch(epoch)
        parts = [list(shard) for shard in shards]
        padding = (-n) % world_size  # DistributedSampler evens the shares with the sequence's first draws
        assert [i for row in zip(*parts, strict=True) for i in row] == expected + expected[:padding]
        assert Counter(i for part in parts for i in part) == Counter(expected + expected[:padding])


@pytest.mark.parametrize("pacing", ["baby_steps", "competence"])
def test_resume_mid_epoch_continues_the_same_sequence(tokenizer, tmp_path: Path, pacing: str) -> None:
    """A real Trainer stopped mid-epoch and resumed from last.ckpt is fed the batches an uninterrupted run is."""
    from tests.test_resume import _record

    curriculum = {"pacing": pacing, "difficulty": "context_length", "num_buckets": 3, "c0": 0.3, "T": 2.0}
    reference = _record(tokenizer, tmp_path / "full", max_steps=14, curriculum=curriculum)
    first = _record(tokenizer, tmp_path / "first", max_steps=9, curriculum=curriculum)  # epoch 1, batch 3
    resumed = _record(tokenizer, tmp_path / "resumed", max_steps=14, curriculum=curriculum,
                      ckpt_path=tmp_path / "first" / "checkpoints" / "last.ckpt")
    assert sorted(resumed) == list(range(9, 14))
    assert {**first, **resumed} == reference
    assert reference[0][2] != reference[6][2]  # epochs differ (pool and seed), so the test can fail


def test_classifier_curriculum_orders_its_examples(tmp_path: Path, tokenizer) -> None:
    from datamodules.classification import ClassificationDataModule

    nli = SAMPLE.parent / "nli_sample"
    settings = {"train_file": str(nli / "train.json"), "validation_file": str(nli / "validation.json"),
                "text_fields": ["premise", "hypothesis"], "label_field": "gold_label", "max_train_examples": 60,
                "max_eval_examples": 8, "batch_size": 8}  # fmt: skip
    dm = ClassificationDataModule(tokenizer, curriculum={"pacing": "sorted", "difficulty": "text_tokens"}, **settings)
    dm.setup("fit")
    order = list(dm.train_dataloader().sampler)
    examples = dm.train_and_validation()[0][:60]
    tokens = [len(tokenizer(ex["texts"][0], add_special_tokens=False)["input_ids"])
              + len(tokenizer(ex["texts"][1], add_special_tokens=False)["input_ids"]) for ex in examples]  # fmt: skip
    assert [tokens[i] for i in order] == sorted(tokens) and len(set(tokens)) > 5
    # competence held at c0 (huge T): draws from the 15 easiest of 60 by characters (the default difficulty)
    competent = ClassificationDataModule(tokenizer, curriculum={"pacing": "competence", "c0": 0.25, "T": 1e12},
                                         **settings)
    competent.setup("fit")
    chars = [len(ex["texts"][0]) + len(ex["texts"][1]) for ex in examples]
    drawn = list(competent.train_dataloader().sampler)
    assert max(chars[i] for i in drawn) <= sorted(chars)[14] < max(chars)
    with pytest.raises(ValueError, match="difficulty='bm25' is unknown here"):
        ClassificationDataModule(tokenizer, curriculum={"pacing": "sorted", "difficulty": "bm25"}, **settings)


def test_bm25_difficulty_is_a_task_step_injected_into_the_datamodule(tokenizer, tmp_path: Path) -> None:
    """The data layer computes no BM25 / teacher score itself: tasks/difficulty.py's scorer does, and caches it."""
    import json

    from tasks.difficulty import attach_difficulty, bm25_difficulty

    settings = {"train_file": str(SAMPLE / "train.json"), "validation_file": str(SAMPLE / "validation.json"),
                "max_seq_length": 128, "doc_stride": 32, "max_eval_examples": 4,
                "max_train_examples": 40, "cache_dir": str(tmp_path), "curriculum": {"pacing": "sorted", "difficulty": "bm25"}}
    bare = MRCDataModule(tokenizer, **settings)
    with pytest.raises(ValueError, match="tasks/difficulty.py"):
        bare.setup("fit")
    dm = attach_difficulty(MRCDataModule(tokenizer, **settings))
    dm.setup("fit")
    examples = dm.load_examples("train", require_answers=True)
    scores = bm25_difficulty(examples, "char_ngram")
    per_feature = dm._build(build_train_features, examples, "train")["example_index"]
    assert dm.train_difficulty == [scores[i] for i in per_feature] and len(set(scores)) > 5
    cached = list((tmp_path / "difficulty").glob("bm25-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text(encoding="utf-8")) == pytest.approx(scores)


def test_no_datamodule_imports_a_model_or_a_retriever() -> None:
    import ast

    for path in sorted((Path(__file__).parents[1] / "datamodules").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("models", "retrievals", "tasks") for n in names), (path.name, names)
