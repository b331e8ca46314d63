"""Optuna hyper-parameter search as a Hydra sweeper: ``python main.py hparams_search=optuna``.

Why not hydra-optuna-sweeper: its newest release (1.3.0) pins ``optuna<3`` (pip downgrades Optuna to 2.10),
and Optuna 2.10's SQLite storage fails on SQLAlchemy 2 (``assert version is not None``), so a study can be
neither stored nor resumed, and it cannot prune. This sweeper keeps Hydra's launcher and job directories
(``<sweep dir>/<trial number>/`` with ``metrics.json``, ``.hydra/``, ``main.log``) and drives current Optuna
with ask/tell:

* the study lives in SQLite under the sweep dir (``optuna.db``; ``hparams_search=optuna`` makes that dir
  ``multirun/<run_name>/optuna/<hparams_search.study>``, without a time stamp): the same command resumes it.
  With ``hydra.sweeper.storage`` on a database server (or a journal file on a shared file system) the same
  command on several machines joins one study (:mod:`sweeps.storage`): ``n_trials`` is the study's total,
  shared by every worker, and counts the trials it already has;
* a trial whose worker died (Ctrl-C, a kill, a lost machine: Optuna's heartbeat) is marked FAIL
  ("interrupted") and queued again with the same parameters (Optuna's ``RetryHeartbeatStaleTrialCallback``),
  and does not count;
* ``n_jobs`` > 1 forks worker processes that share the study, each running its trials in-process, one GPU each
  when there are several; each trial draws its parameters with ``seed + trial number``
  (:mod:`sweeps.samplers`), so no two workers draw alike;
* the search space uses Hydra's sweep grammar (``interval``, ``tag(log, interval(...))``, ``tag(int, ...)``,
  ``choice``, ``range``, ``a,b,c``), from ``hydra.sweeper.params`` and from sweep overrides on the command
  line;
* a trial that raises is recorded as FAIL with its message (and ``error.txt`` in its job dir) and the sweep
  goes on; :class:`callbacks.optuna_pruning.OptunaPruning` reports each validation to the pruner, a pruned
  trial is PRUNED;
* ``sweep_summary.json`` in the sweep dir is rewritten after every trial, from the storage (every worker's
  trials); ``task=sweep_summary`` or ``n_trials=0`` only rewrites it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from callbacks.optuna_pruning import set_active_trial
from sweeps.launchers import gpu_ids, resolve_n_jobs
from sweeps.samplers import build_sampler
from sweeps.storage import (
    WORKER_ATTR,
    default_url,
    fail_lost_trials,
    heartbeat,
    interrupt,
    open_storage,
    shown_url,
    this_worker,
    watched,
)
from sweeps.summary import SUMMARY_FILE, counted, trial_overrides, write_summary
from sweeps.trials import job_outcome, search_space, trial_config

log = logging.getLogger(__name__)


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
        heartbeat_interval: int | None = 15,
        grace_period: int | None = 60,
    ) -> None:
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"hydra.sweeper.direction={direction!r}: use maximize or minimize.")
        if int(n_trials) < 0:
            raise ValueError(
                f"hydra.sweeper.n_trials={n_trials}: a count of trials (0: only rebuild the summary)."
            )
        self.direction = direction
        self.n_trials = int(n_trials)
        self.study_name = study_name or "sweep"
        self.storage = storage
        self.sampler = build_sampler(sampler)
        self.pruner = pruner
        self.params = dict(params or {})
        self.enqueue_trials = [dict(p) for p in enqueue_trials or []]
        self.n_jobs = int(n_jobs)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.config: Any = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def _storage(self, sweep_dir: Path) -> tuple[Any, str]:
        """(Optuna storage, its URL as shown): SQLite under the sweep dir unless ``storage`` names another."""
        url = self.storage or default_url(sweep_dir)
        return open_storage(url, self.heartbeat_interval, self.grace_period), shown_url(url)

    def _create_study(self, sweep_dir: Path, fixed: Sequence[str] = ()) -> tuple[Any, str]:
        """Create the study, or join it: the same command on several machines (or processes) is one study."""
        import optuna

        storage, url = self._storage(sweep_dir)
        options = {
            "study_name": self.study_name,
            "storage": storage,
            "sampler": self.sampler,
            "pruner": self.pruner,
        }
        try:
            study, created = optuna.create_study(direction=self.direction, **options), True
        except optuna.exceptions.DuplicatedStudyError:
            study, created = optuna.load_study(**options), False
        if study.direction.name.lower() != self.direction:
            raise ValueError(
                f"The study {study.study_name!r} in {url} was created with direction="
                f"{study.direction.name.lower()}; use that, or start a new study (another "
                "hydra.sweeper.study_name)."
            )
        # Every worker and every resumed run: settings outside the search space must be the same, or the
        # trials would not be comparable (another dataset or model under the same study name).
        setting = sorted(f for f in fixed if not f.lstrip("+~").startswith("hparams_search."))
        if study.user_attrs.get("fixed_overrides") is None:
            # (another worker may set it at the same moment: then its value is compared)
            with contextlib.suppress(optuna.exceptions.StorageInternalError):
                study.set_user_attr("fixed_overrides", setting)
        if study.user_attrs["fixed_overrides"] != setting:
            before, now = set(study.user_attrs["fixed_overrides"]), set(setting)
            raise ValueError(
                f"The study {study.study_name!r} in {url} was run with other settings (only then: "
                f"{sorted(before - now)}; only now: {sorted(now - before)}): join it with the same command, "
                "or "
                "start a new study (hparams_search.study=<new name>, or another hydra.sweeper.study_name)."
            )
        # RUNNING trials may run on other workers: only those whose worker is gone are failed (and retried)
        fail_lost_trials(study)
        if not study.get_trials(deepcopy=False):
            from callbacks.run_dir import earlier_results

            # trial n runs in <sweep dir>/n: a new study must not write over an earlier one's results there
            held = sorted(
                (d.name for d in sweep_dir.glob("[0-9]*") if d.is_dir() and earlier_results(d)), key=int
            )
            if held:
                raise ValueError(
                    f"{sweep_dir} holds the trial dirs {held[:5]} of an earlier study that {url} does not have "
                    "(was optuna.db deleted or storage changed?); their results would be overwritten: start the "
                    "new study elsewhere (hparams_search.study=<new name>, or another hydra.sweep.dir)."
                )
        if created:  # only the worker that created the study queues these (never twice)
            for params in self.enqueue_trials:
                study.enqueue_trial(params)
        return study, url

    def _load_study(self, sweep_dir: Path) -> tuple[Any, str]:
        import optuna

        storage, url = self._storage(sweep_dir)
        try:
            return optuna.load_study(study_name=self.study_name, storage=storage), url
        except KeyError:
            raise ValueError(
                f"{url} has no study named {self.study_name!r} (hydra.sweeper.study_name; "
                "the default is the experiment's run_name)."
            ) from None

    def sweep(self, arguments: list[str]) -> list[Any]:
        assert self.config is not None and self.launcher is not None, "setup() first"
        metric = self.config.get("optimized_metric")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        summary_only = self.n_trials == 0 or self.config.get("task") == "sweep_summary"
        try:
            if summary_only:  # task=sweep_summary, or n_trials=0: no trial, the summary from the storage
                study, storage = self._load_study(sweep_dir)
                return self._summarise(study, sweep_dir, metric, storage, [])
            space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
            if not space:
                raise ValueError(
                    "hparams_search: the search space is empty: set hydra.sweeper.params or pass sweep overrides "
                    "such as 'model.optimizer.lr=tag(log,interval(1e-5,1e-3))'."
                )
            n_jobs = resolve_n_jobs(self.n_jobs)
            study, storage = self._create_study(sweep_dir, fixed)
        except ValueError as error:  # a bad sweep setting: one line, as main.py reports bad inputs
            if self.config.get("debug", False):
                raise
            print(f"\nerror: {error}\n(run with debug=true for the full traceback)", file=sys.stderr)
            raise SystemExit(1) from None
        log.info(
            "Optuna study %r in %s (%d trials so far): %s %s over %s, %d worker(s) here, sampler %s",
            study.study_name, storage, len(study.trials), self.direction, metric, space, n_jobs, self.sampler,
        )  # fmt: skip
        if not str(self.config.hydra.launcher._target_).endswith(".BasicLauncher"):
            log.warning(
                "hydra/launcher runs each trial in another process: the pruner gets no reports from it. Run "
                "trials side by side with hparams_search.n_jobs, or the same command on several machines."
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
        self._summarise(study, sweep_dir, metric, storage, failed_workers)
        return returns

    def _summarise(
        self, study: Any, sweep_dir: Path, metric: str | None, storage: str, failed_workers: list[int]
    ) -> list[Any]:
        summary = write_summary(study, sweep_dir / SUMMARY_FILE, metric, storage)
        log.info(
            "Study %r: %s; best trial %s: %s=%s with %s (summary: %s)", study.study_name, summary["states"],
            summary["best_trial"], metric, summary["best_value"], summary["best_params"],
            sweep_dir / SUMMARY_FILE,
        )  # fmt: skip
        if failed_workers:
            raise RuntimeError(
                f"{len(failed_workers)} sweep worker(s) stopped with exit codes {failed_workers}."
            )
        if summary["n_trials"] and summary["states"] == {
            "FAIL": summary["n_trials"]
        }:  # a broken setup: exit 1
            raise RuntimeError(f"Every trial failed; the errors are in {sweep_dir / SUMMARY_FILE}.")
        return []

    def _worker_setup(self, index: int, n_jobs: int) -> None:
        """CPU threads shared out between the workers; with several GPUs, one GPU per worker."""
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_jobs))
        ids = gpu_ids()
        if len(ids) > 1:
            os.environ["CUDA_VISIBLE_DEVICES"] = ids[index % len(ids)]

    def _fork_worker(
        self, index: int, n_jobs: int, sweep_dir: Path, space: Mapping[str, Any], fixed: Sequence[str]
    ) -> Any:
        """Worker ``index``: a forked copy of this sweep (the Hydra launcher and task included) running
        trials.

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
                    study_name=self.study_name, storage=storage, sampler=self.sampler, pruner=self.pruner
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

    def _next_trial(self, study: Any, space: Mapping[str, Any]) -> Any:
        """A new (or queued) trial once the study has fewer than ``n_trials``; None when it is done. While
        trials of other workers still run, wait for them: one whose worker dies is queued again, and run
        here."""
        from optuna.trial import TrialState

        waiting = False
        while True:
            fail_lost_trials(study)
            trials = study.get_trials(deepcopy=False)
            if counted(trials) < self.n_trials:
                break
            # a trial another worker runs ends, or its worker is found gone (the heartbeat, or a process of
            # this machine); without a heartbeat (journal) a worker elsewhere cannot be watched: do not wait
            # for it
            running = [t.number for t in trials if t.state == TrialState.RUNNING and watched(study, t)]
            if not running:
                return None
            if not waiting:
                log.info(
                    "The study has its %d trials; waiting for trials %s of other workers",
                    self.n_trials,
                    running,
                )
                waiting = True
            time.sleep(2)
        with warnings.catch_warnings():  # ask/tell runs the heartbeat itself (storage.heartbeat)
            warnings.filterwarnings(
                "ignore", message="Heartbeat of storage is supposed to be used with Study.optimize"
            )
            trial = study.ask(space)
        trial.set_user_attr(WORKER_ATTR, this_worker())
        return trial

    def _run_trials(
        self,
        study: Any,
        space: Mapping[str, Any],
        fixed: Sequence[str],
        sweep_dir: Path,
        metric: str | None,
        storage: str,
    ) -> list[Any]:
        """Ask, run as a Hydra job, tell; until the study has ``n_trials`` trials (shared by every worker)."""
        import optuna

        returns = []
        while (trial := self._next_trial(study, space)) is not None:
            overrides = [*fixed, *trial_overrides(trial.params), trial_config(study.study_name, trial)]
            log.info("Trial %d: %s", trial.number, " ".join(trial_overrides(trial.params)))
            set_active_trial(trial)
            try:
                with heartbeat(study, trial):
                    [ret] = self.launcher.launch([overrides], initial_job_idx=trial.number)
            except Exception as exc:  # noqa: BLE001  (e.g. a sampled value the config cannot take)
                ret, outcome = None, (optuna.trial.TrialState.FAIL, None, f"{type(exc).__name__}: {exc}")
            except BaseException as stop:  # Ctrl-C / SIGTERM (exit 130 / 143): retried when the sweep resumes
                code = stop.code if isinstance(stop, SystemExit) else type(stop).__name__
                interrupt(study, trial.number, f"stopped with {code}")
                write_summary(study, sweep_dir / SUMMARY_FILE, metric, storage)
                raise
            else:
                returns.append(ret)
                outcome = job_outcome(ret, metric)
            finally:
                set_active_trial(None)
            if not self._tell(study, trial, ret, outcome):
                write_summary(study, sweep_dir / SUMMARY_FILE, metric, storage)
                break
            write_summary(study, sweep_dir / SUMMARY_FILE, metric, storage)
        return returns

    def _tell(self, study: Any, trial: Any, ret: Any, outcome: tuple[Any, float | None, str | None]) -> bool:
        """Record the job's outcome, run dir and metrics in the study; False once the sampler says it is
        done."""
        import optuna

        state, value, error = outcome
        output_dir = (
            str(ret.hydra_cfg.hydra.runtime.output_dir) if ret is not None and ret.hydra_cfg else None
        )
        metrics_file = Path(output_dir, "metrics.json") if output_dir else None
        try:
            trial.set_user_attr("output_dir", output_dir)
            if (
                metrics_file is not None and metrics_file.exists()
            ):  # the summary is rebuilt from the storage alone
                trial.set_user_attr("metrics", json.loads(metrics_file.read_text(encoding="utf-8")))
            if error is not None:
                trial.set_user_attr("error", error)
                log.warning("Trial %d %s: %s", trial.number, state.name, error)
            study.tell(trial, value, state=state)
        except (
            optuna.exceptions.UpdateFinishedTrialError
        ):  # no heartbeat reached the storage for grace_period s
            log.warning(
                "Trial %d was failed by another worker while it ran here (no heartbeat for hydra.sweeper."
                "grace_period=%s s); its run dir %s is kept, and a retry runs it again", trial.number,
                self.grace_period, output_dir,
            )  # fmt: skip
        except RuntimeError as exc:  # grid/brute-force samplers call study.stop() when the space is exhausted
            if "Study.stop" not in str(exc):
                raise
            log.info("The sampler has covered the whole search space: stopping.")
            return False
        return True
