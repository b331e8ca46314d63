"""Sentence and sentence-pair regression (KLUE-STS's 0-5 similarity): one real-valued label per record.

Everything but the label is the classification datamodule's (files, text fields, ids, K-fold, augmentation,
curriculum): ``label_field`` (a dotted path such as ``labels.real-label``) must hold a number (a JSON
number or numeric text, as CSV cells are), and there is no label map. K-fold stratifies on ``fold_bins``
equal-count bins of the label, so every fold spans the whole range of scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.errors import DataFormatError
from datamodules.classification import ClassificationDataModule, ClassificationExample


def real_label(value: Any, src: Path | str, record: str, field: str) -> float:
    """A label value as a finite float; anything else is an error naming the record and the fix."""
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise DataFormatError(
            src, record, f"{field}={value!r} is not a number",
            "give every record a real-valued score there (KLUE-STS: datamodule.label_field=labels.real-label); "
            "to predict classes instead use model=classifier datamodule=classification",
        )
    return number


class RegressionDataModule(ClassificationDataModule):
    """Records with a real-valued label -> tokenised (pairs of) texts with a float ``labels`` column (NaN: none)."""

    def __init__(self, tokenizer: Any, fold_bins: int = 10, **kwargs: Any) -> None:
        if not isinstance(fold_bins, int) or fold_bins < 1:
            raise ValueError(f"datamodule.fold_bins={fold_bins!r}: give a positive number of label bins.")
        self.fold_bins = fold_bins
        super().__init__(tokenizer, **kwargs)

    def model_arguments(self) -> dict[str, Any]:
        """Nothing: the regressor has one output whatever the data."""
        return {}

    def _resolve_labels(self, label_map: Any) -> list[str]:
        if label_map is not None:
            raise ValueError(f"datamodule.label_map={label_map!r}: real-valued labels have no classes; leave it null.")
        return []

    def label_value(self, value: Any, src: Path, record: str, class_names: Sequence[str] | None) -> float:
        """A record's label value as a number."""
        return real_label(value, src, record, self.label_field)

    def check_labels(self, examples: Sequence[ClassificationExample], split: str) -> None:
        """Every label was checked to be a number when it was read."""

    def test_examples(self) -> list[ClassificationExample]:
        """The test records, with their scores as gold where they have one."""
        return self.load("test", labels="optional")

    def strata(self, examples: Sequence[ClassificationExample]) -> list[str]:
        """Equal-count bins of the label (by rank): each fold gets its share of low, middle and high scores."""
        order = sorted(range(len(examples)), key=lambda i: float(examples[i]["label"]))  # type: ignore[arg-type]
        bins = [""] * len(examples)
        for rank, i in enumerate(order):
            bins[i] = str(rank * self.fold_bins // len(examples))
        return bins

    def target(self, example: ClassificationExample) -> float:
        """The score; NaN where there is none (test records)."""
        return float(example["label"]) if example["label"] is not None else math.nan
