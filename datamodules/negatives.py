"""Training a reader for many passages: retrieved negatives and whole-question batches.

A reader that only ever saw each question with its own passage has no reason to score a distractor low, so
open-domain QA over ``top_k`` passages gets *worse* as ``k`` grows. Two remedies from the literature, both
configuration of the MRC datamodule (``conf/experiment/odqa_reader.yaml``):

* ``negative_passages: K`` adds, per training question, K retrieved passages that do not hold its answer as
  no-answer examples (target: the CLS token), so the reader learns a passage-level "no answer here" score.
  Which passages is the business of the task layer (a retriever over a corpus): the datamodule hands a
  :class:`NegativesRequest` to the injected :data:`NegativeMiner` (``tasks/negatives.py``) and gets, per
  question id, the passages to use.
* ``group_windows: true`` batches *questions*, not windows: every window of a question (its own passage's and
  its negatives') lands in one batch with a ``question_group`` id, which a reader with ``shared_norm`` needs to
  normalise span scores over all of them together (Clark & Gardner 2018; Wang et al. 2019).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from core.records import MRCExample

__all__ = [
    "NEGATIVE_MARK",
    "NegativeMiner",
    "NegativesRequest",
    "QuestionGroups",
    "QuestionGroupCollator",
    "negative_examples",
]

NEGATIVE_MARK = "#neg"  # a negative example's id: <question id>#neg<j>


@dataclass(frozen=True)
class NegativesRequest:
    """What the datamodule asks the miner for: ``k`` negatives per training question, drawn (with ``seed``) from
    the ``pool`` best-ranked passages that are neither the question's own, nor hold one of its answers, nor
    belong to a ``held_out`` question (the validation questions: their passages must stay unseen)."""

    examples: Sequence[MRCExample]
    held_out: Sequence[MRCExample]
    k: int
    pool: int
    seed: int
    cache_dir: str | None
    train_file: str | None
    train_split: str | None = None


# (request) -> {training question id: [{"id", "title", "text", "document_id"}, ...]} (k each, fewer if the
# corpus has fewer); injected by tasks/negatives.py.
NegativeMiner = Callable[[NegativesRequest], Mapping[str, Sequence[Mapping[str, Any]]]]


def negative_examples(
    examples: Sequence[MRCExample], negatives: Mapping[str, Sequence[Mapping[str, Any]]]
) -> tuple[list[MRCExample], list[int]]:
    """No-answer MRC examples from the mined passages, and for each the index of its question in ``examples``."""
    out: list[MRCExample] = []
    owners: list[int] = []
    for index, example in enumerate(examples):
        for j, passage in enumerate(negatives.get(example["id"], ())):
            out.append(
                {
                    "id": f"{example['id']}{NEGATIVE_MARK}{j}",
                    "title": str(passage.get("title") or ""),
                    "context": str(passage["text"]),
                    "question": example["question"],
                    "answers": [],
                    "document_id": passage.get("document_id"),
                }
            )
            owners.append(index)
    return out, owners


class QuestionGroups(Dataset):
    """One item per training question: all of its windows (feature rows of ``features``), in feature order."""

    def __init__(self, features: Dataset, question_of_feature: Sequence[int]) -> None:
        self.features = features
        groups: dict[int, list[int]] = {}
        for row, question in enumerate(question_of_feature):
            groups.setdefault(question, []).append(row)
        self.questions = sorted(groups)
        self.rows = [groups[q] for q in self.questions]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> list[dict[str, Any]]:
        return [self.features[row] for row in self.rows[index]]

    def lengths(self) -> list[int]:
        """Tokens of each question's windows together (for length-grouped batches)."""
        return [sum(len(self.features[row]["input_ids"]) for row in rows) for rows in self.rows]


@dataclass
class QuestionGroupCollator:
    """Flatten a batch of questions into one batch of windows, each tagged with its question's ``question_group``
    (0..len(groups)-1 within the batch); picklable for DataLoader workers."""

    collate: Callable[[list[Mapping[str, Any]]], dict[str, torch.Tensor]]

    def __call__(self, groups: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, torch.Tensor]:
        rows = [row for group in groups for row in group]
        batch = self.collate(rows)
        batch["question_group"] = torch.tensor([g for g, group in enumerate(groups) for _ in group], dtype=torch.long)
        return batch
