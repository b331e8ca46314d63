"""The typed contracts between the layers: what the task verbs read from a LightningModule and a
LightningDataModule, and what a module reads from its datamodule during evaluation.

These are Protocols so a user's own class only has to provide the members (``docs/extending.md``);
``models.base.TaskModule`` and ``datamodules.base.TaskDataModule`` implement them with defaults, and
the task verbs check for those bases once, when the run is built (``tasks/build.py``), instead of
probing attributes one by one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


class TaskModel(Protocol):
    """What ``task=fit | validate | predict | odqa | export`` read from a LightningModule.

    ``last_predictions`` holds the predictions of the last validation / prediction loop
    (``{id: answer}`` for a reader or generator, one record per example for a classifier), or None for a
    module that predicts nothing a user reads (a masked LM): then no ``predictions.json`` is written.
    ``last_nbest`` is a reader's n-best spans per question (``nbest_predictions.json``), else None.
    """

    last_predictions: dict[str, Any] | list[dict[str, Any]] | None
    last_nbest: dict[str, list[dict[str, Any]]] | None

    def export_artifacts(self, output_dir: Path) -> dict[str, Any]:
        """Write what the module makes besides checkpoints (a TAPT ``mlm_backbone/``, a LoRA ``merged/``)
        from its current weights; return ``{metrics key: path}`` (empty when there is nothing)."""
        ...

    def export_blocker(self) -> str | None:
        """Why ``<run>/hf_model/`` (a ``save_pretrained`` export) cannot be written, or None when it can."""
        ...


class TaskData(Protocol):
    """What the task verbs read from a LightningDataModule."""

    @classmethod
    def check_files(cls, settings: Mapping[str, Any], splits: Sequence[str]) -> None:
        """Read and validate the files of ``splits`` from the datamodule's config node before anything slow
        (tokenizer training, model download) runs: a bad record fails in a second. May do nothing."""
        ...

    def model_arguments(self) -> dict[str, Any]:
        """What the model's constructor needs from the data (a classifier's label names); may be empty."""
        ...

    def load_examples(self, split: str, require_answers: bool) -> Sequence[Mapping[str, Any]]:
        """The validated records of ``split`` (``train | validation | test``) as the datamodule reads them."""
        ...

    def provide_examples(self, split: str, examples: Sequence[Mapping[str, Any]]) -> None:
        """Use ``examples`` for ``split`` instead of a file (ODQA hands the retrieved passages to the reader's
        datamodule). A datamodule that cannot take records raises a ValueError saying so."""
        ...


@runtime_checkable
class EvaluationData(Protocol):
    """What a module reads from ``trainer.datamodule`` to turn its outputs into predictions and scores."""

    def eval_examples(self, split: str) -> Sequence[Mapping[str, Any]]:
        """The examples of ``validation`` or ``test``, in the order their features were built."""
        ...


@runtime_checkable
class SpanEvaluationData(Protocol):
    """What the extractive reader reads from ``trainer.datamodule``: the eval windows of a split.

    ``eval_set(split)`` gives an object with ``examples``, ``examples_by_id``, ``example_index`` (the example of
    each feature) and ``offset_mapping`` (each feature's token offsets, None outside the context), built once
    per split so that span decoding never re-tokenises.
    """

    def eval_set(self, split: str) -> Any:
        """The examples and windows of ``validation`` or ``test``."""
        ...


@runtime_checkable
class ClassStatistics(Protocol):
    """What a classifier reads from its datamodule to weigh the classes (``model.loss.alpha=balanced``)."""

    class_counts: Sequence[int]
    """Training examples per class, in label-map order (empty until the training data is read)."""


@runtime_checkable
class TypeConstraints(Protocol):
    """What a relation classifier reads for ``model.type_constraint``: the relations allowed per example."""

    def allowed_labels(self, split: str) -> Sequence[Sequence[bool]]:
        """Per example of ``split``, per class: may the relation hold between its subject and object types."""
        ...


@runtime_checkable
class RankingData(Protocol):
    """What a trained retriever or reranker reads from ``trainer.datamodule`` to score its validation: the corpus
    searched, each question's gold passages and (for a reranker) the first-stage candidates
    (``core.ranking.RankingEvaluation``)."""

    def ranking_evaluation(self, split: str) -> Any:
        """The ``RankingEvaluation`` of ``split`` (``validation``)."""
        ...
