"""The one contract between the fit verb and the callbacks that measure a run.

A callback that subclasses :class:`RunMetricsCallback` adds its numbers to ``metrics.json`` after ``task=fit``
(tasks/fit.py collects them); a user's own measuring callback does the same by subclassing it.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from lightning.pytorch import Callback


class RunMetricsCallback(Callback):
    """A Lightning callback with run-level numbers for metrics.json."""

    @abstractmethod
    def run_metrics(self) -> dict[str, Any]:
        """``{metrics.json key: JSON value}`` measured over the run."""
