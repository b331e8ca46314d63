"""Experiment loggers built from ``conf/logger``; W&B never blocks a run that has no network."""

from __future__ import annotations

import netrc
import os
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


def wandb_logger(offline: bool | None = None, **kwargs: Any) -> WandbLogger:
    """WandbLogger that goes offline (sync later with ``wandb sync``) when no API key is set.

    Keys are read from the environment only: never put them in configs.
    """
    if offline is None:
        offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_api_key_available()
    if offline:
        os.environ.setdefault("WANDB_MODE", "offline")
    return WandbLogger(offline=offline, **kwargs)
