"""Between Hydra jobs and Optuna trials: the search space from Hydra's sweep grammar, a trial as overrides, a
finished job as the trial's state and value."""

from __future__ import annotations

import math
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweeps.summary import trial_overrides


def _override_prefix(override: Any) -> str:
    return {"ADD": "+", "FORCE_ADD": "++"}.get(override.type.name, "")


def search_space(arguments: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Hydra override strings -> (Optuna distributions keyed by override key, fixed overrides).

    A later argument for the same key replaces an earlier one, so the command line beats the config.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep, Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        key = _override_prefix(override) + override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if not override.is_sweep_override():
            fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
            continue
        value = override.value()
        if isinstance(value, IntervalSweep):  # Hydra parses interval bounds as floats: tag(int, ...) for ints
            log_scale = "log" in value.tags
            if "int" in value.tags:
                space[key] = IntDistribution(int(value.start), int(value.end), log=log_scale)
            else:
                space[key] = FloatDistribution(float(value.start), float(value.end), log=log_scale)
        else:  # choice(...), a,b,c and range(...): the values Hydra would enumerate, as categories
            choices = list(override.sweep_iterator(transformer=Transformer.encode))
            if not choices:
                raise ValueError(f"hparams_search: {override.input_line!r} sweeps over no values.")
            space[key] = CategoricalDistribution(choices)
    return space, list(fixed.values())


def trial_config(study_name: str, trial: Any) -> str:
    """The override that puts the trial's number, study and parameters into its job's config: W&B's run
    config, so a team's dashboard compares the trials of a study run on several machines."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    params = ",".join(
        f"{key.lstrip('+~')}:{override.split('=', 1)[1]}"
        for key, override in zip(trial.params, trial_overrides(trial.params), strict=True)
    )
    name = study_name.replace("\\", "\\\\").replace("'", "\\'")
    override = f"++hparams_search.trial={{number:{trial.number},study:'{name}',params:{{{params}}}}}"
    # a parameter name Hydra's dict grammar cannot hold must not fail the trial: then number and study only
    try:
        OverridesParser.create().parse_overrides([override])
    except OverrideParseException:
        override = f"++hparams_search.trial={{number:{trial.number},study:'{name}'}}"
    return override


def job_outcome(ret: Any, metric: str | None) -> tuple[Any, float | None, str | None]:
    """(state, value, error message) of one finished Hydra job."""
    from hydra.core.utils import JobStatus
    from optuna import TrialPruned
    from optuna.trial import TrialState

    if ret.status == JobStatus.FAILED:
        try:
            ret.return_value  # noqa: B018  (JobReturn re-raises the job's exception here)
        except TrialPruned as exc:
            return TrialState.PRUNED, None, f"pruned: {exc}"
        except Exception as exc:  # noqa: BLE001  (any error of a trial is recorded, the sweep goes on)
            output_dir = ret.hydra_cfg.hydra.runtime.output_dir if ret.hydra_cfg else None
            if output_dir:
                text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                Path(output_dir, "error.txt").write_text(text, encoding="utf-8")
            return TrialState.FAIL, None, f"{type(exc).__name__}: {exc}"
    value = ret.return_value
    try:
        value = float(value)
    except (TypeError, ValueError):
        return (
            TrialState.FAIL,
            None,
            (
                f"the job returned {value!r}, not a number: is optimized_metric={metric!r} a key of metrics.json?"
            ),
        )
    if not math.isfinite(value):
        return TrialState.FAIL, None, f"{metric}={value} is not finite"
    return TrialState.COMPLETE, value, None
