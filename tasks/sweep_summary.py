"""``task=sweep_summary``: the summary of an Optuna study, rebuilt from its storage alone.

The study belongs to the sweep layer (``sweeps/``, the Optuna sweeper), which tasks do not import; so the task
is carried out by the sweeper: the sweep's own command with ``task=sweep_summary`` runs no trial and rewrites
``<sweep dir>/sweep_summary.json`` from the storage, every worker's trials included. Run alone (no
``hparams_search=optuna``) there is no study to read, and this verb says how to name one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def task_sweep_summary(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    raise ValueError(
        "task=sweep_summary reads an Optuna study: add hparams_search=optuna and the sweep's storage and "
        "study "
        "name, e.g. python main.py task=sweep_summary hparams_search=optuna +experiment=mrc_curriculum "
        "hydra.sweeper.storage=postgresql://user@host/db hydra.sweeper.study_name=team (docs/tuning.md)."
    )
