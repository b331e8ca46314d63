"""Hydra's launcher plugins as configured here: ``hydra/launcher=joblib`` runs a grid's jobs side by side (for
real, one GPU per worker process where there are several), ``hydra/launcher=submitit_slurm`` writes a valid
sbatch file."""

from __future__ import annotations

import multiprocessing
import os
import re
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from core.config import CONF_DIR, register_resolvers
from sweeps import launchers
from sweeps.launchers import claim_gpu
from tests.conftest import TINY_RUN, read_json, run_main


def composed(*overrides: str):
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_submitit_slurm_config_makes_a_valid_sbatch_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hydra's SlurmLauncher with conf/hydra/launcher/submitit_slurm.yaml, up to the sbatch file it would
    submit: one GPU per task with CPUs per GPU (submitit warns when cpus_per_gpu comes without gpus_per_task),
    no --cpus-per-task beside --cpus-per-gpu (SLURM refuses both), the time limit."""
    import submitit

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\n")  # submitit looks for srun to know it is on SLURM
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    cfg = composed(
        "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.cpus_per_gpu=6",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra.job.name=main",
    )  # fmt: skip
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=print, config=cfg)
    sbatch: list[str] = []

    def submit(executor: submitit.AutoExecutor, function, *arguments) -> list:
        sbatch.append(
            executor._executor._make_submission_file_text("python -u -m submitit.core._submit", "0")
        )
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", submit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        launcher.launch([["seed=1"], ["seed=2"]], initial_job_idx=0)
    flags = dict(re.findall(r"#SBATCH --([\w-]+)=(\S+)", sbatch[0]))
    assert (flags["gpus-per-task"], flags["cpus-per-gpu"], flags["ntasks-per-node"]) == ("1", "6", "1")
    assert (flags["time"], flags["partition"], flags["job-name"]) == ("240", "gpu", "main")
    assert not {"cpus-per-task", "gpus-per-node", "mem", "gres"} & set(flags)
    assert flags["signal"].endswith("@120") and "error" not in flags  # stderr_to_stdout


def test_joblib_config_composes_with_one_gpu_per_job() -> None:
    cfg = composed("hydra/launcher=joblib", "hydra.launcher.n_jobs=4")
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.prefer == "processes"
    callback = instantiate(cfg.hydra.callbacks.one_gpu_per_job)
    assert isinstance(callback, launchers.OneGpuPerJob) and callback.n_jobs == 4
    assert "fresh_run_dir" in cfg.hydra.callbacks  # conf/hydra/default.yaml's callbacks are kept


def test_each_worker_process_claims_a_gpu_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two GPUs, three worker processes: jobs 0 and 2 both start with GPU 3, the second finds it taken and
    takes 5; a third worker shares; a GPU is free again once its worker has ended."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setattr(launchers, "_held", {})
    context = multiprocessing.get_context("fork")
    results, release = context.Queue(), context.Event()

    def worker(job: int) -> None:
        results.put(
            (job, claim_gpu(tmp_path, job), claim_gpu(tmp_path, job + 1), os.environ["CUDA_VISIBLE_DEVICES"])
        )
        release.wait(60)

    processes, claims = [], []
    for job in (0, 2, 4):
        processes.append(context.Process(target=worker, args=(job,)))
        processes[-1].start()
        claims.append(results.get(timeout=60))
    release.set()
    for process in processes:
        process.join(timeout=60)
    # a worker keeps its GPU for its later jobs; CUDA_VISIBLE_DEVICES names it alone
    assert claims == [(0, "3", "3", "3"), (2, "5", "5", "5"), (4, "3", "3", "3")]
    assert claim_gpu(tmp_path, 1) == "5" and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    os.close(launchers._held["fd"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(launchers, "_held", {})
    assert claim_gpu(tmp_path, 1) is None  # one GPU: nothing to share out


@pytest.mark.slow
def test_joblib_launcher_runs_a_grid_in_parallel_worker_processes(tmp_path: Path) -> None:
    """A 2-job grid through joblib's worker processes. A fresh interpreter, as from a shell (an env key read
    at import gives one: tests/conftest.py): joblib keeps its workers for reuse, and an interpreter's exit
    stops them; a run forked by the test's fork server would wait for their 300 s idle timeout instead."""
    sweep_dir = tmp_path / "grid"
    result = run_main(
        "-m", "hydra/launcher=joblib", "model.optimizer.lr=1e-3,3e-3", *TINY_RUN, "trainer.max_steps=2",
        "callbacks.progress_bar=null", "callbacks.model_summary=null", "trainer.num_sanity_val_steps=0",
        "export.enabled=false", f"hydra.sweep.dir={sweep_dir}", run_dir=sweep_dir / "unused",
        cache_dir=tmp_path / "cache", env={"LOKY_MAX_CPU_COUNT": "2"},
    )  # fmt: skip
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    assert (
        "is validated against ConfigStore schema" not in result.stderr
    )  # quieted (hydra_plugins/kornlp_sweepers)
    for job, lr in (("0", "0.001"), ("1", "0.003")):
        assert read_json(sweep_dir / job / "metrics.json")["global_step"] == 2
        assert f"model.optimizer.lr={lr}" in (sweep_dir / job / ".hydra" / "overrides.yaml").read_text()
        # OneGpuPerJob ran in the job's worker process: no GPU here, a CPU thread of the 2 cores' share each
        log = (sweep_dir / job / "main.log").read_text(encoding="utf-8")
        assert re.search(rf"Job {job} in worker process \d+: GPU none, \d+ CPU thread", log), log[:2000]
