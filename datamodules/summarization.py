"""Summarisation data (text -> summary) for a decoder-only or an encoder-decoder generator (``model=generator``).

Records come from JSON, JSON Lines, CSV/TSV or ``save_to_disk`` data (``core.record_files.read_records``,
the one reader), with the fields named by ``text_field``, ``summary_field`` and ``id_field``.

* **causal** (a GPT): ``[bos] prompt(text) summary [eos]`` in one sequence; the prompt is
  ``prompt_template`` with ``{text}`` filled in (the text cut to ``max_source_length`` tokens), and its
  positions get label -100 so only the summary is learnt. Generation starts from the left-padded prompt.
* **seq2seq** (BART, T5): ``source_prefix + text`` (``max_source_length`` tokens, the tokenizer's special
  tokens) into the encoder; the summary (``max_target_length`` tokens, ``text_target``) as labels.

``architecture: auto`` takes the model's (``model.architecture``, resolved from the backbone's config).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import torch
from torch.utils.data import DataLoader

from core.errors import DataFormatError
from core.generation import ARCHITECTURES, ensure_pad_token
from core.record_files import read_records
from datamodules.base import TaskDataModule
from datamodules.classification import MISSING, ClassificationDataModule, lookup
from datamodules.mrc import FeatureTable
from datamodules.samplers import SeededShuffleSampler

log = logging.getLogger(__name__)

FEATURE_KEYS = ("input_ids", "labels", "prompt_ids", "index")


class SummaryExample(TypedDict):
    id: str
    text: str
    summary: str | None


def pad(rows: Sequence[Sequence[int]], value: int, left: bool = False) -> torch.Tensor:
    """Rows of ids as one tensor padded with ``value`` (on the left for generation prompts)."""
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            span = slice(width - len(row), width) if left else slice(0, len(row))
            out[i, span] = torch.tensor(row)
    return out


class SummaryCollator:
    """Pads a batch two ways at once, which transformers' collators do not: the teacher-forced sequence
    (``input_ids``/``labels``) on the right, the causal prompt to generate from (``prompt_ids``) on the left."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {"index": torch.tensor([f["index"] for f in features])}
        ids = [f["input_ids"] for f in features]
        batch["input_ids"] = pad(ids, self.pad_token_id)
        batch["attention_mask"] = pad([[1] * len(r) for r in ids], 0)
        if "labels" in features[0]:
            batch["labels"] = pad([f["labels"] for f in features], -100)
        if features[0].get("prompt_ids") is not None:
            prompts = [f["prompt_ids"] for f in features]
            batch["prompt_ids"] = pad(prompts, self.pad_token_id, left=True)
            batch["prompt_attention_mask"] = pad([[1] * len(r) for r in prompts], 0, left=True)
        return batch


