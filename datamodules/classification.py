"""Sentence and sentence-pair classification (NLI, STS as binary, topic, ...): any table of records in, one label out.

Records come from a JSON list, JSON Lines, CSV/TSV or an HF ``save_to_disk`` directory. Config names the
fields: ``text_fields`` (one or two), ``label_field``, ``id_field``; a dotted path reaches a nested field
(``labels.binary-label`` in KLUE-STS). Every record is read once into a :class:`ClassificationExample`;
nothing downstream knows the file format. The class list (label map) comes from ``label_map`` (a list, a
``{name: id}`` mapping, or a file such as KLUE-RE's ``relation_list.json``) or else from the training
data, and is written to the run dir as ``label_map.json``, which ``datamodule.label_map=`` reads back.
"""

from __future__ import annotations

import csv
import difflib
import json
import logging
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from core.errors import DataFormatError
from core.files import write_json
from datamodules.augment import AUGMENT_METHODS, augment_text
from datamodules.curriculum import (
    TEXT_DIFFICULTIES,
    build_sampler,
    cached_scores,
    curriculum_spec,
    data_fingerprint,
    file_identity,
    teacher_losses,
)
from datamodules.kfold import fold_assignment, fold_report, warn_leaks
from datamodules.mrc import FeatureTable
from datamodules.samplers import SeededShuffleSampler

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
FEATURE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels", "index")


class Entity(TypedDict):
    """A character span of one of the example's texts: ``end`` is exclusive (``text[start:end] == word``)."""

    role: str
    word: str
    start: int
    end: int
    type: str
    text_index: int


class ClassificationExample(TypedDict):
    id: str
    texts: list[str]
    # a class name; a real number for datamodules/regression.py
    label: str | float | None
    entities: list[Entity]


# ----------------------------------------------------------------------------- reading files


def read_records(path: str | Path, split: str | None = None) -> tuple[list[dict[str, Any]], Any]:
    """Rows of a JSON list / JSON Lines / CSV / TSV file or a ``save_to_disk`` dataset, and the HF features (or None)."""
    src = Path(path)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or directory (check datamodule.*_file).")
    if src.is_dir():
        return _records_from_saved_dataset(src, split)
    suffix = src.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with src.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
        if not rows:
            raise DataFormatError(src, None, "the file has a header but no records", "give a file with data rows")
        return rows, None
    text = src.read_text(encoding="utf-8-sig")
    if suffix == ".jsonl" or _looks_like_json_lines(text):
        return _json_lines(src, text), None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataFormatError(
            src, f"line {error.lineno}, column {error.colno}", f"not valid JSON ({error.msg})",
            "repair or re-export the file (a truncated download is the usual cause)",
        ) from None
    return _rows_of_document(src, document), None


def _looks_like_json_lines(text: str) -> bool:
    lines = [line for line in text.splitlines()[:3] if line.strip()]
    return len(lines) > 1 and all(line.lstrip().startswith("{") and line.rstrip().endswith("}") for line in lines)


def _json_lines(src: Path, text: str) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise DataFormatError(
                src, f"line {number}", f"not valid JSON ({error.msg})", "write one JSON object per line"
            ) from None
    return _rows_of_document(src, rows)


