"""Process facts every layer asks: am I rank 0, is this a Hydra multirun, close the W&B run."""

from __future__ import annotations

import os
import sys


def is_rank_zero() -> bool:
    """Under DDP Lightning re-runs this script once per process; only rank 0 writes run files."""
    rank_zero = sys.modules.get("lightning.fabric.utilities.rank_zero")
    if rank_zero is not None:
        return rank_zero.rank_zero_only.rank == 0
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):  # Lightning's order, before import
        if key in os.environ:
            return int(os.environ[key]) == 0
    return True


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def finish_wandb() -> None:
    """Each multirun job must close its W&B run, or the next job logs into it."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
