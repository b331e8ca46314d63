"""Training data for a retriever: (question, its passage, hard negatives) from any MRC file.

A question's positive is its own context; its hard negatives are passages a first-stage retriever (BM25 by
default) ranks high that neither are its passage nor hold one of its answers nor belong to a validation question:
they are mined by the task layer (``tasks/retriever_data.py``, with the run's ``retriever`` config) and handed
in through :meth:`PassageRetrievalDataModule.use_retrieval_data`, as ``negative_passages`` are for the reader.

``pairing`` decides the batches:

* ``biencoder`` (``model=biencoder``): questions and passages tokenised apart; the passages of a batch are every
  question's positive then its ``hard_negatives``, so each question also meets every other question's passages
  (in-batch negatives, DPR). ``passage_keys`` name each passage's text, so a passage shared by two questions of
  a batch is not counted as a negative of either;
* ``cross`` (``model=cross_encoder``): one (question, passage) pair per row, the positive first in each group of
  ``1 + hard_negatives``.

Validation searches a corpus (``core.ranking.RankingEvaluation``: the validation contexts, or
``retriever.corpus_file``): the bi-encoder ranks all of it, the cross-encoder re-ranks each question's
``eval_candidates`` best passages of the first-stage retriever.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from core.ranking import RankingEvaluation
from core.records import MRCExample
from datamodules.base import TaskDataModule
from datamodules.mrc_formats import load_mrc_examples
from datamodules.negatives import NegativeMiner, NegativesRequest
from datamodules.samplers import SeededShuffleSampler

__all__ = ["EvaluationRequest", "EvaluationBuilder", "PassageRetrievalDataModule", "passage_key", "passage_text"]

log = logging.getLogger(__name__)

PAIRINGS = ("biencoder", "cross")


@dataclass(frozen=True)
class EvaluationRequest:
    """What the datamodule asks the task layer for: the corpus its validation ``examples`` are searched in, the
    gold passages, and (``candidates`` > 0) each question's top passages of the first-stage retriever."""

    examples: Sequence[MRCExample]
    candidates: int
    validation_file: str | None
    validation_split: str | None = None


# (request) -> the evaluation corpus; injected by tasks/retriever_data.py
EvaluationBuilder = Callable[[EvaluationRequest], RankingEvaluation]


def passage_text(title: str | None, text: str, index_title: bool) -> str:
    """What is encoded for a passage: ``title\\ntext`` as the retrievers index it (``retriever.index_title``)."""
    return f"{title}\n{text}" if index_title and title else text


