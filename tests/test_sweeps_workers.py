"""Several workers on one Optuna study, in-process and fast: the sweeper's loop with a stand-in for Hydra's
launcher.

The end-to-end runs (main.py, PostgreSQL) are in test_sweeps_postgres.py; here the storages (journal file,
SQLite), the per-trial seeds, lost workers (heartbeat, dead process) and the summary-only run are checked in
seconds.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import time
from functools import partial
from pathlib import Path

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from sweeps.optuna_study import OptunaStudy
from sweeps.storage import WORKER_ATTR, fail_lost_trials, open_storage, shown_url
from sweeps.summary import write_summary
from tests.conftest import read_json


class FakeLauncher:
    """Hydra's launcher for one job: writes the job's metrics.json, returns f1 = -(x - 0.3)^2."""

    def __init__(self, sweep_dir: Path, seconds: float = 0.0) -> None:
        self.sweep_dir, self.seconds = sweep_dir, seconds

    def launch(self, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        [overrides] = job_overrides
        x = float(next(o.split("=", 1)[1] for o in overrides if o.startswith("x=")))
        time.sleep(self.seconds)
        output_dir = self.sweep_dir / str(initial_job_idx)
        output_dir.mkdir(parents=True)
        (output_dir / "metrics.json").write_text(f'{{"f1": {-((x - 0.3) ** 2)}}}', encoding="utf-8")
        ret = JobReturn(status=JobStatus.COMPLETED, _return_value=-((x - 0.3) ** 2))
        ret.hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(output_dir)}}})
        return [ret]


def sweeper(
    sweep_dir: Path, storage: str | None, sampler=None, n_trials: int = 6, seconds: float = 0.0
) -> OptunaStudy:
    study = OptunaStudy(
        n_trials=n_trials, study_name="team", storage=storage, params={"x": "interval(0.0, 1.0)"},
        sampler=sampler if sampler is not None else partial(optuna.samplers.TPESampler, seed=42, n_startup_trials=5),
        heartbeat_interval=1, grace_period=2,
    )  # fmt: skip
    study.config = OmegaConf.create(
        {"hydra": {"sweep": {"dir": str(sweep_dir)}, "launcher": {"_target_": "hydra.BasicLauncher"}},
         "optimized_metric": "f1", "task": "fit"}
    )  # fmt: skip
    study.launcher = FakeLauncher(sweep_dir, seconds)
    return study


def run_workers(tmp_path: Path, storage: str, sampler=None, workers: int = 2) -> dict:
    """``workers`` processes on one study, started together (as on as many machines: own sweep dirs)."""
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(
            target=sweeper(tmp_path / f"machine{i}", storage, sampler, seconds=0.3).sweep, args=([],)
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * workers
    return read_json(tmp_path / "machine0" / "sweep_summary.json")


def test_workers_share_a_journal_study_and_never_draw_alike(tmp_path: Path) -> None:
    """Optuna's journal file (a shared file system, no database): two workers, 6 trials in all, each trial
    drawn with seed + its number. With the sampler the config used to build (one seed for every worker), they
    drew alike."""
    storage = f"journal:{tmp_path / 'study.log'}"
    summary = run_workers(tmp_path / "seeded", storage)
    assert summary["states"] == {"COMPLETE": 6} and len(summary["workers"]) == 2
    xs = [t["params"]["x"] for t in summary["trials"]]
    assert len(set(xs)) == 6
    assert all(t["metrics"] == {"f1": t["value"]} for t in summary["trials"])  # from the storage
    # each worker's run dirs on its own machine; the summary holds them all
    ran = {int(p.name) for machine in (tmp_path / "seeded").glob("machine*") for p in machine.glob("[0-9]*")}
    assert ran == set(range(6))

    same_seed = optuna.samplers.TPESampler(seed=42, n_startup_trials=5)  # an instance is used as it is
    old = run_workers(tmp_path / "old", f"journal:{tmp_path / 'old.log'}", sampler=same_seed)
    assert len({t["params"]["x"] for t in old["trials"]}) < 6  # the bug this fixes: both workers drew alike


def test_one_worker_sweep_is_reproducible_and_n_trials_zero_only_summarises(tmp_path: Path) -> None:
    first = sweeper(tmp_path / "one", None)
    first.sweep([])
    again = sweeper(tmp_path / "two", None)
    again.sweep([])
    xs = [t["params"]["x"] for t in read_json(tmp_path / "one" / "sweep_summary.json")["trials"]]
    assert xs == [t["params"]["x"] for t in read_json(tmp_path / "two" / "sweep_summary.json")["trials"]]

    # n_trials=0 on another machine: no trial, the summary from the storage (SQLite here, by its URL)
    url = f"sqlite:///{tmp_path / 'one' / 'optuna.db'}"
    summary_only = sweeper(tmp_path / "elsewhere", url, n_trials=0)
    summary_only.sweep([])
    summary = read_json(tmp_path / "elsewhere" / "sweep_summary.json")
    assert [t["params"]["x"] for t in summary["trials"]] == xs and summary["storage"] == url
    assert summary["trials"][0]["metrics"] is not None and not list((tmp_path / "elsewhere").glob("[0-9]*"))
    missing = sweeper(tmp_path / "elsewhere", url, n_trials=0)
    missing.study_name = "nobody"
    with pytest.raises(SystemExit):
        missing.sweep([])


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_lost_workers_trials_are_failed_and_retried(tmp_path: Path) -> None:
    """A RUNNING trial whose heartbeat stopped (a worker on another machine) and one whose process on this
    machine is gone: both FAIL and queued again with their parameters; a trial whose worker lives is left
    alone."""
    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="s", storage=storage)
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    silent, gone, alive = (study.ask(space) for _ in range(3))
    storage.record_heartbeat(silent._trial_id)
    finished = subprocess.Popen(["true"])
    finished.wait()  # its pid no longer runs
    gone.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": finished.pid})
    alive.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": os.getppid()})
    time.sleep(2.5)
    fail_lost_trials(study)
    states = [t.state.name for t in study.get_trials()]
    assert states == ["FAIL", "FAIL", "RUNNING", "WAITING", "WAITING"]
    summary = write_summary(study, tmp_path / "s.json", "f1", shown_url(f"sqlite:///{tmp_path / 'o.db'}"))
    rows = summary["trials"]
    assert "stopped sending heartbeats" in rows[0]["error"] and "is gone" in rows[1]["error"]
    assert [r["retry_of"] for r in rows[3:]] == [0, 1] and rows[3]["params"] == rows[0]["params"]
    fail_lost_trials(study)  # a second look (another worker) changes nothing
    assert len(study.get_trials()) == 5


def test_storage_urls_and_errors(tmp_path: Path) -> None:
    assert shown_url("postgresql://team:secret@db:5432/sweeps") == "postgresql://team:***@db:5432/sweeps"
    assert shown_url(f"journal:{tmp_path}/a.log") == f"journal:{tmp_path}/a.log"
    with pytest.raises(ValueError, match="no database driver"):
        open_storage("mysql://u@127.0.0.1/db", 1, 2)
    with pytest.raises(ValueError, match="cannot open the study's database"):
        open_storage("postgresql://u@127.0.0.1:9/db", None, None)