def _rows_of_document(src: Path, document: Any) -> list[dict[str, Any]]:
    """A list of objects, or an object holding exactly one such list (``{"data": [...]}``)."""
    if isinstance(document, dict):
        lists = [v for v in document.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
        if len(lists) != 1:
            raise DataFormatError(
                src, None, f"a JSON object with keys {sorted(document)[:8]}, not a list of records",
                "write the records as a JSON list ([{...}, {...}]) or JSON Lines",
            )
        document = lists[0]
    if not isinstance(document, list) or not document:
        raise DataFormatError(src, None, "no records found", "write the records as a JSON list or JSON Lines")
    for index, row in enumerate(document):
        if not isinstance(row, dict):
            raise DataFormatError(src, f"#{index}", f"a {type(row).__name__}, not an object", "make every record a JSON object")
    return document


def _records_from_saved_dataset(src: Path, split: str | None) -> tuple[list[dict[str, Any]], Any]:
    from datasets import DatasetDict, load_from_disk

    data = load_from_disk(str(src))
    if isinstance(data, DatasetDict):
        if split not in data:
            raise DataFormatError(
                src, None, f"a DatasetDict with splits {sorted(data)}, and datamodule.*_split={split!r} is not one",
                f"set the split to one of {sorted(data)}",
            )
        data = data[split]
    return data.to_list(), data.features


# ----------------------------------------------------------------------------- fields


MISSING = object()


def lookup(record: Mapping[str, Any], dotted: str) -> Any:
    """``record[dotted]``, else the nested value at the dotted path (``labels.binary-label``); MISSING if absent."""
    if dotted in record:
        return record[dotted]
    node: Any = record
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


def nested_feature(features: Any, dotted: str) -> Any:
    """The HF feature at a dotted path (a ClassLabel tells the class names of integer labels)."""
    node = features
    for part in ([dotted] if features is not None and dotted in features else dotted.split(".")):
        try:
            node = node[part]
        except (KeyError, TypeError):
            return None
    return node


def label_name(value: Any, src: Path, record: str, field: str, class_names: Sequence[str] | None) -> str:
    """A label value as its class name: strings as they are, integers as text (or their ClassLabel name)."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise DataFormatError(
                src, record, f"{field}={value} is a real-valued score, not a class",
                "classify a discrete field instead (KLUE-STS: datamodule.label_field=labels.binary-label), or "
                "regress the score: model=regressor datamodule=regression (docs/sts.md)",
            )
        value = int(value)
    if isinstance(value, int):
        if class_names is not None:
            if not 0 <= value < len(class_names):
                raise DataFormatError(src, record, f"{field}={value} is outside the dataset's {len(class_names)} classes",
                                      "correct the record")
            return class_names[value]
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise DataFormatError(src, record, f"{field}={value!r} is not a label", "give every record a class name or number")


def sort_labels(names: set[str]) -> list[str]:
    """Numeric names in numeric order (``0, 1, 2, 10``), others alphabetically."""
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


# ----------------------------------------------------------------------------- label maps


def parse_label_map(spec: Any) -> list[str]:
    """``label_map`` as class names in id order: a list, ``{name: id}``, ``{id: name}``, or a JSON / text file.

    A JSON file may hold any of those or one list under a single key (KLUE-RE's ``relation_list.json``:
    ``{"relations": [...]}``); a ``.txt`` file lists one class per line.
    """
    if isinstance(spec, str | Path):
        path = Path(spec)
        if not path.exists():
            raise FileNotFoundError(f"datamodule.label_map={spec}: no such file.")
        if path.suffix.lower() in (".pkl", ".pickle"):
            raise ValueError(
                f"datamodule.label_map={spec}: pickle files are not read (loading one can run code); write the "
                "mapping as JSON, e.g. json.dump(pickle.load(f), open('label_map.json', 'w'), ensure_ascii=False)."
            )
        text = path.read_text(encoding="utf-8-sig")
        if path.suffix.lower() == ".json":
            try:
                spec = json.loads(text)
            except json.JSONDecodeError as error:
                raise DataFormatError(path, f"line {error.lineno}", f"not valid JSON ({error.msg})", "repair the file") from None
            if isinstance(spec, dict) and len(spec) == 1 and isinstance(next(iter(spec.values())), list):
                spec = next(iter(spec.values()))
        else:
            spec = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
        if all(isinstance(v, int) for _, v in items):
            ids = sorted(v for _, v in items)
            if ids != list(range(len(items))):
                raise ValueError(f"datamodule.label_map: the ids {ids[:10]} must be 0..{len(items) - 1}, each once.")
            names = [name for name, _ in sorted(items, key=lambda kv: kv[1])]
        elif all(k.isdigit() for k, _ in items):
            names = [str(v) for _, v in sorted(items, key=lambda kv: int(kv[0]))]
        else:
            raise ValueError("datamodule.label_map: give a list of class names, {name: id} or {id: name}.")
    elif isinstance(spec, Sequence) and not isinstance(spec, str):
        names = [str(v) for v in spec]
    else:
        raise ValueError(f"datamodule.label_map={spec!r}: give a list of class names, a mapping, or a file path.")
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"datamodule.label_map: need at least two distinct class names (got {names[:10]}).")
    return names


# ----------------------------------------------------------------------------- the datamodule


class ClassificationDataModule(LightningDataModule):
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
            rows, features = read_records(path, self.splits[split])
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
        key = {
            "difficulty": spec.difficulty, "data": data_fingerprint(examples, self.tokenizer),
            "max_seq_length": self.max_seq_length, "teacher": file_identity(str(spec.teacher_ckpt)),
        }  # fmt: skip
        loader = self._loader(self.train_features)
        return cached_scores(self.cache_dir, key,
                             lambda: teacher_losses(spec, self.teacher_class(), self.tokenizer, loader))

    def teacher_class(self) -> type:
        """The module a ``curriculum.difficulty=loss`` teacher checkpoint is rebuilt as."""
        from models.classifier import SequenceClassifier

        return SequenceClassifier

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

