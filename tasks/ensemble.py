"""``task=ensemble``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tasks.outputs import (
    metric_name,
)

log = logging.getLogger(__name__)


def task_ensemble(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Vote several classifier runs (soft: class probabilities) or reader runs (hard or soft: answers, n-best
    spans) from run dirs or a sweep dir into predictions.json; the kind is read from the runs' outputs."""
    from models.ensemble import run_ensemble

    return run_ensemble(OmegaConf.to_container(cfg.ensemble, resolve=True), output_dir, metric_name(cfg))
