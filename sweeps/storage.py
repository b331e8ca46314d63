"""Where an Optuna study lives, and which of its RUNNING trials have lost their worker.

* ``storage: null``: SQLite in the sweep dir (one machine; several processes of that machine);
* any SQLAlchemy URL Optuna takes (``postgresql://user@host/db``, ``mysql+pymysql://...``): a database server
  that workers on several machines share. SQLite must not be shared over a network file system (its locks do
  not hold there and the file corrupts);
* ``journal:<path>``: Optuna's journal file (``JournalFileBackend``), for a shared file system (NFS) and no
  database server.

A worker that dies mid-trial (SIGKILL, OOM killer, a lost machine) cannot mark its trial FAIL itself. RDB
storages get Optuna's heartbeat: each running trial is stamped every ``heartbeat_interval`` s, and a trial not
stamped for ``grace_period`` s is failed by whichever worker looks next and queued again with the same
parameters (Optuna's ``RetryHeartbeatStaleTrialCallback``). Optuna's journal storage has no heartbeat; there,
and on the same machine at once, a trial whose worker process (recorded as host and pid) is gone is failed the
same way.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOURNAL = "journal:"
# a RUNNING trial's worker: {"host": ..., "pid": ...} (a trial's user attribute)
WORKER_ATTR = "worker"
# what a worker records on its trial (a retry starts without them)
RUN_ATTRS = (WORKER_ATTR, "error", "output_dir", "metrics")


def default_url(sweep_dir: Path) -> str:
    return f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"


def journal_path(url: str) -> Path:
    """``journal:///abs/path.log`` or ``journal:relative/path.log`` -> the journal file."""
    rest = url[len(JOURNAL) :]
    return Path(rest[2:] if rest.startswith("//") else rest).expanduser().resolve()


def shown_url(url: str) -> str:
    """The URL with its password masked: it goes into logs and sweep_summary.json."""
    if url.startswith(JOURNAL):
        return f"{JOURNAL}{journal_path(url)}"
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL: RDBStorage says what is wrong with it
        return url


def open_storage(url: str, heartbeat_interval: int | None, grace_period: int | None) -> Any:
    """An Optuna storage for ``url`` (see the module doc); a bad URL, a missing driver or an unreachable
    server is one ``ValueError`` that says what to do."""
    import optuna
    from optuna.storages import RDBStorage

    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = journal_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    sqlite = url.startswith("sqlite")
    # SQLite: parallel workers wait for the file's lock instead of failing at once; servers: drop dead
    # connections
    engine = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    heartbeat: dict[str, Any] = {}
    if heartbeat_interval:
        heartbeat = {
            "heartbeat_interval": int(heartbeat_interval),
            "grace_period": int(grace_period or 2 * heartbeat_interval),
            # a trial failed for its silent heartbeat runs again, with the same parameters
            "heartbeat_stale_trial_callback": retry_lost_trial,
        }
    import sqlalchemy.exc

    attempts = 4
    for attempt in range(1, attempts + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=engine, **heartbeat)
        except ImportError as error:  # SQLAlchemy 2.1: postgresql:// is psycopg 3, mysql:// mysqlclient
            raise ValueError(
                f"hydra.sweeper.storage={shown_url(url)}: no database driver for it "
                f"({error.__cause__ or error}). "
                "PostgreSQL: pip install -e '.[sweeps]' (psycopg 3); MySQL: pip install pymysql and use "
                "mysql+pymysql://..."
            ) from None
        except sqlalchemy.exc.ArgumentError as error:
            raise ValueError(
                f"hydra.sweeper.storage={shown_url(url)} is not a database URL: {error}"
            ) from None
        except sqlalchemy.exc.DBAPIError as error:
            # Workers that open a new database at the same moment all create its tables: one wins and the
            # others fail (duplicate table or type), then find them on a second look. A server still starting
            # says so.
            if attempt == attempts or not _transient(error):
                raise ValueError(
                    f"hydra.sweeper.storage={shown_url(url)}: cannot open the study's database: "
                    f"{str(error.orig or error).strip()}"
                ) from None
        time.sleep(attempt)
    raise AssertionError("unreachable")


def _transient(error: Exception) -> bool:
    import sqlalchemy.exc

    text = str(error)
    return isinstance(error, sqlalchemy.exc.IntegrityError | sqlalchemy.exc.ProgrammingError) or any(
        cue in text for cue in ("already exists", "the database system is starting up")
    )


def has_heartbeat(storage: Any) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


def watched(study: Any, trial: Any) -> bool:
    """Whether this worker will learn if ``trial``'s worker dies: by Optuna's heartbeat, or by the process
    table when that worker runs on this machine."""
    host = (trial.user_attrs.get(WORKER_ATTR) or {}).get("host")
    return has_heartbeat(study._storage) or host == socket.gethostname()


def this_worker() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def fail_lost_trials(study: Any) -> None:
    """Fail (and queue again) the RUNNING trials whose worker is gone: stale heartbeats (Optuna), and trials
    of a process of this machine that no longer exists. Any worker may do it; only one succeeds per trial."""
    import optuna
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=[TrialState.RUNNING]):
        worker = trial.user_attrs.get(WORKER_ATTR) or {}
        if (
            worker.get("host") == host
            and worker.get("pid") != os.getpid()
            and not process_alive(worker["pid"])
        ):
            interrupt(study, trial.number, f"its worker process {host}:{worker['pid']} is gone")


def interrupt(study: Any, number: int, how: str) -> bool:
    """Mark a RUNNING trial FAIL and queue a copy with the same parameters (Optuna's retry callback). False
    when another worker finished it first."""
    import optuna
    from optuna.trial import TrialState

    storage = study._storage  # ask/tell has no public way to fail another process's trial
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    try:
        storage.set_trial_user_attr(
            trial_id, "error", f"interrupted ({how}): retried with the same parameters"
        )
        original = storage.get_trial(trial_id)
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    log.warning("Trial %d was interrupted (%s): it will run again with the same parameters", number, how)
    retry_lost_trial(study, original)
    return True


def retry_lost_trial(study: Any, trial: Any) -> None:
    """Optuna's ``RetryHeartbeatStaleTrialCallback``: a WAITING copy of ``trial``, same params,
    retry_history=[number]. The copy leaves out what the lost worker recorded (``worker`` above all: the
    worker that takes the retry must not look lost for a moment because its copy names a dead process)."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    clean = copy.deepcopy(trial)
    clean.user_attrs = {key: value for key, value in trial.user_attrs.items() if key not in RUN_ATTRS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback()(study, clean)


def heartbeat(study: Any, trial: Any) -> Any:
    """Optuna's heartbeat thread for ``trial`` (a no-op context without heartbeat): ``Study.optimize`` starts
    it itself; ask/tell must."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial._trial_id, study._storage)
