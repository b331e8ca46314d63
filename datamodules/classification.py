"""Sentence and sentence-pair classification (NLI, STS as binary, topic, ...): any table of records in, one label out.

Records come from a JSON list, JSON Lines, CSV/TSV or an HF ``save_to_disk`` directory. Config names the
fields: ``text_fields`` (one or two), ``label_field``, ``id_field``; a dotted path reaches a nested field
(``labels.binary-label`` in KLUE-STS). Every record is read once into a :class:`ClassificationExample`;
nothing downstream knows the file format. The class list (label map) comes from ``label_map`` (a list, a
``{name: id}`` mapping, or a file such as KLUE-RE's ``relation_list.json``) or else from the training
data, and is written to the run dir as ``label_map.json``, which ``datamodule.label_map=`` reads back.
"""

from __future__ import annotations

import difflib
import json
import logging
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from core.errors import DataFormatError
from core.files import write_json
from core.record_files import read_record_file
from datamodules.augment import AUGMENT_METHODS, augment_text
from datamodules.base import TaskDataModule
from datamodules.curriculum import (
    TEXT_DIFFICULTIES,
    DifficultyRequest,
    build_sampler,
    curriculum_spec,
    expensive_scores,
)
from datamodules.kfold import fold_assignment, fold_report, warn_leaks
from datamodules.mrc import FeatureTable
from datamodules.record_fields import (
    MISSING,
    ClassificationExample,
    Entity,
    label_name,
    lookup,
    nested_feature,
    parse_label_map,
    sort_labels,
)
from datamodules.samplers import SeededShuffleSampler

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
FEATURE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels", "index")


# the record types and field helpers live in datamodules/record_fields.py; imported from here too
__all__ = [
    "MISSING", "ClassificationDataModule", "ClassificationExample", "Entity", "label_name", "lookup", "nested_feature",
    "parse_label_map", "sort_labels",
]


# ----------------------------------------------------------------------------- the datamodule


