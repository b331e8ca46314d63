"""``task=validate``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from tasks.build import (
    build_run,
    checkpoint_arg,
    eval_metrics,
    preflight,
    verify_checkpoint,
)
from tasks.outputs import (
    metric_name,
    reader_metric,
    save_predictions,
)

log = logging.getLogger(__name__)


def task_validate(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    ckpt = checkpoint_arg(cfg, "the checkpoint to evaluate (e.g. outputs/.../checkpoints/last.ckpt)")
    preflight(cfg, "validation")
    metric_name(cfg)
    run = build_run(cfg)
    verify_checkpoint(ckpt, run)
    results = run["trainer"].validate(
        run["model"], datamodule=run["datamodule"], ckpt_path=ckpt, verbose=False, weights_only=True
    )
    save_predictions(run, output_dir)
    return {**eval_metrics(results), **reader_metric(cfg, run), "checkpoint": str(ckpt)}
