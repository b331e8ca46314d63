"""``task=predict``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from tasks.build import (
    build_run,
    checkpoint_arg,
    preflight,
    require,
    verify_checkpoint,
)
from tasks.outputs import (
    save_predictions,
)

log = logging.getLogger(__name__)


def task_predict(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    ckpt = checkpoint_arg(cfg, "the checkpoint that makes the predictions")
    require(cfg, "datamodule.test_file", "the questions to answer (gold answers are not needed)")
    preflight(cfg, "test")
    run = build_run(cfg)
    verify_checkpoint(ckpt, run)
    run["trainer"].predict(
        run["model"], datamodule=run["datamodule"], ckpt_path=ckpt, return_predictions=False, weights_only=True
    )
    save_predictions(run, output_dir)
    return {"predicted_questions": len(run["model"].last_predictions), "checkpoint": str(ckpt)}
