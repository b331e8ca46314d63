"""One Optuna study, two workers, a real PostgreSQL server: the same ``python main.py hparams_search=optuna``
command started twice at once against a throw-away server on a free local port (Debian's PostgreSQL;
``.ci/run`` installs it where it is missing, and the test skips, saying why, where it cannot be run)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from lightning.pytorch import Callback

from tests.conftest import TINY_RUN, read_json, run_main, start_main

pytestmark = pytest.mark.slow


def postgres_bin() -> Path | None:
    """Where Debian's server binaries are (initdb and pg_ctl are not on PATH there), or PATH's initdb."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """``postgresql://kornlp@127.0.0.1:<port>/sweeps`` on a server of its own, removed afterwards. initdb
    refuses to run as root: as root, the server runs as Debian's ``postgres`` user."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb): .ci/run installs Debian's postgresql package")
    try:
        import psycopg  # noqa: F401  (SQLAlchemy 2.1's driver for postgresql://)
    except ImportError:
        pytest.skip("psycopg is not installed: pip install -e '.[sweeps]'")
    owner: dict = {}
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server as")
        owner = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    base = Path(tempfile.mkdtemp(prefix="kornlp-pg-"))
    if owner:
        os.chown(base, owner["user"], owner["group"])
    data, port = base / "data", free_port()

    def server(*args: str) -> None:
        done = subprocess.run(
            [str(bindir / args[0]), *args[1:]], cwd=base, capture_output=True, text=True, **owner
        )
        assert done.returncode == 0, f"{' '.join(args)}: {done.stdout}{done.stderr}"

    try:
        server("initdb", "-D", str(data), "-U", "kornlp", "--auth=trust", "-E", "UTF8", "--no-sync")
        settings = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB"
        server("pg_ctl", "-D", str(data), "-l", str(base / "server.log"), "-w", "start",
               "-o", f"-p {port} -h 127.0.0.1 -k {base} {settings}")  # fmt: skip
        server("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "kornlp", "sweeps")
        yield f"postgresql://kornlp@127.0.0.1:{port}/sweeps"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], cwd=base,
                           capture_output=True, **owner)  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


class HangInTrial(Callback):
    """Test helper, loaded by main.py through Hydra: in the process whose environment names a marker file, the
    first trial stops after one optimiser step: it writes the marker and sleeps, to be killed there
    (SIGKILL)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        marker = os.environ.get("KORNLP_TEST_HANG_MARKER")
        if marker and trainer.global_step == 1:
            Path(marker).write_text(str(os.getpid()), encoding="utf-8")
            time.sleep(600)


def wait_for(path: Path, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the worker exited ({process.returncode}) before its trial hung"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.5)


def test_two_workers_share_one_study_and_a_killed_workers_trial_is_retried(
    tmp_path: Path, postgres_url: str
) -> None:
    """Workers A and B (the same command, each with its own sweep dir, as on two machines) start at once on a
    fresh database: no worker fails, the study gets its 4 trials in all, no two workers draw the same
    parameters. A is killed (SIGKILL) in its trial: Optuna's heartbeat goes quiet, B fails that trial, runs it
    again with the same parameters, and completes the study. The summary is then rebuilt from the storage
    alone, as on a third machine."""
    command = [
        "hparams_search=optuna", "+experiment=mrc_curriculum", "~hydra.sweeper.params",
        "model.optimizer.lr=tag(log,interval(1e-4,1e-2))", "model.scheduler.warmup_ratio=interval(0.0,0.2)",
        "hydra.sweeper.n_trials=4", f"hydra.sweeper.storage={postgres_url}", "hydra.sweeper.study_name=team",
        "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=6", *TINY_RUN, "trainer.max_steps=3",
        "callbacks.progress_bar=null", "callbacks.model_summary=null", "trainer.num_sanity_val_steps=0",
        "export.enabled=false", f"+callbacks.hang._target_={__name__}.HangInTrial",
    ]  # fmt: skip
    cache, marker = tmp_path / "cache", tmp_path / "a-hangs"
    dirs = {name: tmp_path / name for name in ("a", "b", "c")}
    worker_a = start_main(*command, f"hydra.sweep.dir={dirs['a']}", run_dir=tmp_path / "a-run", cache_dir=cache,
                          env={"KORNLP_TEST_HANG_MARKER": str(marker)})  # fmt: skip
    worker_b = start_main(
        *command, f"hydra.sweep.dir={dirs['b']}", run_dir=tmp_path / "b-run", cache_dir=cache
    )
    try:
        wait_for(marker, worker_a, timeout=400)
        # killed in its trial; not reaped yet, so B cannot tell from the process table that A is gone: the
        # heartbeat alone shows it (as for a worker on another machine)
        worker_a.send_signal(signal.SIGKILL)
        assert worker_b.wait(timeout=500) == 0, (tmp_path / "b-run.out").read_text()[-4000:]
    finally:
        for worker in (worker_a, worker_b):
            if worker.poll() is None:
                worker.kill()
            worker.wait()
    assert worker_a.returncode == -signal.SIGKILL

    summary = read_json(dirs["b"] / "sweep_summary.json")
    trials = summary["trials"]
    states = [t["state"] for t in trials]
    assert states.count("COMPLETE") == 4 and states.count("FAIL") == 1 and len(trials) == 5, states
    (killed,) = [t for t in trials if t["state"] == "FAIL"]
    retry = trials[killed["retried_by"]]
    assert "heartbeats" in killed["error"] and retry["retry_of"] == killed["number"]
    assert retry["params"] == killed["params"] and retry["state"] == "COMPLETE"
    # no parameter set drawn twice: every trial but the deliberate retry has parameters of its own
    drawn = [tuple(sorted(t["params"].items())) for t in trials if t["retry_of"] is None]
    assert len(set(drawn)) == len(drawn) == 4
    pid_a = int(marker.read_text())
    assert killed["worker"].endswith(f":{pid_a}") and len(summary["workers"]) == 2
    # each worker's run dirs on its own machine: A's trial in A's sweep dir, B's in B's
    assert (dirs["a"] / str(killed["number"]) / ".hydra" / "overrides.yaml").exists()
    for trial in trials:
        if trial["state"] == "COMPLETE":
            assert (dirs["b"] / str(trial["number"]) / "metrics.json").exists()
            assert trial["value"] == trial["metrics"]["f1"]

    # the summary from the storage alone: the same command with task=sweep_summary, in a fresh sweep dir
    run_main(
        *command,
        "task=sweep_summary",
        f"hydra.sweep.dir={dirs['c']}",
        run_dir=tmp_path / "c-run",
        cache_dir=cache,
    )
    rebuilt = read_json(dirs["c"] / "sweep_summary.json")
    assert [t["metrics"] for t in rebuilt["trials"]] == [t["metrics"] for t in trials]
    assert (rebuilt["best_trial"], rebuilt["states"]) == (summary["best_trial"], {"COMPLETE": 4, "FAIL": 1})
    assert rebuilt["storage"] == postgres_url and not list(dirs["c"].glob("[0-9]*"))
    study = optuna.load_study(study_name="team", storage=postgres_url)
    assert [t.state.name for t in study.trials] == states
