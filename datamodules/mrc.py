"""Extractive-QA datamodule: any MRC format in, doc-stride features out, optional curriculum order."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset, Sampler

from core.errors import DataFormatError
from core.files import write_json
from datamodules.base import TaskDataModule
from datamodules.curriculum import (
    EXPENSIVE,
    MRC_DIFFICULTIES,
    DifficultyRequest,
    build_sampler,
    curriculum_spec,
    expensive_scores,
    per_feature,
)
from datamodules.kfold import fold_assignment, fold_report, warn_leaks
from datamodules.mrc_example_cache import cached_mrc_examples
from datamodules.mrc_feature_cache import Columns, RaggedColumn, cached_features
from datamodules.mrc_features import (
    DataCollatorForQA,
    WindowTooSmallError,
    build_eval_features,
    build_train_features,
)
from datamodules.mrc_formats import MRCExample
from datamodules.negatives import (
    NegativeMiner,
    NegativesRequest,
    QuestionGroupCollator,
    QuestionGroups,
    negative_examples,
)
from datamodules.samplers import SeededShuffleSampler

log = logging.getLogger(__name__)

FOLD_GROUPS = (None, "document_id", "context", "title")
# Every difficulty score an MRC curriculum can order by (datamodules/curriculum.py computes them).
DIFFICULTY_KEYS = (*MRC_DIFFICULTIES, *EXPENSIVE)


def resolve_eval_batch_size(eval_batch_size: int | None, batch_size: int) -> int:
    """Windows per evaluation batch: ``eval_batch_size``, or twice ``batch_size`` when it is null (no gradients
    or optimiser state to hold)."""
    return int(eval_batch_size or 2 * batch_size)


class FeatureTable(Dataset):
    """Column-oriented features: lists in memory, or the feature cache's memory-mapped columns
    (:class:`~datamodules.mrc_feature_cache.RaggedColumn`), read a row at a time."""

    def __init__(self, columns: Mapping[str, Sequence[Any]], keys: Sequence[str]) -> None:
        self.columns = {key: columns[key] for key in keys if key in columns}
        self.length = len(next(iter(self.columns.values()))) if self.columns else 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {key: column[index] for key, column in self.columns.items()}

    def lengths(self) -> list[int]:
        """Token count of every feature (before padding), for length-grouped batches."""
        ids = self.columns["input_ids"]
        if isinstance(ids, RaggedColumn):  # from the row starts, without reading a row
            return ids.lengths().tolist()
        return [len(row) for row in ids]


@dataclass
class EvalSet:
    """Examples of one evaluation split plus what span decoding needs for each feature."""

    examples: Sequence[MRCExample]
    example_index: list[int]
    offset_mapping: Sequence[Sequence[Sequence[int]]]
    features: FeatureTable
    extra: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def examples_by_id(self) -> dict[str, MRCExample]:
        return {ex["id"]: ex for ex in self.examples}


class MRCDataModule(TaskDataModule):
    """SQuAD/KorQuAD JSON, KLUE-MRC and ``save_to_disk`` data, read once into one record type.

    ``curriculum`` (:mod:`datamodules.curriculum`): ``pacing`` none | sorted | baby_steps | competence | anti
    over a ``difficulty`` score of each example (:data:`DIFFICULTY_KEYS`), which its features share; the
    older ``name: none | length`` (also a plain string) means pacing none | sorted.
    """

    def __init__(
        self,
        tokenizer: Any,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        train_split: str | None = "train",
        validation_split: str | None = "validation",
        test_split: str | None = None,
        max_seq_length: int = 384,
        doc_stride: int = 128,
        max_query_length: int = 64,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pad_to_multiple_of: int | None = None,
        normalize: str | None = None,
        curriculum: Mapping[str, Any] | None = None,
        group_by_length: bool = False,
        seed: int = 0,
        cache_dir: str | None = None,
        max_train_examples: int | None = None,
        max_eval_examples: int | None = None,
        n_folds: int | None = None,
        fold: int = 0,
        fold_seed: int = 42,
        fold_group: str | None = None,
        output_dir: str | None = None,
        negative_passages: int = 0,
        negative_pool: int = 10,
        group_windows: bool = False,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.output_dir = Path(output_dir) if output_dir else None
        self.files = {"train": train_file, "validation": validation_file, "test": test_file}
        self.splits = {"train": train_split, "validation": validation_split, "test": test_split}
        self.feature_settings = {
            "max_seq_length": max_seq_length,
            "doc_stride": doc_stride,
            "max_query_length": max_query_length,
        }
        self.batch_size = batch_size  # attribute name the batch-size finder scales
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pad_to_multiple_of = pad_to_multiple_of
        self.normalize = normalize
        self.curriculum = curriculum_spec(curriculum, DIFFICULTY_KEYS, default="context_length")
        self.group_by_length = group_by_length
        self.seed = seed
        self.cache_dir = cache_dir
        self.limits = {"train": max_train_examples, "validation": max_eval_examples, "test": max_eval_examples}
        self.train_features: FeatureTable | None = None
        self.train_difficulty: list[float] = []
        self._eval_sets: dict[str, EvalSet] = {}
        self._given: dict[str, list[MRCExample]] = {}
        if n_folds is not None and (not isinstance(n_folds, int) or n_folds < 2 or not 0 <= fold < n_folds):
            raise ValueError(f"datamodule.n_folds={n_folds!r}, fold={fold!r}: give n_folds >= 2 and 0 <= fold < n_folds.")
        if fold_group not in FOLD_GROUPS:
            raise ValueError(f"datamodule.fold_group={fold_group!r}: choose one of {', '.join(map(str, FOLD_GROUPS))}.")
        self.folds = {"n_folds": n_folds, "fold": fold, "fold_seed": fold_seed, "fold_group": fold_group}
        self._fold_split: dict[str, list[MRCExample]] | None = None
        if isinstance(negative_passages, bool) or not isinstance(negative_passages, int) or negative_passages < 0:
            raise ValueError(f"datamodule.negative_passages={negative_passages!r}: give 0 (none) or a positive count.")
        if negative_passages and negative_pool < negative_passages:
            raise ValueError(f"datamodule.negative_pool={negative_pool!r} must be >= negative_passages="
                             f"{negative_passages} (the negatives are drawn from the pool's best-ranked passages).")
        self.negatives = {"k": negative_passages, "pool": negative_pool}
        self.group_windows = group_windows
        # Mines the negative passages (a retriever over a corpus); injected by tasks/negatives.py.
        self.negative_miner: NegativeMiner | None = None
        self.train_groups: QuestionGroups | None = None

    @classmethod
    def check_files(cls, settings: Mapping[str, Any], splits: Sequence[str]) -> None:
        """Read and validate the MRC files of ``splits`` (a bad record fails in a second, before any training)."""
        for split in splits:
            path = settings.get(f"{split}_file")
            if path:
                # with a cache_dir this also writes the entry that setup() then maps
                cached_mrc_examples(path, settings.get("cache_dir"), require_answers=split != "test",
                                    split=settings.get(f"{split}_split"), normalize=settings.get("normalize"))

    def _write_folds(self, fold_ids: dict[str, int]) -> None:
        """``folds.json`` in the run dir, as the classifier's K-fold runs write it (rank 0 only)."""
        if self.output_dir is None or (self.trainer is not None and not self.trainer.is_global_zero):
            return
        settings = self.folds
        write_json(self.output_dir / "folds.json",
                   fold_report(fold_ids, settings["n_folds"], settings["fold"], settings["fold_seed"]))

    # ------------------------------------------------------------------ loading

    def provide_examples(self, split: str, examples: list[MRCExample]) -> None:
        """Use these records for ``split`` instead of reading a file (open-domain QA builds them)."""
        self._given[split] = list(examples)
        self._eval_sets.pop(split, None)

    def fold_examples(self) -> dict[str, list[MRCExample]]:
        """K-fold (``n_folds``): fold ``fold`` of the training file validates, the others train.

        ``fold_group`` (``document_id``, ``context`` or ``title``) keeps the questions of one passage in one fold;
        without it questions are split one by one, and a warning says how many held-out passages training saw.
        """
        if self._fold_split is None:
            path, settings = self.files["train"], self.folds
            if not path:
                raise ValueError("datamodule.n_folds splits datamodule.train_file: give the training file.")
            examples = list(cached_mrc_examples(path, self.cache_dir, require_answers=True,
                                                split=self.splits["train"], normalize=self.normalize))
            key = settings["fold_group"]
            groups = None
            if key:
                missing = next((ex for ex in examples if ex[key] is None), None)
                if missing is not None:
                    raise DataFormatError(path, missing["id"], f"has no {key} to group the folds by",
                                          "set datamodule.fold_group=context (or title)")
                groups = [str(ex[key]) for ex in examples]
            folds = fold_assignment(["question"] * len(examples), settings["n_folds"], settings["fold_seed"], groups)
            if groups is None:
                warn_leaks([ex["context"] for ex in examples], folds, settings["fold"], "passage",
                           "document_id or context")
            self._write_folds({ex["id"]: k for ex, k in zip(examples, folds, strict=True)})
            held = [ex for ex, k in zip(examples, folds, strict=True) if k == settings["fold"]]
            rest = [ex for ex, k in zip(examples, folds, strict=True) if k != settings["fold"]]
            log.info("fold %d of %d: %d training, %d held-out questions", settings["fold"], settings["n_folds"],
                     len(rest), len(held))
            self._fold_split = {"train": rest, "validation": held}
        return self._fold_split

    def load_examples(self, split: str, require_answers: bool, limited: bool = True) -> Sequence[MRCExample]:
        """The records of ``split`` (the first ``max_*_examples`` of them unless ``limited`` is false); from a
        file, read once per content (:mod:`datamodules.mrc_example_cache`) when ``cache_dir`` is set."""
        if split in self._given:
            return self._given[split]
        limit = self.limits[split] if limited else None
        if self.folds["n_folds"] is not None and split in ("train", "validation"):
            examples = self.fold_examples()[split]
            return examples[:limit] if limit else examples
        path = self.files[split]
        if not path:
            raise ValueError(f"datamodule.{split}_file is not set: give the path of the {split} data.")
        examples = cached_mrc_examples(
            path, self.cache_dir, require_answers=require_answers, split=self.splits[split], normalize=self.normalize
        )
        return examples[:limit] if limit else examples

    def _build(self, builder: Any, examples: Sequence[MRCExample], split: str) -> Columns:
        """The split's feature columns: per-token ones memory-mapped from the cache, rows read on demand."""
        try:
            return cached_features(builder, examples, self.tokenizer, self.cache_dir, **self.feature_settings)
        except WindowTooSmallError as error:  # name the file the question came from
            source = self.files[split] if split not in self._given else f"the {split} examples"
            raise DataFormatError(source or split, error.record, error.problem, error.fix) from None

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_features is None:
            self._setup_train()
        if stage in (None, "fit", "validate") and "validation" not in self._eval_sets:
            self._setup_eval("validation", require_answers=True)
        if stage in ("test",) and "test" not in self._eval_sets:
            self._setup_eval("test", require_answers=True)
        if stage == "predict" and "test" not in self._eval_sets:
            self._setup_eval("test", require_answers=False)

    def use_negative_miner(self, miner: NegativeMiner) -> None:
        """Mine ``negative_passages`` with ``miner`` (``tasks/negatives.py`` calls this)."""
        self.negative_miner = miner

    def _negatives(self, examples: Sequence[MRCExample]) -> tuple[list[MRCExample], list[int]]:
        """The no-answer examples of the mined negatives, and the question each belongs to."""
        if not self.negatives["k"]:
            return [], []
        if self.negative_miner is None:
            raise ValueError(
                "datamodule.negative_passages needs a retriever to mine them (tasks/negatives.py): run through "
                "python main.py, or call tasks.negatives.attach_negatives(datamodule, cfg) before setup()."
            )
        # every validation question, not the max_eval_examples a run evaluates: none of their passages may train
        held_out = self.load_examples("validation", require_answers=True, limited=False) if self._has_validation() else []
        request = NegativesRequest(
            examples=examples, held_out=held_out, k=self.negatives["k"], pool=self.negatives["pool"], seed=self.seed,
            cache_dir=self.cache_dir, train_file=self.files["train"], train_split=self.splits["train"],
        )
        negatives, owners = negative_examples(examples, self.negative_miner(request))
        log.info("train: %d negative passages for %d questions", len(negatives), len(examples))
        return negatives, owners

    def _has_validation(self) -> bool:
        return bool("validation" in self._given or self.files["validation"] or self.folds["n_folds"] is not None)

    def _setup_train(self) -> None:
        examples = self.load_examples("train", require_answers=True)
        negatives, owners = self._negatives(examples)
        columns = self._build(build_train_features, [*examples, *negatives] if negatives else examples, "train")
        # the question every window belongs to: a negative's windows belong to the question it was mined for
        question_of = [i if i < len(examples) else owners[i - len(examples)] for i in columns["example_index"]]
        keys = ("input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions")
        if self.group_windows:
            keys = (*keys, "context_mask")
        self.train_features = FeatureTable(columns, keys)
        self.train_groups = QuestionGroups(self.train_features, question_of) if self.group_windows else None
        log.info("train: %d examples -> %d features", len(examples) + len(negatives), len(self.train_features))
        if self.curriculum.ordered:
            difficulty = self.difficulty(examples, question_of)
            self.train_difficulty = (
                [difficulty[rows[0]] for rows in self.train_groups.rows] if self.train_groups else difficulty
            )

    def difficulty(self, examples: Sequence[MRCExample], example_index: list[int]) -> list[float]:
        """Each training feature's difficulty: its example's score under ``curriculum.difficulty``."""
        spec, name = self.curriculum, self.curriculum.difficulty
        if name in MRC_DIFFICULTIES:
            return per_feature(MRC_DIFFICULTIES[name](examples, self.tokenizer), example_index)
        # bm25 / loss need a retriever or a teacher model: the scorer tasks/difficulty.py injected computes them
        # (a teacher's mean loss over the example's windows), one score per example
        request = DifficultyRequest(
            spec=spec, examples=examples, tokenizer=self.tokenizer, loader=self._eval_style_loader(self.train_features),
            settings=self.feature_settings, cache_dir=self.cache_dir, example_index=example_index,
        )
        return per_feature(expensive_scores(self.difficulty_scorer, request), example_index)

    def _setup_eval(self, split: str, require_answers: bool) -> None:
        examples = self.load_examples(split, require_answers=require_answers)
        columns = self._build(build_eval_features, examples, split)
        columns["feature_index"] = list(range(len(columns["input_ids"])))
        keys = ("input_ids", "attention_mask", "token_type_ids", "context_mask", "feature_index")
        self._eval_sets[split] = EvalSet(
            examples=examples,
            example_index=columns["example_index"],
            offset_mapping=columns["offset_mapping"],
            features=FeatureTable(columns, keys),
        )
        log.info("%s: %d examples -> %d features", split, len(examples), len(columns["input_ids"]))

    def eval_examples(self, split: str) -> Sequence[MRCExample]:
        """The examples of a validation / test split, in the order their features were built."""
        return self.eval_set(split).examples

    def eval_set(self, split: str) -> EvalSet:
        if split not in self._eval_sets:
            raise RuntimeError(f"The {split} split was not set up: call setup() for the right stage first.")
        return self._eval_sets[split]

    # ------------------------------------------------------------------ loaders

    def _collate(self) -> DataCollatorForQA:
        return DataCollatorForQA(
            pad_token_id=self.tokenizer.pad_token_id,
            pad_to_multiple_of=self.pad_to_multiple_of,
            padding_side=getattr(self.tokenizer, "padding_side", "right"),
        )

    def train_dataloader(self) -> DataLoader:
        """Windows in batches of ``batch_size``; with ``group_windows``, ``batch_size`` whole questions."""
        assert self.train_features is not None, "setup('fit') first"
        dataset: FeatureTable | QuestionGroups = self.train_groups or self.train_features
        lengths = dataset.lengths() if self.group_by_length else None
        shuffle = SeededShuffleSampler(len(dataset), seed=self.seed, lengths=lengths, batch_size=self.batch_size)
        sampler: Sampler[int] = build_sampler(self.curriculum, self.train_difficulty, shuffle, self.seed)
        collate: Any = QuestionGroupCollator(self._collate()) if self.train_groups else self._collate()
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _eval_loader(self, split: str, limit: int | float | None) -> DataLoader:
        """Batches of ``eval_batch_size`` windows, longest first when the loop reads all of them
        (``limit``: the trainer's ``limit_*_batches``).

        Sorted, each dynamically padded batch holds windows of nearly one length (the short last window of a
        long context no longer pads a batch of full ones), and a batch too large for memory fails at the first
        step. Decoding goes by ``feature_index``, so the predictions and their order do not change. A loop
        that reads only some batches (``trainer.limit_val_batches=2``, ...) keeps dataset order: it then
        scores whole examples from the start of the split, not one window of many.
        """
        features = self.eval_set(split).features
        reads_all = limit is None or (isinstance(limit, float) and limit >= 1.0)
        if not reads_all:
            return self._eval_style_loader(features)
        lengths = features.lengths()
        # sorted() is stable with reverse=True: windows of one length keep dataset order
        order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
        return self._eval_style_loader(features, order)

    def _eval_style_loader(self, features: FeatureTable, order: list[int] | None = None) -> DataLoader:
        """Features in evaluation batches, in ``order`` (default: dataset order, which is how a teacher
        scores the training set)."""
        return DataLoader(
            features,
            batch_size=resolve_eval_batch_size(self.eval_batch_size, self.batch_size),
            sampler=order,
            shuffle=False,
            collate_fn=self._collate(),
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation", self.trainer.limit_val_batches if self.trainer else None)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test", self.trainer.limit_test_batches if self.trainer else None)

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test", self.trainer.limit_predict_batches if self.trainer else None)
