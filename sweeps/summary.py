"""``sweep_summary.json``: the study as one file, rebuilt from the storage alone.

Each worker writes its trials' run dirs on its own machine; the storage holds what the summary needs of every
trial (params, state, value, the job's ``metrics.json`` as a user attribute, where it ran), so any worker, or
``task=sweep_summary`` anywhere, writes the whole study's summary.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.files import write_json

SUMMARY_FILE = "sweep_summary.json"


def trial_overrides(params: Mapping[str, Any]) -> list[str]:
    """Optuna params -> Hydra overrides (categorical values are already Hydra-encoded strings)."""
    return [
        f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}" for key, value in params.items()
    ]


def retry_of(trial: Any) -> int | None:
    """The interrupted trial that ``trial`` re-runs (Optuna's retry callback records it), else None."""
    history = trial.system_attrs.get("retry_history") or []
    return history[-1] if history else None


def counted(trials: Sequence[Any]) -> int:
    """Trials that count towards ``n_trials``: started or finished, except those interrupted and retried."""
    from optuna.trial import TrialState

    retried = {retry_of(t) for t in trials}
    return sum(t.state != TrialState.WAITING and t.number not in retried for t in trials)


def _metrics(trial: Any) -> dict[str, Any] | None:
    """The job's metrics.json: from the storage (any machine), else from its run dir (studies of older
    sweeps)."""
    if trial.user_attrs.get("metrics") is not None:
        return trial.user_attrs["metrics"]
    output_dir = trial.user_attrs.get("output_dir")
    path = Path(output_dir) / "metrics.json" if output_dir else None
    if path is None or not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _error(trial: Any, retried_by: int | None) -> str | None:
    from optuna.trial import TrialState

    if trial.user_attrs.get("error") or trial.state != TrialState.FAIL:
        return trial.user_attrs.get("error")
    if retried_by is not None:  # failed by Optuna's heartbeat check: the worker could not say why
        return f"interrupted (its worker stopped sending heartbeats): retried as trial {retried_by}"
    return "interrupted: the sweep stopped during this trial"


def _worker(trial: Any) -> str | None:
    worker = trial.user_attrs.get("worker")
    return f"{worker['host']}:{worker['pid']}" if worker else None


def write_summary(study: Any, path: Path, optimized_metric: str | None, storage: str) -> dict[str, Any]:
    """Every trial's params, state, value, metrics and error, plus the best trial, as one JSON file."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried_by = {retry_of(t): t.number for t in trials if retry_of(t) is not None}
    rows = []
    for trial in trials:
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "retry_of": retry_of(trial),
                "retried_by": retried_by.get(trial.number),
                "params": trial.params,
                "overrides": trial_overrides(trial.params),
                "value": trial.value,
                "metrics": _metrics(trial),
                "error": _error(trial, retried_by.get(trial.number)),
                "intermediate_values": {str(step): v for step, v in trial.intermediate_values.items()},
                # the run dir is on the worker's machine (host:pid)
                "worker": _worker(trial),
                "output_dir": trial.user_attrs.get("output_dir"),
                "duration_seconds": trial.duration.total_seconds() if trial.duration else None,
                "started": trial.datetime_start.isoformat() if trial.datetime_start else None,
                "finished": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
            }
        )
    best = study.best_trial if any(t.state == TrialState.COMPLETE for t in trials) else None
    summary = {
        "study_name": study.study_name,
        "storage": storage,
        "direction": study.direction.name.lower(),
        "optimized_metric": optimized_metric,
        "n_trials": len(trials),
        "states": dict(Counter(t.state.name for t in trials)),
        "interrupted": sorted(retried_by),
        "workers": sorted({w for w in map(_worker, trials) if w}),
        "best_trial": best.number if best else None,
        "best_value": best.value if best else None,
        "best_params": best.params if best else None,
        "best_overrides": trial_overrides(best.params) if best else None,
        "trials": rows,
    }
    write_json(path, summary)
    return summary
