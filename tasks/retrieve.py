"""``task=retrieve``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger(__name__)


def task_retrieve(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Index ``retriever.corpus_file`` (or the validation contexts) and retrieve for every question."""
    from retrievals.task import run_retrieve

    return run_retrieve(
        cfg.retriever,
        cfg.datamodule.get("validation_file"),
        output_dir,
        validation_split=cfg.datamodule.get("validation_split"),
    )