class ClassificationDataModule(TaskDataModule):
    """Labelled records -> tokenised (pairs of) texts, with K-fold splits and training-only augmentation.

    ``n_folds`` (with ``fold``): the training file is split into stratified, seeded folds; fold ``fold`` is
    the validation set, the others train (``validation_file`` is then not read). ``test_file``: records to
    predict; their labels, when present and known, are kept as gold.
    """

    def __init__(
        self,
        tokenizer: Any,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        train_split: str | None = "train",
        validation_split: str | None = "validation",
        test_split: str | None = "test",
        text_fields: Sequence[str] = ("sentence",),
        label_field: str = "label",
        id_field: str | None = "guid",
        label_map: Any = None,
        max_seq_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        pad_to_multiple_of: int | None = None,
        group_by_length: bool = False,
        n_folds: int | None = None,
        fold: int = 0,
        fold_seed: int = 42,
        fold_group: str | None = None,
        augment: Mapping[str, Any] | None = None,
        curriculum: str | Mapping[str, Any] | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
        output_dir: str | None = None,
        max_train_examples: int | None = None,
        max_eval_examples: int | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.files = {"train": train_file, "validation": validation_file, "test": test_file}
        self.splits = {"train": train_split, "validation": validation_split, "test": test_split}
        self.text_fields = [text_fields] if isinstance(text_fields, str) else list(text_fields)
        if not 1 <= len(self.text_fields) <= 2:
            raise ValueError(f"datamodule.text_fields={self.text_fields}: give one field, or two for a sentence pair.")
        self.label_field = label_field
        self.id_field = id_field
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size  # the attribute the batch-size finder scales
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pad_to_multiple_of = pad_to_multiple_of
        self.group_by_length = group_by_length
        self.n_folds = n_folds
        self.fold = fold
        self.fold_seed = fold_seed
        self.fold_group = fold_group
        self.groups: dict[str, str] = {}  # training id -> its fold_group value
        self.augment = dict(augment or {})
        # datamodules/curriculum.py: pacing over text_length | text_tokens | loss (a teacher run's)
        self.curriculum = curriculum_spec(curriculum, (*TEXT_DIFFICULTIES, "loss"), default="text_length")
        self.train_difficulty: list[float] = []
        self.seed = seed
        self.cache_dir = cache_dir
        self.output_dir = Path(output_dir) if output_dir else None
        self.limits = {"train": max_train_examples, "validation": max_eval_examples, "test": max_eval_examples}
        self._check_folds()
        self._cache: dict[str, list[ClassificationExample]] = {}
        self.train_features: FeatureTable | None = None
        self.class_counts: list[int] = []
        self._eval: dict[str, tuple[list[ClassificationExample], FeatureTable]] = {}
        self.fold_ids: dict[str, int] = {}
        self.labels = self._resolve_labels(label_map)
        self.label_ids = {name: i for i, name in enumerate(self.labels)}

    # ------------------------------------------------------------------ what the model needs

    def model_arguments(self) -> dict[str, Any]:
        """What ``main.build_run`` passes to the model: the class names, in id order."""
        return {"labels": list(self.labels)}

    def _check_folds(self) -> None:
        if self.n_folds is None:
            if self.fold_group:
                raise ValueError("datamodule.fold_group groups the K-fold split: set datamodule.n_folds too.")
            return
        if not isinstance(self.n_folds, int) or self.n_folds < 2:
            raise ValueError(f"datamodule.n_folds={self.n_folds!r}: give an integer >= 2 (or null for no K-fold).")
        if not isinstance(self.fold, int) or not 0 <= self.fold < self.n_folds:
            raise ValueError(f"datamodule.fold={self.fold!r}: give 0..{self.n_folds - 1} for n_folds={self.n_folds}.")

    def _resolve_labels(self, label_map: Any) -> list[str]:
        if label_map is not None:
            return parse_label_map(label_map)
        if not self.files["train"]:
            raise ValueError(
                "the classes are unknown: set datamodule.label_map (a list, or a file such as a training run's "
                "label_map.json) or datamodule.train_file."
            )
        names = {ex["label"] for ex in self.load("train", labels="all") if ex["label"] is not None}
        if len(names) < 2:
            raise DataFormatError(self.files["train"], None, f"only {len(names)} distinct label(s) under "
                                  f"{self.label_field!r}", "check datamodule.label_field")
        labels = sort_labels(names)
        log.info("label map from the training data: %d classes %s", len(labels), labels[:10])
        return labels

    # ------------------------------------------------------------------ records

    def load(self, split: str, labels: str) -> list[ClassificationExample]:
        """The split's examples; ``labels``: ``all`` (every record has one), ``optional`` (kept when present)."""
        key = f"{split}:{labels}"
        if key not in self._cache:
            path = self.files[split]
            if not path:
                raise ValueError(f"datamodule.{split}_file is not set: give the path of the {split} data.")
            source = read_record_file(path, split=self.splits[split])
            rows, features = source.records, source.features
            class_feature = nested_feature(features, self.label_field)
            class_names = list(class_feature.names) if hasattr(class_feature, "names") else None
            examples = [self.make_example(row, i, Path(path), labels, class_names) for i, row in enumerate(rows)]
            if split == "train" and self.fold_group:
                self.groups.update(self.group_values(rows, examples, Path(path)))
            seen: dict[str, int] = {}
            for i, ex in enumerate(examples):
                if ex["id"] in seen:
                    raise DataFormatError(path, ex["id"], f"the id is used by records #{seen[ex['id']]} and #{i}",
                                          "make ids unique, or set datamodule.id_field=null (ids = positions)")
                seen[ex["id"]] = i
            self._cache[key] = examples
        return self._cache[key]

    def group_values(self, rows: Sequence[Mapping[str, Any]], examples: Sequence[ClassificationExample],
                     src: Path) -> dict[str, str]:
        """Each training record's ``fold_group`` value (any field, dotted paths too), as text."""
        out = {}
        for row, ex in zip(rows, examples, strict=True):
            value = lookup(row, self.fold_group)
            if value is MISSING or value is None:
                raise DataFormatError(src, ex["id"], f"no datamodule.fold_group field {self.fold_group!r} "
                                      f"(its keys: {sorted(row)[:10]})", "set fold_group to a key every record has")
            out[ex["id"]] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
        return out

    def record_id(self, row: Mapping[str, Any], index: int, src: Path) -> str:
        if self.id_field is None:
            return str(index)
        value = lookup(row, self.id_field)
        if value is MISSING or value in (None, ""):
            raise DataFormatError(
                src, f"#{index}", f"no id field {self.id_field!r} (its keys: {sorted(row)[:10]})",
                "set datamodule.id_field to the record's id key, or to null (ids are then record positions)",
            )
        return str(value)

    def text(self, row: Mapping[str, Any], field: str, src: Path, record: str) -> str:
        value = lookup(row, field)
        if value is MISSING:
            raise DataFormatError(src, record, f"no text field {field!r} (its keys: {sorted(row)[:10]})",
                                  "set datamodule.text_fields to the record's text keys (dotted paths reach nested ones)")
        if not isinstance(value, str):
            raise DataFormatError(src, record, f"{field}={value!r} is not text", "give every record a string there")
        return value

    def label(self, row: Mapping[str, Any], src: Path, record: str, labels: str,
              class_names: Sequence[str] | None) -> str | float | None:
        value = lookup(row, self.label_field)
        if value is MISSING or value is None or value == "":
            if labels == "all":
                raise DataFormatError(src, record, f"no label under {self.label_field!r} (its keys: {sorted(row)[:10]})",
                                      "set datamodule.label_field to the label's key (dotted for nested ones)")
            return None
        return self.label_value(value, src, record, class_names)

    def label_value(self, value: Any, src: Path, record: str, class_names: Sequence[str] | None) -> str | float:
        """A record's label value as the model learns it: its class name."""
        return label_name(value, src, record, self.label_field, class_names)

    def make_example(self, row: Mapping[str, Any], index: int, src: Path, labels: str,
                     class_names: Sequence[str] | None) -> ClassificationExample:
        record = self.record_id(row, index, src)
        texts = [self.text(row, field, src, record) for field in self.text_fields]
        return {"id": record, "texts": texts, "label": self.label(row, src, record, labels, class_names), "entities": []}

    def check_labels(self, examples: Sequence[ClassificationExample], split: str) -> None:
        """Every label must be one the model has an output for: name the record and the fix."""
        for ex in examples:
            if ex["label"] is not None and ex["label"] not in self.label_ids:
                shown = self.labels if len(self.labels) <= 12 else [*self.labels[:12], "..."]
                near = difflib.get_close_matches(str(ex["label"]), self.labels, n=1)
                typo = f"if it is a typo of {near[0]!r}, correct the record; " if near else "correct the record, or "
                raise DataFormatError(
                    self.files[split] or split, ex["id"],
                    f"label {ex['label']!r} is not one of the {len(self.labels)} classes {shown}",
                    f"{typo}list every class in datamodule.label_map (a list or a file)",
                )

    # ------------------------------------------------------------------ splits

    def _limit(self, examples: list[ClassificationExample], split: str) -> list[ClassificationExample]:
        limit = self.limits[split]
        return examples[:limit] if limit else examples

    def train_and_validation(self) -> tuple[list[ClassificationExample], list[ClassificationExample]]:
        """The training examples and the validation examples: the file's, or the held-out fold."""
        train = self.load("train", labels="all")
        self.check_labels(train, "train")
        if self.n_folds is None:
            return train, self.validation_examples()
        groups = [self.groups[ex["id"]] for ex in train] if self.fold_group else None
        folds = fold_assignment(self.strata(train), self.n_folds, self.fold_seed, groups)
        if groups is None:
            warn_leaks([tuple(ex["texts"]) for ex in train], folds, self.fold, "text", "the RE sentence")
        self.fold_ids = {ex["id"]: k for ex, k in zip(train, folds, strict=True)}
        held_out = [ex for ex, k in zip(train, folds, strict=True) if k == self.fold]
        rest = [ex for ex, k in zip(train, folds, strict=True) if k != self.fold]
        log.info("fold %d of %d (seed %d): %d training, %d held-out examples", self.fold, self.n_folds,
                 self.fold_seed, len(rest), len(held_out))
        return rest, held_out

    def load_examples(self, split: str, require_answers: bool) -> list[ClassificationExample]:
        """The split's validated examples (``train`` / ``validation`` follow the K-fold split when there is one)."""
        if split == "train":
            return self.train_and_validation()[0]
        if split == "validation":
            return self.validation_examples()
        return self.load("test", labels="all") if require_answers else self.test_examples()

    def strata(self, examples: Sequence[ClassificationExample]) -> list[str]:
        """What the K-fold split keeps in proportion in every fold: the class."""
        return [str(ex["label"]) for ex in examples]

    def validation_examples(self) -> list[ClassificationExample]:
        if self.n_folds is not None:
            return self.train_and_validation()[1]
        examples = self.load("validation", labels="all")
        self.check_labels(examples, "validation")
        return examples

    def test_examples(self) -> list[ClassificationExample]:
        examples = self.load("test", labels="optional")
        if any(ex["label"] not in self.label_ids for ex in examples):  # no gold, or placeholders (label 100)
            examples = [{**ex, "label": None} for ex in examples]
        return examples

    # ------------------------------------------------------------------ augmentation

    def augmented(self, examples: list[ClassificationExample]) -> list[ClassificationExample]:
        """``augment.copies`` seeded variants of every training example, after the originals."""
        method = self.augment.get("name") or "none"
        if method not in AUGMENT_METHODS:
            raise ValueError(f"datamodule.augment.name={method!r} is unknown: choose one of {', '.join(AUGMENT_METHODS)}.")
        copies = int(self.augment.get("copies", 1))
        if method == "none" or copies < 1:
            return examples
        fields = self.augment.get("fields")
        indices = range(len(self.text_fields)) if not fields else [self._text_index(f) for f in fields]
        out = list(examples)
        for ex in examples:
            for copy in range(copies):
                rng = random.Random(f"{self.seed}:{ex['id']}:{copy}")
                out.append(self.augment_example(ex, method, rng, indices, copy))
        log.info("augment=%s: %d training examples + %d variants", method, len(examples), len(out) - len(examples))
        return out

    def _text_index(self, field: str) -> int:
        if field not in self.text_fields:
            raise ValueError(f"datamodule.augment.fields: {field!r} is not one of text_fields {self.text_fields}.")
        return self.text_fields.index(field)

    def augment_example(self, ex: ClassificationExample, method: str, rng: random.Random, indices: Sequence[int],
                        copy: int) -> ClassificationExample:
        """One variant: each chosen text rewritten, entity spans moved with their words."""
        texts, entities = list(ex["texts"]), [dict(e) for e in ex["entities"]]
        for i in indices:
            own = [e for e in entities if e["text_index"] == i]
            texts[i], spans = augment_text(texts[i], method, rng, self.augment, [(e["start"], e["end"]) for e in own])
            for entity, (start, end) in zip(own, spans, strict=True):
                entity["start"], entity["end"] = start, end
        return {"id": f"{ex['id']}#aug{copy}", "texts": texts, "label": ex["label"], "entities": entities}  # type: ignore[typeddict-item]

    # ------------------------------------------------------------------ features

    def encode(self, examples: Sequence[ClassificationExample]) -> dict[str, list[Any]]:
        """Tokenise the text (pairs), truncated to ``max_seq_length`` (longest first)."""
        firsts = [ex["texts"][0] for ex in examples]
        seconds = [ex["texts"][1] for ex in examples] if len(self.text_fields) == 2 else None
        encoded = self.tokenizer(firsts, seconds, truncation=True, max_length=self.max_seq_length)
        return dict(encoded)

    def features(self, examples: Sequence[ClassificationExample]) -> FeatureTable:
        columns = self.encode(examples)
        columns["labels"] = [self.target(ex) for ex in examples]
        columns["index"] = list(range(len(examples)))
        return FeatureTable(columns, self.feature_keys())

    def target(self, example: ClassificationExample) -> int | float:
        """The ``labels`` value the model trains on: the class id (-100: no label, ignored by the loss)."""
        return self.label_ids[example["label"]] if example["label"] is not None else -100

    def feature_keys(self) -> tuple[str, ...]:
        return FEATURE_KEYS

    # ------------------------------------------------------------------ Lightning hooks

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_features is None:
            train, validation = self.train_and_validation()
            train, validation = self._limit(train, "train"), self._limit(validation, "validation")
            counts = Counter(ex["label"] for ex in train)
            self.class_counts = [counts.get(name, 0) for name in self.labels]
            augmented = self.augmented(train)
            self.train_features = self.features(augmented)
            if self.curriculum.ordered:
                self.train_difficulty = self.difficulty(augmented)
            self._set_eval("validation", validation)
            log.info("train: %d features, validation: %d examples", len(self.train_features), len(validation))
        if stage in ("validate",) and "validation" not in self._eval:
            self._set_eval("validation", self._limit(self.validation_examples(), "validation"))
        if stage in ("test", "predict") and "test" not in self._eval:
            self._set_eval("test", self._limit(self.test_examples(), "test"))
        self._write_run_files()

    def difficulty(self, examples: list[ClassificationExample]) -> list[float]:
        """Each training example's score under ``curriculum.difficulty`` (augmented copies get their own)."""
        spec = self.curriculum
        if spec.difficulty in TEXT_DIFFICULTIES:
            return TEXT_DIFFICULTIES[spec.difficulty](examples, self.tokenizer)
        # loss: a teacher run's per-sample loss, computed by the scorer tasks/difficulty.py injected
        request = DifficultyRequest(
            spec=spec, examples=examples, tokenizer=self.tokenizer, loader=self._loader(self.train_features),
            settings={"max_seq_length": self.max_seq_length}, cache_dir=self.cache_dir,
        )
        return expensive_scores(self.difficulty_scorer, request)

    def _set_eval(self, split: str, examples: list[ClassificationExample]) -> None:
        self._eval[split] = (examples, self.features(examples))

    def _write_run_files(self) -> None:
        if self.output_dir is None or (self.trainer is not None and not self.trainer.is_global_zero):
            return
        if self.label_ids:  # real-valued labels have no classes
            write_json(self.output_dir / "label_map.json", self.label_ids)
        if self.fold_ids:
            write_json(self.output_dir / "folds.json", fold_report(self.fold_ids, self.n_folds, self.fold, self.fold_seed))

    def eval_examples(self, split: str) -> list[ClassificationExample]:
        """The examples behind the ``index`` column of a validation / test batch (for predictions.json)."""
        if split not in self._eval:
            raise RuntimeError(f"The {split} split was not set up: call setup() for the right stage first.")
        return self._eval[split][0]

    def _collate(self) -> DataCollatorWithPadding:
        return DataCollatorWithPadding(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)

    def train_dataloader(self) -> DataLoader:
        assert self.train_features is not None, "setup('fit') first"
        lengths = self.train_features.lengths() if self.group_by_length else None
        shuffle = SeededShuffleSampler(len(self.train_features), seed=self.seed, lengths=lengths,
                                       batch_size=self.batch_size)
        sampler = build_sampler(self.curriculum, self.train_difficulty, shuffle, self.seed)
        return DataLoader(self.train_features, batch_size=self.batch_size, sampler=sampler, collate_fn=self._collate(),
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def _eval_loader(self, split: str) -> DataLoader:
        if split not in self._eval:
            raise RuntimeError(f"The {split} split was not set up: call setup() for the right stage first.")
        return self._loader(self._eval[split][1])

    def _loader(self, features: FeatureTable) -> DataLoader:
        """Features in dataset order, in evaluation batches (also how a teacher scores the training set)."""
        return DataLoader(features, batch_size=self.eval_batch_size, shuffle=False, collate_fn=self._collate(),
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

