"""``task=`` name -> verb. A verb takes the composed config and its run dir and returns the run's metrics.

Each verb's module is imported when its task runs, not when the registry is: ``task=retrieve`` and
``task=score`` need neither torch nor Lightning, and importing every verb up front cost them ~250 MB of RSS
and seconds of start-up (``bench/memory.py``'s ``main.py task=retrieve`` row).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

TaskVerb = Callable[[DictConfig, Path], dict[str, Any]]

# name -> "module:function"
VERB_PATHS: dict[str, str] = {
    "fit": "tasks.fit:task_fit",
    "validate": "tasks.validate:task_validate",
    "predict": "tasks.predict:task_predict",
    "score": "tasks.score:task_score",
    "ensemble": "tasks.ensemble:task_ensemble",
    "retrieve": "tasks.retrieve:task_retrieve",
    "odqa": "tasks.odqa:task_odqa",
    "export": "tasks.export:task_export",
    "sweep_summary": "tasks.sweep_summary:task_sweep_summary",
}


class VerbRegistry(Mapping[str, TaskVerb]):
    """A read-only mapping of task names to verbs that imports a verb's module on first lookup."""

    def __init__(self, paths: Mapping[str, str]) -> None:
        self._paths = dict(paths)

    def __getitem__(self, name: str) -> TaskVerb:
        module, function = self._paths[name].split(":")
        verb: TaskVerb = getattr(importlib.import_module(module), function)
        return verb

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


TASKS: Mapping[str, TaskVerb] = VerbRegistry(VERB_PATHS)
