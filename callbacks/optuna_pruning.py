"""Optuna pruning as a Lightning callback, and the trial the running job belongs to.

The sweep driver (sweeps/optuna_study.py) sets the active trial around each job it runs in this process;
:class:`OptunaPruning` reports to it. Outside an Optuna sweep there is no active trial and the callback does nothing.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

_active_trial: Any = None  # the trial whose job runs now (Hydra's basic launcher runs jobs in this process)


def active_trial() -> Any:
    """The Optuna trial of the job running in this process, or None outside an Optuna sweep."""
    return _active_trial


def set_active_trial(trial: Any) -> None:
    """Called by the sweep driver before (the trial) and after (None) each job."""
    global _active_trial
    _active_trial = trial


class OptunaPruning(Callback):
    """Reports ``monitor`` to the running Optuna trial after each validation of ``fit``; the pruner may stop it.

    Step n is the trial's n-th validation, so trials with different batch sizes compare like with like. Outside
    an Optuna sweep (no active trial) it does nothing.
    """

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.validations = 0

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.validations = 0

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        import optuna

        trial = active_trial()
        if trial is None or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise ValueError(
                f"OptunaPruning monitors {self.monitor!r}, which was not logged; logged: {sorted(trainer.callback_metrics)}."
            )
        step = self.validations
        self.validations += 1
        trial.report(float(value), step=step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"{self.monitor}={float(value):.4f} at validation {step}")