class SummarizationDataModule(TaskDataModule):
    """Text/summary records -> tokenised training sequences, and generation inputs for validation/test."""

    def __init__(
        self,
        tokenizer: Any,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        train_split: str | None = "train",
        validation_split: str | None = "validation",
        test_split: str | None = "test",
        text_field: str = "text",
        summary_field: str = "summary",
        id_field: str | None = "id",
        architecture: str = "auto",
        prompt_template: str = "{text}\n요약:",
        source_prefix: str = "",
        max_source_length: int = 256,
        max_target_length: int = 64,
        batch_size: int = 16,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        group_by_length: bool = True,
        seed: int = 0,
        max_train_examples: int | None = None,
        max_eval_examples: int | None = None,
    ) -> None:
        super().__init__()
        if architecture not in ("auto", *ARCHITECTURES):
            raise ValueError(f"datamodule.architecture={architecture!r}: choose auto, causal or seq2seq.")
        if prompt_template.count("{text}") != 1:
            raise ValueError(
                f"datamodule.prompt_template={prompt_template!r} must hold {{text}} exactly once "
                "(where the text goes), e.g. '{text}\\n요약:'."
            )
        for key, value in (("max_source_length", max_source_length), ("max_target_length", max_target_length)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"datamodule.{key}={value!r} must be a positive number of tokens.")
        ensure_pad_token(tokenizer)
        self.tokenizer = tokenizer
        self.files = {"train": train_file, "validation": validation_file, "test": test_file}
        self.splits = {"train": train_split, "validation": validation_split, "test": test_split}
        self.text_field, self.summary_field, self.id_field = text_field, summary_field, id_field
        self.architecture = architecture
        self.prompt_prefix, self.prompt_suffix = prompt_template.split("{text}")
        self.source_prefix = source_prefix
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self.batch_size = batch_size  # the attribute the batch-size finder scales
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.group_by_length = group_by_length
        self.seed = seed
        self.limits = {"train": max_train_examples, "validation": max_eval_examples, "test": max_eval_examples}
        self.collator = SummaryCollator(tokenizer.pad_token_id)
        self.train_features: FeatureTable | None = None
        self._eval: dict[str, tuple[list[SummaryExample], FeatureTable]] = {}

    # ------------------------------------------------------------------ records

    def load(self, split: str) -> list[SummaryExample]:
        """The split's records; training and validation need a summary, test records may lack one."""
        path = self.files[split]
        if not path:
            raise ValueError(f"datamodule.{split}_file is not set: give the path of the {split} data.")
        rows = read_records(path, split=self.splits[split])
        src, examples, seen = Path(path), [], {}
        for index, row in enumerate(rows):
            record = self._id(row, index, src)
            if record in seen:
                raise DataFormatError(src, record, f"the id is used by records #{seen[record]} and #{index}",
                                      "make ids unique, or set datamodule.id_field=null (ids = positions)")
            seen[record] = index
            text = self._field(row, self.text_field, src, record, "text_field", required=True)
            summary = self._field(row, self.summary_field, src, record, "summary_field", required=split != "test")
            examples.append({"id": record, "text": text, "summary": summary})
        limit = self.limits[split]
        return examples[:limit] if limit else examples

    # the classification reader's rule (the id field, dotted paths, or positions with id_field null)
    _id = ClassificationDataModule.record_id

    def load_examples(self, split: str, require_answers: bool) -> list[SummaryExample]:
        """The split's records (``load``: a test record may lack its summary)."""
        return self.load(split)

    def _field(self, row: Mapping[str, Any], field: str, src: Path, record: str, key: str,
               required: bool) -> str | None:
        value = lookup(row, field)
        if value is MISSING or value is None or (isinstance(value, str) and not value.strip()):
            if not required:
                return None
            found = "an empty value" if value is not MISSING else f"no field {field!r} (its keys: {sorted(row)[:10]})"
            raise DataFormatError(src, record, f"{found} under datamodule.{key}={field!r}",
                                  f"set datamodule.{key} to the record's key (dotted for nested ones), or fill the record")
        if not isinstance(value, str):
            raise DataFormatError(src, record, f"{field}={value!r} is not text", "give every record a string there")
        return value.strip()

    # ------------------------------------------------------------------ features

    def resolved_architecture(self) -> str:
        """``architecture``, or with ``auto`` the model's (a generator knows it from its backbone config)."""
        if self.architecture != "auto":
            return self.architecture
        model = self.trainer.lightning_module if self.trainer is not None else None
        found = getattr(model, "architecture", None)
        if found not in ARCHITECTURES:
            raise ValueError("datamodule.architecture=auto needs model=generator; set causal or seq2seq otherwise.")
        return found

    def _ids(self, texts: list[str], limit: int | None = None) -> list[list[int]]:
        encoded = self.tokenizer(texts, add_special_tokens=False, truncation=limit is not None, max_length=limit)
        return encoded["input_ids"]

    def causal_features(self, examples: Sequence[SummaryExample]) -> dict[str, list[Any]]:
        """``[bos] prefix text suffix`` (prompt, label -100) + ``summary [eos]`` (learnt)."""
        tok = self.tokenizer
        if tok.eos_token_id is None:
            raise ValueError("a causal generator needs an eos token to end summaries; this tokenizer has none.")
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        # the template's pieces are tokenised once; the text alone is cut, so the instruction always survives
        prefix = self._ids([self.prompt_prefix])[0] if self.prompt_prefix else []
        suffix = self._ids([self.prompt_suffix])[0] if self.prompt_suffix else []
        texts = self._ids([ex["text"] for ex in examples], self.max_source_length)
        summaries = [ex["summary"] for ex in examples]
        targets = self._ids([s or "" for s in summaries], self.max_target_length)
        columns: dict[str, list[Any]] = {"input_ids": [], "labels": [], "prompt_ids": []}
        for text, target, summary in zip(texts, targets, summaries, strict=True):
            prompt = bos + prefix + text + suffix
            columns["prompt_ids"].append(prompt)
            if summary is None:  # a test record: the prompt alone, nothing to learn
                columns["input_ids"].append(prompt)
                columns["labels"].append([-100] * len(prompt))
                continue
            target = target + [tok.eos_token_id]
            columns["input_ids"].append(prompt + target)
            columns["labels"].append([-100] * len(prompt) + target)
        return columns

    def seq2seq_features(self, examples: Sequence[SummaryExample]) -> dict[str, list[Any]]:
        """Encoder input with the tokenizer's special tokens; labels from ``text_target`` (its own specials)."""
        sources = [self.source_prefix + ex["text"] for ex in examples]
        inputs = self.tokenizer(sources, truncation=True, max_length=self.max_source_length)["input_ids"]
        summaries = [ex["summary"] for ex in examples]
        labels = self.tokenizer(text_target=[s or "" for s in summaries], truncation=True,
                                max_length=self.max_target_length)["input_ids"]
        labels = [lab if s is not None else [-100] for lab, s in zip(labels, summaries, strict=True)]
        return {"input_ids": inputs, "labels": labels}

    def features(self, examples: Sequence[SummaryExample]) -> FeatureTable:
        if not examples:
            raise ValueError("no records to tokenise: check the data file and datamodule.max_*_examples.")
        build = self.causal_features if self.resolved_architecture() == "causal" else self.seq2seq_features
        columns = build(examples)
        columns["index"] = list(range(len(examples)))
        return FeatureTable(columns, FEATURE_KEYS)

    # ------------------------------------------------------------------ Lightning hooks

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_features is None:
            self.train_features = self.features(self.load("train"))
            self._set_eval("validation")
            log.info("summarisation (%s): %d training sequences, %d validation examples",
                     self.resolved_architecture(), len(self.train_features), len(self._eval["validation"][0]))
        if stage == "validate" and "validation" not in self._eval:
            self._set_eval("validation")
        if stage in ("test", "predict") and "test" not in self._eval:
            self._set_eval("test")

    def _set_eval(self, split: str) -> None:
        examples = self.load(split)
        self._eval[split] = (examples, self.features(examples))

    def eval_examples(self, split: str) -> list[SummaryExample]:
        """The records behind the ``index`` column of a validation / test batch."""
        if split not in self._eval:
            raise RuntimeError(f"The {split} split was not set up: call setup() for the right stage first.")
        return self._eval[split][0]

    def train_dataloader(self) -> DataLoader:
        assert self.train_features is not None, "setup('fit') first"
        lengths = self.train_features.lengths() if self.group_by_length else None
        sampler = SeededShuffleSampler(len(self.train_features), seed=self.seed, lengths=lengths,
                                       batch_size=self.batch_size)
        return DataLoader(self.train_features, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collator,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def _eval_loader(self, split: str) -> DataLoader:
        if split not in self._eval:
            raise RuntimeError(f"The {split} split was not set up: call setup() for the right stage first.")
        return DataLoader(self._eval[split][1], batch_size=self.eval_batch_size, shuffle=False,
                          collate_fn=self.collator, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
