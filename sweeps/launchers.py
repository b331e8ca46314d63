"""Hydra launchers (hydra-joblib-launcher, hydra-submitit-launcher) share a machine's GPUs and cores between
jobs.

Hydra's joblib launcher runs the jobs of a multirun in a pool of worker processes and leaves devices to them:
every job would train on GPU 0 with every core. :class:`OneGpuPerJob`, a Hydra callback that
``hydra/launcher=joblib`` adds (conf/hydra/launcher/joblib.yaml), gives each worker process one GPU of its own
through ``CUDA_VISIBLE_DEVICES`` before its first job touches CUDA, and its share of the CPU threads. A worker
keeps its GPU for its later jobs (CUDA reads the variable once per process); which GPU is free is settled by a
lock file per GPU in the sweep dir, held while the worker lives. SLURM (``submitit_slurm``) assigns GPUs
itself. The Optuna sweeper's worker count (``hparams_search.n_jobs``; -1: one per GPU) is resolved here too.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)

_held: dict[str, Any] = {}  # this process's GPU: {"gpu": id, "fd": its lock file}


def visible_gpus() -> int:
    """CUDA devices this process may use. ``device_count`` asks NVML and leaves CUDA uninitialised, so the
    workers can still fork and choose their device (``torch.cuda.is_available`` may initialise it)."""
    import torch

    return torch.cuda.device_count()


def gpu_ids() -> list[str]:
    """The ids ``CUDA_VISIBLE_DEVICES`` may name in this process (the ones it names, or all)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (
        [i.strip() for i in visible.split(",") if i.strip()]
        if visible
        else [str(i) for i in range(visible_gpus())]
    )


def resolve_n_jobs(n_jobs: int) -> int:
    """``hparams_search.n_jobs``: -1 is one worker per GPU, or per CPU core without GPUs; never more than
    cores."""
    cores = os.cpu_count() or 1
    if n_jobs == -1:
        return visible_gpus() or cores
    if n_jobs < 1:
        raise ValueError(
            f"hparams_search.n_jobs={n_jobs}: use a positive number of workers, or -1 (one per device)."
        )
    if n_jobs > cores:
        log.warning(
            "hparams_search.n_jobs=%d but this machine has %d CPU cores: using %d workers",
            n_jobs,
            cores,
            cores,
        )
    return min(n_jobs, cores)


def claim_gpu(lock_dir: Path, job_num: int) -> str | None:
    """Pin this process to one GPU no other worker of the sweep holds (job ``n`` tries GPU ``n mod count``
    first); with more workers than GPUs, share GPU ``n mod count``. None with fewer than two GPUs."""
    if "gpu" in _held:
        return _held["gpu"]
    ids = gpu_ids()
    if len(ids) < 2:
        return None
    lock_dir.mkdir(parents=True, exist_ok=True)
    for offset in range(len(ids)):
        gpu = ids[(job_num + offset) % len(ids)]
        fd = os.open(lock_dir / f"gpu-{gpu}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the kernel when this process ends
        except BlockingIOError:
            os.close(fd)
            continue
        _held.update(gpu=gpu, fd=fd)
        break
    else:
        _held["gpu"] = ids[job_num % len(ids)]
        log.warning(
            "More parallel jobs than GPUs (%d): job %d shares GPU %s", len(ids), job_num, _held["gpu"]
        )
    os.environ["CUDA_VISIBLE_DEVICES"] = _held["gpu"]
    return _held["gpu"]


class OneGpuPerJob(Callback):
    """Hydra callback: each parallel job's process on a GPU of its own, with its share of the CPU threads."""

    def __init__(self, n_jobs: int) -> None:
        self.n_jobs = int(n_jobs)

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        import torch

        cores = os.cpu_count() or 1
        parallel = (
            self.n_jobs if self.n_jobs > 0 else max(1, cores + 1 + self.n_jobs)
        )  # joblib's -1: every core
        torch.set_num_threads(max(1, cores // parallel))
        gpu = claim_gpu(Path(config.hydra.sweep.dir) / ".gpu-locks", int(config.hydra.job.num))
        log.info(
            "Job %d in worker process %d: GPU %s, %d CPU threads",
            config.hydra.job.num, os.getpid(), gpu or "none", torch.get_num_threads(),
        )  # fmt: skip