def passage_key(text: str) -> int:
    """A 63-bit id of a passage's text: equal texts are one passage, whichever question brought them."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") >> 1


def own_passages(examples: Sequence[MRCExample]) -> RankingEvaluation:
    """The evaluation corpus without the task layer: the examples' de-duplicated contexts, each question's own."""
    index: dict[tuple[str, str], int] = {}
    passages: list[dict[str, Any]] = []
    gold: list[list[int]] = []
    for example in examples:
        key = (example.get("title") or "", example["context"])
        if key not in index:
            index[key] = len(passages)
            passages.append({"id": f"p{len(passages)}", "title": key[0], "text": key[1]})
        gold.append([index[key]])
    return RankingEvaluation([ex["id"] for ex in examples], passages, gold)


class _Rows(Dataset):
    def __init__(self, rows: Sequence[Any]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Any:
        return self.rows[index]


@dataclass
class BiEncoderCollator:
    """Questions and passages tokenised apart (picklable for DataLoader workers)."""

    tokenizer: Any
    query_max_length: int
    passage_max_length: int

    def side(self, texts: list[str], max_length: int, prefix: str) -> dict[str, torch.Tensor]:
        out = self.tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt",
                             return_token_type_ids=False)
        return {f"{prefix}_input_ids": out["input_ids"], f"{prefix}_attention_mask": out["attention_mask"]}

    def __call__(self, rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if "passages" not in rows[0]:  # an evaluation batch of one side
            side = rows[0]["side"]
            limit = self.query_max_length if side == "q" else self.passage_max_length
            batch = self.side([r["text"] for r in rows], limit, side)
            batch["index"] = torch.tensor([r["index"] for r in rows], dtype=torch.long)
            batch["side"] = torch.tensor(0 if side == "q" else 1)
            return batch
        passages = [r["passages"][0] for r in rows] + [p for r in rows for p in r["passages"][1:]]
        keys = [r["keys"][0] for r in rows] + [k for r in rows for k in r["keys"][1:]]
        batch = {**self.side([r["question"] for r in rows], self.query_max_length, "q"),
                 **self.side(passages, self.passage_max_length, "p")}
        batch["passage_keys"] = torch.tensor(keys, dtype=torch.long)
        batch["index"] = torch.tensor([r["index"] for r in rows], dtype=torch.long)
        return batch


@dataclass
class CrossCollator:
    """(question, passage) pairs tokenised together; ``group_size`` rows per question in training."""

    tokenizer: Any
    max_length: int

    def __call__(self, rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if "passages" in rows[0]:
            questions = [r["question"] for r in rows for _ in r["passages"]]
            passages = [p for r in rows for p in r["passages"]]
        else:
            questions, passages = [r["question"] for r in rows], [r["text"] for r in rows]
        out = self.tokenizer(questions, passages, truncation="only_second", max_length=self.max_length,
                             padding=True, return_tensors="pt")
        batch = {key: out[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in out}
        if "passages" in rows[0]:
            batch["group_size"] = torch.tensor(len(rows[0]["passages"]))
        else:
            batch["question"] = torch.tensor([r["index"] for r in rows], dtype=torch.long)
            batch["rank"] = torch.tensor([r["rank"] for r in rows], dtype=torch.long)
            batch["pair"] = torch.tensor([r["pair"] for r in rows], dtype=torch.long)
        return batch


class PassageRetrievalDataModule(TaskDataModule):
    """(question, positive, hard negatives) batches for ``model=biencoder`` / ``model=cross_encoder``."""

    def __init__(
        self,
        tokenizer: Any,
        train_file: str | None = None,
        validation_file: str | None = None,
        train_split: str | None = None,
        validation_split: str | None = None,
        pairing: str = "biencoder",
        hard_negatives: int = 1,
        negative_pool: int = 10,
        eval_candidates: int = 20,
        query_max_length: int = 64,
        passage_max_length: int = 256,
        pair_max_length: int = 320,
        index_title: bool = True,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        num_workers: int = 0,
        max_train_examples: int | None = None,
        max_eval_examples: int | None = None,
        cache_dir: str | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__()
        if pairing not in PAIRINGS:
            raise ValueError(f"datamodule.pairing={pairing!r}: choose biencoder (model=biencoder) or cross "
                             "(model=cross_encoder).")
        if isinstance(hard_negatives, bool) or not isinstance(hard_negatives, int) or hard_negatives < 0:
            raise ValueError(f"model.hard_negatives={hard_negatives!r}: a count of negatives per question (0: none).")
        if pairing == "cross" and hard_negatives < 1:
            raise ValueError("model=cross_encoder learns from negatives: set model.hard_negatives to 1 or more.")
        self.tokenizer = tokenizer
        self.files = {"train": train_file, "validation": validation_file}
        self.splits = {"train": train_split, "validation": validation_split}
        self.pairing = pairing
        self.hard_negatives = hard_negatives
        self.negative_pool = max(negative_pool, hard_negatives)
        self.eval_candidates = eval_candidates
        self.lengths = (query_max_length, passage_max_length, pair_max_length)
        self.index_title = index_title
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.limits = {"train": max_train_examples, "validation": max_eval_examples}
        self.cache_dir = cache_dir
        self.seed = seed
        self.miner: NegativeMiner | None = None
        self.evaluation_builder: EvaluationBuilder | None = None
        self.train_rows: list[dict[str, Any]] = []
        self.evaluation: RankingEvaluation | None = None
        self.eval_rows: list[list[dict[str, Any]]] = []

    # ------------------------------------------------------------------ the contract

    @classmethod
    def check_files(cls, settings: Mapping[str, Any], splits: Sequence[str]) -> None:
        """Read the training and validation files now: a bad record fails before the tokenizer is trained."""
        for split in ("train", "validation"):
            path = settings.get(f"{split}_file")
            if split in splits and path:
                load_mrc_examples(path, require_answers=False, split=settings.get(f"{split}_split"))

    def load_examples(self, split: str, require_answers: bool = False) -> list[MRCExample]:
        path = self.files.get(split)
        if not path:
            raise ValueError(f"the retriever's datamodule needs datamodule.{split}_file=... (an MRC file: a "
                             "question's passage is its context).")
        examples = load_mrc_examples(path, require_answers=require_answers, split=self.splits[split])
        limit = self.limits.get(split)
        return examples[:limit] if limit else examples

    def use_retrieval_data(self, miner: NegativeMiner, evaluation: EvaluationBuilder) -> None:
        """The hard-negative miner and the evaluation corpus builder (``tasks/retriever_data.py`` calls this)."""
        self.miner, self.evaluation_builder = miner, evaluation

    def ranking_evaluation(self, split: str = "validation") -> RankingEvaluation:
        """What the model is validated on (``core.contracts.RankingData``)."""
        if self.evaluation is None:
            raise RuntimeError("the datamodule is not set up for validation yet")
        return self.evaluation

    # ------------------------------------------------------------------ setup

    def text(self, title: str | None, body: str) -> str:
        return passage_text(title, body, self.index_title)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and not self.train_rows:
            self.train_rows = self._train_rows()
        if stage in (None, "fit", "validate") and self.evaluation is None and self.files["validation"]:
            self._setup_eval()

    def _train_rows(self) -> list[dict[str, Any]]:
        examples = self.load_examples("train")
        negatives: Mapping[str, Sequence[Mapping[str, Any]]] = {}
        if self.hard_negatives:
            if self.miner is None:
                raise ValueError("model.hard_negatives needs a miner (the task layer attaches it in main.py runs); "
                                 "set model.hard_negatives=0 for in-batch negatives only.")
            held = self.load_examples("validation") if self.files["validation"] else []
            negatives = self.miner(NegativesRequest(
                examples=examples, held_out=held, k=self.hard_negatives, pool=self.negative_pool, seed=self.seed,
                cache_dir=self.cache_dir, train_file=self.files["train"], train_split=self.splits["train"],
            ))
        rows, short = [], 0
        for index, example in enumerate(examples):
            texts = [self.text(example.get("title"), example["context"])]
            texts += [self.text(p.get("title"), str(p["text"])) for p in negatives.get(example["id"], ())]
            if len(texts) < 1 + self.hard_negatives:
                short += 1
                if len(texts) == 1:
                    continue  # nothing to fill with: the question trains on in-batch negatives elsewhere
                texts += [texts[-1]] * (1 + self.hard_negatives - len(texts))  # every question the same width
            rows.append({"index": index, "question": example["question"], "passages": texts,
                         "keys": [passage_key(t) for t in texts]})
        if short:
            log.warning("%d of %d training questions got fewer than %d hard negatives (repeated or left out)",
                        short, len(examples), self.hard_negatives)
        if not rows:
            raise ValueError(f"no training questions in {self.files['train']}.")
        return rows

    def _setup_eval(self) -> None:
        examples = self.load_examples("validation")
        if not examples:
            raise ValueError(f"no validation questions in {self.files['validation']}.")
        candidates = self.eval_candidates if self.pairing == "cross" else 0
        if self.evaluation_builder is not None:
            evaluation = self.evaluation_builder(EvaluationRequest(
                examples, candidates, self.files["validation"], self.splits["validation"]))
        elif candidates:
            raise ValueError("model=cross_encoder validates by re-ranking a retriever's candidates: run it through "
                             "main.py (the task layer attaches them).")
        else:
            evaluation = own_passages(examples)
        self.evaluation = evaluation
        if self.pairing == "biencoder":
            questions = [{"side": "q", "index": i, "text": ex["question"]} for i, ex in enumerate(examples)]
            passages = [{"side": "p", "index": i, "text": self.text(p.get("title"), p["text"])}
                        for i, p in enumerate(evaluation.passages)]
            self.eval_rows = [questions, passages]
        else:
            pairs = [{"index": q, "rank": rank, "question": examples[q]["question"],
                      "text": self.text(evaluation.passages[p].get("title"), evaluation.passages[p]["text"])}
                     for q, ranked in enumerate(evaluation.candidates or []) for rank, p in enumerate(ranked)]
            for number, pair in enumerate(pairs):
                pair["pair"] = number
            self.eval_rows = [pairs]

    # ------------------------------------------------------------------ loaders

    def collator(self) -> BiEncoderCollator | CrossCollator:
        query, passage, pair = self.lengths
        if self.pairing == "biencoder":
            return BiEncoderCollator(self.tokenizer, query, passage)
        return CrossCollator(self.tokenizer, pair)

    def train_dataloader(self) -> DataLoader:
        sampler = SeededShuffleSampler(len(self.train_rows), seed=self.seed)
        return DataLoader(_Rows(self.train_rows), batch_size=self.batch_size, sampler=sampler,
                          collate_fn=self.collator(), num_workers=self.num_workers)

    def val_dataloader(self) -> list[DataLoader]:
        size = self.eval_batch_size if self.pairing == "biencoder" else max(1, self.eval_batch_size // 2)
        return [DataLoader(_Rows(rows), batch_size=size, shuffle=False, collate_fn=self.collator(),
                           num_workers=self.num_workers) for rows in self.eval_rows]

    def eval_examples(self, split: str) -> Sequence[Mapping[str, Any]]:
        return self.load_examples(split)
