"""Optuna hyper-parameter search as a Hydra sweeper: ``python main.py hparams_search=optuna``.

Why not hydra-optuna-sweeper: its newest release (1.3.0) pins ``optuna<3`` (pip downgrades Optuna to 2.10),
and Optuna 2.10's SQLite storage fails on SQLAlchemy 2 (``assert version is not None``), so a study can be
neither stored nor resumed, and it cannot prune. This sweeper keeps Hydra's launcher and job directories
(``<sweep dir>/<trial number>/`` with ``metrics.json``, ``.hydra/``, ``main.log``) and drives current Optuna
with ask/tell:

* the study lives in SQLite under the sweep dir (``optuna.db``; ``hparams_search=optuna`` makes that dir
  ``multirun/<run_name>/optuna/<hparams_search.study>``, without a time stamp): the same command resumes it.
  ``n_trials`` counts the trials the study already has; a trial left running by a crash, kill or Ctrl-C is
  marked FAIL ("interrupted") and retried with the same parameters (Optuna's
  ``RetryHeartbeatStaleTrialCallback``), and does not count;
* ``n_jobs`` > 1 forks worker processes that share the study through SQLite (Optuna's documented way to
  parallelise), each running its trials in-process, one GPU each when there are several;
* the search space uses Hydra's sweep grammar (``interval``, ``tag(log, interval(...))``, ``tag(int, ...)``,
  ``choice``, ``range``, ``a,b,c``), from ``hydra.sweeper.params`` and from sweep overrides on the command
  line;
* a trial that raises is recorded as FAIL with its message (and ``error.txt`` in its job dir) and the sweep
  goes on; :class:`callbacks.optuna_pruning.OptunaPruning` reports each validation to the pruner, a pruned trial is PRUNED;
* ``sweep_summary.json`` in the sweep dir is rewritten after every trial.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import sys
import traceback
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from callbacks.optuna_pruning import set_active_trial
from core.files import write_json

log = logging.getLogger(__name__)

SUMMARY_FILE = "sweep_summary.json"


# ----------------------------------------------------------------------------- search space


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


def trial_overrides(params: Mapping[str, Any]) -> list[str]:
    """Optuna params -> Hydra overrides (categorical values are already Hydra-encoded strings)."""
    return [f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}" for key, value in params.items()]


# ----------------------------------------------------------------------------- summary


def _read_metrics(output_dir: str | None) -> dict[str, Any] | None:
    import json

    path = Path(output_dir) / "metrics.json" if output_dir else None
    if path is None or not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_summary(study: Any, path: Path, optimized_metric: str | None, storage: str) -> dict[str, Any]:
    """Every trial's params, state, value, metrics and error, plus the best trial, as one JSON file."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried_by = {retry_of(t): t.number for t in trials if retry_of(t) is not None}
    rows = []
    for trial in trials:
        output_dir = trial.user_attrs.get("output_dir")
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "retry_of": retry_of(trial),
                "retried_by": retried_by.get(trial.number),
                "params": trial.params,
                "overrides": trial_overrides(trial.params),
                "value": trial.value,
                "metrics": _read_metrics(output_dir),
                "error": trial.user_attrs.get("error")
                or ("interrupted: the sweep stopped during this trial" if trial.state == TrialState.FAIL else None),
                "intermediate_values": {str(step): v for step, v in trial.intermediate_values.items()},
                "output_dir": output_dir,
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
        "best_trial": best.number if best else None,
        "best_value": best.value if best else None,
        "best_params": best.params if best else None,
        "best_overrides": trial_overrides(best.params) if best else None,
        "trials": rows,
    }
    write_json(path, summary)
    return summary


def retry_of(trial: Any) -> int | None:
    """The interrupted trial that ``trial`` re-runs (Optuna's retry callback records it), else None."""
    history = trial.system_attrs.get("retry_history") or []
    return history[-1] if history else None


def counted(trials: Sequence[Any]) -> int:
    """Trials that count towards ``n_trials``: started or finished, except those interrupted and retried."""
    from optuna.trial import TrialState

    retried = {retry_of(t) for t in trials}
    return sum(t.state != TrialState.WAITING and t.number not in retried for t in trials)


