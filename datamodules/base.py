"""The base of every project datamodule: the members the task verbs and the modules read (``core.contracts``).

:class:`TaskDataModule` implements :class:`core.contracts.TaskData` and :class:`core.contracts.EvaluationData`
with defaults, so a datamodule only overrides what it has:

* ``check_files(settings, splits)`` (classmethod): read and validate the files of ``splits`` from the
  datamodule's config node before anything slow runs (``tasks/build.py`` ``preflight``); default: nothing.
* ``model_arguments()``: what the model's constructor needs from the data (a classifier's labels); default ``{}``.
* ``load_examples(split, require_answers)``: the validated records of a split.
* ``provide_examples(split, examples)``: take records instead of a file (open-domain QA); default: a ValueError.
* ``eval_examples(split)``: the evaluation examples, in the order their features were built.

A difficulty score that needs a model or a retriever (``curriculum.difficulty=loss | bm25``) is not computed
here: the task step ``tasks/difficulty.py`` injects a scorer (:attr:`difficulty_scorer`), which the datamodule
calls with a :class:`datamodules.curriculum.DifficultyRequest`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch import LightningDataModule

from datamodules.curriculum import DifficultyScorer

__all__ = ["TaskDataModule"]


class TaskDataModule(LightningDataModule):
    """A LightningDataModule with the project's contracts (``core.contracts.TaskData``, ``EvaluationData``)."""

    # Computes the expensive difficulties (teacher loss, BM25); injected by tasks/difficulty.py, None until then.
    difficulty_scorer: DifficultyScorer | None = None

    @classmethod
    def check_files(cls, settings: Mapping[str, Any], splits: Sequence[str]) -> None:
        """Validate the files of ``splits`` named in the config node ``settings`` before anything slow runs.

        The default checks nothing: the datamodule reads its files in ``setup``."""
        return None

    def model_arguments(self) -> dict[str, Any]:
        """What the model's constructor needs from the data; none by default."""
        return {}

    def load_examples(self, split: str, require_answers: bool) -> Sequence[Mapping[str, Any]]:
        """The validated records of ``split`` (``train | validation | test``)."""
        raise NotImplementedError(f"{type(self).__name__} does not load examples by split")

    def provide_examples(self, split: str, examples: Sequence[Mapping[str, Any]]) -> None:
        """Use ``examples`` for ``split`` instead of a file; this datamodule cannot."""
        raise ValueError(
            f"{type(self).__name__} cannot take records for the {split} split: it reads its files "
            "(give the data as datamodule.<split>_file)."
        )

    def eval_examples(self, split: str) -> Sequence[Mapping[str, Any]]:
        """The examples of ``validation`` or ``test``, in the order their features were built."""
        raise NotImplementedError(f"{type(self).__name__} has no evaluation examples")

    def use_difficulty_scorer(self, scorer: DifficultyScorer) -> None:
        """Compute the expensive difficulty scores with ``scorer`` (``tasks/difficulty.py`` calls this)."""
        self.difficulty_scorer = scorer
