"""Experiment loggers built from ``conf/logger``; W&B never blocks a run that has no network."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger


def wandb_api_key_available() -> bool:
    """A key in WANDB_API_KEY or in ~/.netrc (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def hydra_sweep() -> tuple[str, int] | None:
    """(sweep dir, job number) inside a Hydra multirun job, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(hydra.sweep.dir)
    if sweep_dir.is_absolute() and sweep_dir.is_relative_to(Path.cwd()):
        sweep_dir = sweep_dir.relative_to(Path.cwd())
    return sweep_dir.as_posix(), int(hydra.job.num)


def wandb_logger(
    offline: bool | None = None,
    name: str | None = None,
    group: str | None = None,
    **kwargs: Any,
) -> WandbLogger:
    """WandbLogger that goes offline (sync later with ``wandb sync``) when no API key is set.

    ``group`` defaults to the experiment name, or in a multirun (grid or Optuna) to the sweep dir, so one
    dashboard group holds every job of a sweep; each job's run is then named ``<name>-<job number>``.
    Keys are read from the environment only: never put them in configs.
    """
    if offline is None:
        offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_api_key_available()
    if offline:
        os.environ.setdefault("WANDB_MODE", "offline")
        # wandb keeps offline artifacts for `wandb sync`; Lightning refuses log_model with offline=True only
        # because it cannot upload now, so checkpoints go through wandb's own offline mode instead.
        kwargs["mode"] = "offline"
    sweep = hydra_sweep()
    if group is None:
        group = sweep[0] if sweep else name
    if sweep and name:
        name = f"{name}-{sweep[1]}"
    offline_flag = offline and not kwargs.get("log_model")
    return WandbLogger(offline=offline_flag, name=name, group=group, **kwargs)
