"""``task=`` name -> verb. A verb takes the composed config and its run dir and returns the run's metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from tasks.ensemble import task_ensemble
from tasks.export import task_export
from tasks.fit import task_fit
from tasks.odqa import task_odqa
from tasks.predict import task_predict
from tasks.retrieve import task_retrieve
from tasks.score import task_score
from tasks.sweep_summary import task_sweep_summary
from tasks.validate import task_validate

TaskVerb = Callable[[DictConfig, Path], dict[str, Any]]

TASKS: dict[str, TaskVerb] = {
    "fit": task_fit,
    "validate": task_validate,
    "predict": task_predict,
    "score": task_score,
    "ensemble": task_ensemble,
    "retrieve": task_retrieve,
    "odqa": task_odqa,
    "export": task_export,
    "sweep_summary": task_sweep_summary,
}
