"""Unlabelled text for masked-LM training (task-adaptive pre-training, TAPT), or causal-LM training (``mlm: false``).

Every string stored under ``fields`` (contexts and questions by default; answers are never read) in
``train_file`` and ``files`` is de-duplicated, cut into ``max_seq_length`` windows and masked on the fly
by transformers' ``DataCollatorForLanguageModeling`` (``whole_word_mask`` optional). A seeded share of the
texts is held out, masked once, and scored every epoch: its loss and perplexity are comparable across
epochs and runs.
"""

from __future__ import annotations

import logging
import random
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from transformers import DataCollatorForLanguageModeling, DataCollatorForTokenClassification

from core.record_files import iter_texts
from datamodules.base import TaskDataModule
from datamodules.samplers import SeededShuffleSampler

log = logging.getLogger(__name__)


class Sequences(Dataset):
    """Tokenised windows held in memory, one dict per window."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return dict(self.rows[index])


class MaskingCollator:
    """``DataCollatorForLanguageModeling``, with ``offset_mapping`` padded the way the tokenizer pads ids.

    Whole-word masking reads word boundaries from the offsets, but ``tokenizer.pad`` leaves them unpadded;
    padded positions get (0, 0), and being special tokens they are never masked.
    """

    def __init__(self, collator: DataCollatorForLanguageModeling) -> None:
        self.collator = collator

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if features and "offset_mapping" in features[0]:
            multiple = self.collator.pad_to_multiple_of or 1
            length = max(len(f["input_ids"]) for f in features)
            length = -(-length // multiple) * multiple
            left = self.collator.tokenizer.padding_side == "left"
            for feature in features:
                pad = [[0, 0]] * (length - len(feature["offset_mapping"]))
                offsets = [list(o) for o in feature["offset_mapping"]]
                feature["offset_mapping"] = pad + offsets if left else offsets + pad
        return self.collator(features)


def read_texts(paths: Sequence[str | Path], fields: Sequence[str]) -> list[str]:
    """De-duplicated, NFC-normalised, non-empty strings under ``fields`` (contexts repeat once per question)."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"datamodule.train_file / datamodule.files: {missing} not found.")
    texts = (unicodedata.normalize("NFC", t).strip() for t in iter_texts(list(paths), list(fields)))
    return list(dict.fromkeys(t for t in texts if t))