def resolve_n_jobs(n_jobs: int) -> int:
    """``hparams_search.n_jobs``: -1 is one worker per GPU, or per CPU core without GPUs; never more than cores."""
    cores = os.cpu_count() or 1
    if n_jobs == -1:
        return visible_gpus() or cores
    if n_jobs < 1:
        raise ValueError(f"hparams_search.n_jobs={n_jobs}: use a positive number of workers, or -1 (one per device).")
    if n_jobs > cores:
        log.warning("hparams_search.n_jobs=%d but this machine has %d CPU cores: using %d workers", n_jobs, cores, cores)
    return min(n_jobs, cores)


def visible_gpus() -> int:
    """CUDA devices this process may use. ``device_count`` asks NVML and leaves CUDA uninitialised, so the
    workers can still fork (``torch.cuda.is_available`` may initialise it)."""
    import torch

    return torch.cuda.device_count()


# ----------------------------------------------------------------------------- the sweep


class OptunaStudy:
    """Ask Optuna for a trial, run it as a Hydra job, tell Optuna the job's return value; repeat."""

    def __init__(
        self,
        direction: str = "maximize",
        n_trials: int = 20,
        study_name: str | None = None,
        storage: str | None = None,
        sampler: Any = None,
        pruner: Any = None,
        params: Mapping[str, Any] | None = None,
        enqueue_trials: Iterable[Mapping[str, Any]] | None = None,
        n_jobs: int = 1,
    ) -> None:
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"hydra.sweeper.direction={direction!r}: use maximize or minimize.")
        if int(n_trials) < 1:
            raise ValueError(f"hydra.sweeper.n_trials={n_trials}: run at least one trial.")
        self.direction = direction
        self.n_trials = int(n_trials)
        self.study_name = study_name
        self.storage = storage
        self.sampler = sampler
        self.pruner = pruner
        self.params = dict(params or {})
        self.enqueue_trials = [dict(p) for p in enqueue_trials or []]
        self.n_jobs = int(n_jobs)
        self.config: Any = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def _storage(self, sweep_dir: Path) -> tuple[Any, str]:
        """(Optuna storage, its URL): SQLite under the sweep dir unless ``storage`` names another database."""
        from optuna.storages import RDBStorage

        url = self.storage or f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
        # parallel workers share the SQLite file: wait for its lock instead of failing at once
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
        return RDBStorage(url, engine_kwargs=engine), url

    def _create_study(self, sweep_dir: Path, fixed: Sequence[str] = ()) -> tuple[Any, str]:
        import optuna

        storage, url = self._storage(sweep_dir)
        study = optuna.create_study(
            study_name=self.study_name or "sweep",
            storage=storage,
            sampler=self.sampler,
            pruner=self.pruner,
            direction=self.direction,
            load_if_exists=True,
        )
        if study.direction.name.lower() != self.direction:
            raise ValueError(
                f"The study {study.study_name!r} in {url} was created with direction="
                f"{study.direction.name.lower()}; use that, or a new hydra.sweep.dir for a new study."
            )
        # The same command resumes the study: settings outside the search space must be the same, or the
        # trials would not be comparable (another dataset or model under the same study name).
        setting = sorted(f for f in fixed if not f.lstrip("+~").startswith("hparams_search."))
        if study.user_attrs.get("fixed_overrides") is None:
            study.set_user_attr("fixed_overrides", setting)
        elif study.user_attrs["fixed_overrides"] != setting:
            before, now = set(study.user_attrs["fixed_overrides"]), set(setting)
            raise ValueError(
                f"The study {study.study_name!r} in {url} was run with other settings (only then: "
                f"{sorted(before - now)}; only now: {sorted(now - before)}): resume it with the same command, or "
                "start a new study (hparams_search.study=<new name>, or another hydra.sweep.dir)."
            )
        # No other sweep runs on this study (one command per sweep dir): a trial still RUNNING was interrupted
        for trial in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
            self._interrupted(study, trial.number, "the sweep process was killed")
        if not study.get_trials(deepcopy=False):
            from callbacks.run_dir import earlier_results

            # trial n runs in <sweep dir>/n: a new study must not write over an earlier one's results there
            held = sorted((d.name for d in sweep_dir.glob("[0-9]*") if d.is_dir() and earlier_results(d)), key=int)
            if held:
                raise ValueError(
                    f"{sweep_dir} holds the trial dirs {held[:5]} of an earlier study that {url} does not have "
                    "(was optuna.db deleted or storage changed?); their results would be overwritten: start the "
                    "new study elsewhere (hparams_search.study=<new name>, or another hydra.sweep.dir)."
                )
            for params in self.enqueue_trials:
                study.enqueue_trial(params)
        return study, url

    @staticmethod
    def _interrupted(study: Any, number: int, how: str) -> None:
        """Mark an interrupted trial FAIL and queue a retry with the same parameters (Optuna's retry callback)."""
        import optuna
        from optuna.storages import RetryHeartbeatStaleTrialCallback
        from optuna.trial import TrialState

        storage = study._storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        original = storage.get_trial(trial_id)
        storage.set_trial_user_attr(trial_id, "error", f"interrupted ({how}): retried with the same parameters")
        study.tell(number, state=TrialState.FAIL)
        log.warning("Trial %d was interrupted (%s): it will run again with the same parameters", number, how)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            RetryHeartbeatStaleTrialCallback()(study, original)  # a WAITING copy: same params, retry_history=[number]

    def sweep(self, arguments: list[str]) -> list[Any]:
        assert self.config is not None and self.launcher is not None, "setup() first"
        try:
            space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
            if not space:
                raise ValueError(
                    "hparams_search: the search space is empty: set hydra.sweeper.params or pass sweep overrides "
                    "such as 'model.optimizer.lr=tag(log,interval(1e-5,1e-3))'."
                )
            n_jobs = resolve_n_jobs(self.n_jobs)
            sweep_dir = Path(self.config.hydra.sweep.dir)
            sweep_dir.mkdir(parents=True, exist_ok=True)
            study, storage = self._create_study(sweep_dir, fixed)
        except ValueError as error:  # a bad sweep setting: one line, as main.py reports bad inputs
            if self.config.get("debug", False):
                raise
            print(f"\nerror: {error}\n(run with debug=true for the full traceback)", file=sys.stderr)
            raise SystemExit(1) from None
        metric = self.config.get("optimized_metric")
        log.info(
            "Optuna study %r in %s (%d trials so far): %s %s over %s, %d worker(s)",
            study.study_name, storage, len(study.trials), self.direction, metric, space, n_jobs,
        )
        workers = [self._fork_worker(index, n_jobs, sweep_dir, space, fixed) for index in range(1, n_jobs)]
        if workers:
            self._worker_setup(0, n_jobs)
        try:
            returns = self._run_trials(study, space, fixed, sweep_dir, metric, storage)
        finally:
            for worker in workers:
                worker.join()
        failed_workers = [w.exitcode for w in workers if w.exitcode]
        summary = write_summary(study, sweep_dir / SUMMARY_FILE, metric, storage)
        log.info(
            "Best trial %s: %s=%s with %s (summary: %s)",
            summary["best_trial"], metric, summary["best_value"], summary["best_params"], sweep_dir / SUMMARY_FILE,
        )
        if failed_workers:
            raise RuntimeError(f"{len(failed_workers)} sweep worker(s) stopped with exit codes {failed_workers}.")
        if summary["states"] == {"FAIL": summary["n_trials"]}:  # a broken setup, not bad luck: exit non-zero
            raise RuntimeError(f"Every trial failed; the errors are in {sweep_dir / SUMMARY_FILE}.")
        return returns

    def _worker_setup(self, index: int, n_jobs: int) -> None:
        """CPU threads shared out between the workers; with several GPUs, one GPU per worker."""
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_jobs))
        gpus = visible_gpus()
        if gpus > 1:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            ids = visible.split(",") if visible else [str(i) for i in range(gpus)]
            os.environ["CUDA_VISIBLE_DEVICES"] = ids[index % len(ids)]

    def _fork_worker(
        self, index: int, n_jobs: int, sweep_dir: Path, space: Mapping[str, Any], fixed: Sequence[str]
    ) -> Any:
        """Worker ``index``: a forked copy of this sweep (the Hydra launcher and task included) running trials.

        Fork (not spawn) because Hydra's task function and launcher cannot be pickled; it happens before any
        trial has run in this process, so no CUDA context or thread pool is copied.
        """
        if "fork" not in multiprocessing.get_all_start_methods():
            raise ValueError("hparams_search.n_jobs > 1 needs os.fork (Linux or macOS); use n_jobs=1 here.")

        def work() -> None:
            code = 0
            try:
                self._worker_setup(index, n_jobs)
                import optuna

                storage, url = self._storage(sweep_dir)  # a fresh connection: never share one across fork
                study = optuna.load_study(
                    study_name=self.study_name or "sweep", storage=storage, sampler=self.sampler, pruner=self.pruner
                )
                self._run_trials(study, space, fixed, sweep_dir, self.config.get("optimized_metric"), url)
            except BaseException:  # noqa: BLE001 - report and exit with a code; the parent raises
                log.exception("sweep worker %d stopped", index)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)  # not the parent's atexit hooks (Hydra, loggers)

        process = multiprocessing.get_context("fork").Process(target=work, name=f"sweep-worker-{index}")
        process.start()
        return process

    def _run_trials(
        self, study: Any, space: Mapping[str, Any], fixed: Sequence[str], sweep_dir: Path, metric: str | None,
        storage: str,
    ) -> list[Any]:
        """Ask, run as a Hydra job, tell; until the study has ``n_trials`` trials (shared by every worker)."""
        import optuna

        returns = []
        while counted(study.get_trials(deepcopy=False)) < self.n_trials:
            trial = study.ask(space)
            for key in ("output_dir", "error"):  # a retry inherits its original's attributes
                trial.set_user_attr(key, None)
            overrides = [*fixed, *trial_overrides(trial.params)]
            log.info("Trial %d: %s", trial.number, " ".join(trial_overrides(trial.params)))
            set_active_trial(trial)
            try:
                [ret] = self.launcher.launch([overrides], initial_job_idx=trial.number)
            except Exception as exc:  # noqa: BLE001  (e.g. a sampled value the config cannot take)
                ret, outcome = None, (optuna.trial.TrialState.FAIL, None, f"{type(exc).__name__}: {exc}")
            except BaseException as stop:  # Ctrl-C / SIGTERM (exit 130 / 143): retried when the sweep resumes
                code = stop.code if isinstance(stop, SystemExit) else type(stop).__name__
                self._interrupted(study, trial.number, f"stopped with {code}")
                write_summary(study, sweep_dir / SUMMARY_FILE, metric, storage)
                raise
            else:
                returns.append(ret)
                outcome = self._outcome(ret, metric)
            finally:
                set_active_trial(None)
            state, value, error = outcome
            output_dir = str(ret.hydra_cfg.hydra.runtime.output_dir) if ret is not None and ret.hydra_cfg else None
            trial.set_user_attr("output_dir", output_dir)
            if error is not None:
                trial.set_user_attr("error", error)
                log.warning("Trial %d %s: %s", trial.number, state.name, error)
            try:
                study.tell(trial, value, state=state)
            except RuntimeError as exc:  # grid/brute-force samplers call study.stop() when the space is exhausted
                if "Study.stop" not in str(exc):
                    raise
                log.info("The sampler has covered the whole search space: stopping.")
                write_summary(study, sweep_dir / SUMMARY_FILE, metric, storage)
                break
            write_summary(study, sweep_dir / SUMMARY_FILE, metric, storage)
        return returns

    @staticmethod
    def _outcome(ret: Any, metric: str | None) -> tuple[Any, float | None, str | None]:
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
            return TrialState.FAIL, None, f"the job returned {value!r}, not a number: is optimized_metric={metric!r} a key of metrics.json?"
        if not math.isfinite(value):
            return TrialState.FAIL, None, f"{metric}={value} is not finite"
        return TrialState.COMPLETE, value, None
