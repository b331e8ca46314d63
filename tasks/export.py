"""``task=export``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from tasks.build import (
    build_run,
    checkpoint_arg,
    verify_checkpoint,
)
from tasks.outputs import (
    hf_export,
)

log = logging.getLogger(__name__)


def task_export(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """A checkpoint as a ``save_pretrained`` directory (``<run>/<export.dir>/``): model, tokenizer, label map."""
    ckpt = checkpoint_arg(cfg, "the checkpoint to export (e.g. outputs/.../checkpoints/last.ckpt)")
    run = build_run(cfg)
    verify_checkpoint(ckpt, run)
    from models.export import load_weights

    load_weights(run["model"], ckpt)
    return {**hf_export(cfg, run["model"], output_dir, str(ckpt)), "checkpoint": str(ckpt)}