class MLMTextDataModule(TaskDataModule):
    """Text of chosen files for MLM: windows of ``max_seq_length`` tokens, dynamic masking, held-out perplexity.

    ``train_file`` is the task's training file (``backbone=tiny`` also trains its tokenizer on it);
    ``files`` adds more unlabelled text, e.g. the test set's contexts and questions.
    """

    def __init__(
        self,
        tokenizer: Any,
        train_file: str | None = None,
        files: Sequence[str] = (),
        fields: Sequence[str] = ("context", "question"),
        max_seq_length: int = 256,
        mlm_probability: float = 0.15,
        whole_word_mask: bool = False,
        validation_ratio: float = 0.05,
        group_by_length: bool = True,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        pad_to_multiple_of: int | None = None,
        max_train_examples: int | None = None,
        max_eval_examples: int | None = None,
        seed: int = 42,
        mlm: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 < validation_ratio < 1.0:
            raise ValueError(
                f"datamodule.validation_ratio={validation_ratio}: hold out a share of the texts for perplexity "
                "(0 < validation_ratio < 1, e.g. 0.05)."
            )
        if whole_word_mask and not mlm:
            raise ValueError("datamodule.whole_word_mask=true masks words for a masked LM: it needs datamodule.mlm=true.")
        if whole_word_mask and not getattr(tokenizer, "is_fast", False):
            raise ValueError("datamodule.whole_word_mask=true needs a fast tokenizer (it reads word offsets).")
        self.tokenizer = tokenizer
        self.paths = [str(p) for p in [train_file, *(files or [])] if p]
        if not self.paths:
            raise ValueError("datamodule=mlm_text needs text: set datamodule.train_file or datamodule.files.")
        self.fields = list(fields)
        self.max_seq_length = max_seq_length
        self.validation_ratio = validation_ratio
        self.group_by_length = group_by_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.max_train_examples = max_train_examples
        self.max_eval_examples = max_eval_examples
        self.seed = seed
        # mlm=false: next-token labels (the windows themselves) for a causal LM (model=generator's pre-training)
        masking = {"mlm": mlm, "mlm_probability": mlm_probability, "whole_word_mask": whole_word_mask}
        if whole_word_mask:  # transformers masks whole words with [MASK] only (no random replacement)
            masking.update(mask_replace_prob=1.0, random_replace_prob=0.0)
        self.collator = MaskingCollator(
            DataCollatorForLanguageModeling(tokenizer, pad_to_multiple_of=pad_to_multiple_of, **masking)
        )
        # the held-out windows are masked once, with their own seed, so every epoch scores the same task
        self.eval_masker = MaskingCollator(DataCollatorForLanguageModeling(tokenizer, seed=seed, **masking))
        self.eval_padder = DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
        self.train_set: Sequences | None = None
        self.val_set: Sequences | None = None

    # ------------------------------------------------------------------ data

    def windows(self, texts: list[str]) -> list[dict[str, Any]]:
        """Every text cut into consecutive windows (long contexts are not truncated away)."""
        if not texts:
            return []
        encoded = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.max_seq_length,
            return_overflowing_tokens=True,
            return_special_tokens_mask=True,
            return_offsets_mapping=self.collator.collator.whole_word_mask,
            return_token_type_ids=False,
        )
        wanted = ("input_ids", "attention_mask", "special_tokens_mask", "offset_mapping")
        keys = [k for k in wanted if k in encoded]
        return [{k: encoded[k][i] for k in keys} for i in range(len(encoded["input_ids"]))]

    def premask(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Masked copies of ``rows`` (input_ids + labels, unpadded) from the seeded evaluation masker."""
        out = []
        for start in range(0, len(rows), 256):
            chunk = [dict(r) for r in rows[start : start + 256]]
            lengths = [len(r["input_ids"]) for r in chunk]
            batch = self.eval_masker(chunk)
            left = self.tokenizer.padding_side == "left"
            for i, n in enumerate(lengths):
                part = slice(batch["input_ids"].size(1) - n, None) if left else slice(0, n)
                out.append({
                    "input_ids": batch["input_ids"][i, part].tolist(),
                    "attention_mask": [1] * n,
                    "labels": batch["labels"][i, part].tolist(),
                })
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        texts = read_texts(self.paths, self.fields)
        if len(texts) < 2:
            raise ValueError(
                f"datamodule=mlm_text found {len(texts)} text(s) under fields {self.fields} in {self.paths}: "
                "check datamodule.fields (e.g. [context, question] for MRC files, [text] for a corpus)."
            )
        order = list(range(len(texts)))
        random.Random(self.seed).shuffle(order)
        held_out = min(max(1, round(self.validation_ratio * len(texts))), len(texts) - 1)
        val_texts = [texts[i] for i in order[:held_out]][: self.max_eval_examples]
        train_texts = [texts[i] for i in order[held_out:]][: self.max_train_examples]
        self.train_set = Sequences(self.windows(train_texts))
        # held-out windows in length order: the least padding, and the loss is a token mean anyway
        held_out = sorted(self.windows(val_texts), key=lambda row: len(row["input_ids"]))
        self.val_set = Sequences(self.premask(held_out))
        log.info(
            "MLM text: %d texts for training (%d windows), %d held out (%d windows) from %s",
            len(train_texts), len(self.train_set), len(val_texts), len(self.val_set), self.paths,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        lengths = [len(row["input_ids"]) for row in self.train_set.rows] if self.group_by_length else None
        sampler = SeededShuffleSampler(
            len(self.train_set), seed=self.seed, lengths=lengths, batch_size=self.batch_size
        )
        return DataLoader(
            self.train_set, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collator,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return DataLoader(
            self.val_set, batch_size=self.eval_batch_size, shuffle=False, collate_fn=self.eval_padder,
            num_workers=self.num_workers,
        )
