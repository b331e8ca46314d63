"""Registers ``hydra/sweeper=optuna_study``; the logic lives in :mod:`sweeps.optuna_study`.

Hydra instantiates sweepers only from classes defined under ``hydra_plugins``, hence this thin shim.
(No ``from __future__ import annotations`` and no dataclass: Hydra's plugin scan executes this module
before registering it in ``sys.modules``.)
"""

from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper

DEFAULTS: dict[str, Any] = {
    "_target_": "hydra_plugins.kornlp_sweepers.optuna_study_sweeper.OptunaStudySweeper",
    # maximize | minimize the job's return value (main.py returns metrics[optimized_metric])
    "direction": "maximize",
    # trials in the study, counting those of an earlier run and of every worker sharing it (0: only the
    # summary)
    "n_trials": 20,
    # None: "sweep"
    "study_name": None,
    # None: sqlite:///<hydra.sweep.dir>/optuna.db; a database URL (postgresql://...) or journal:<file> to
    # share it
    "storage": None,
    # an optuna.samplers class with _partial_: true (built per trial with seed + trial number), or None: TPE
    "sampler": None,
    "pruner": None,
    # {override key: Hydra sweep expression}, e.g. {"model.optimizer.lr": "tag(log, interval(1e-5, 1e-3))"}
    "params": {},
    # parameter sets to run first (a fresh study only)
    "enqueue_trials": [],
    # worker processes running trials at the same time (-1: one per GPU, or per CPU core without GPUs)
    "n_jobs": 1,
    # database storages: a running trial's heartbeat (seconds); a trial without one for grace_period is failed
    # (its worker died) and queued again
    "heartbeat_interval": 15,
    "grace_period": 60,
}
ConfigStore.instance().store(group="hydra/sweeper", name="optuna_study", node=DEFAULTS, provider="kornlp")


class OptunaStudySweeper(Sweeper):
    """Hydra's face of :class:`sweeps.optuna_study.OptunaStudy`."""

    def __init__(self, **kwargs: Any) -> None:
        from sweeps.optuna_study import OptunaStudy

        self.study = OptunaStudy(**kwargs)

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.study.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.study.sweep(arguments)
