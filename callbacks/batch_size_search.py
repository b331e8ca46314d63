"""Lightning's batch-size search, kept to a memory budget on CPU and to the size of the training set.

On CPU nothing raises an out-of-memory error: Lightning's search doubles the batch until the kernel's OOM
killer ends the process. Here every trial's peak memory is measured, the next one's is predicted from them,
and a trial predicted past the budget is not run (docs/tuning.md). Used by callbacks/tuning.py.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import torch
from lightning.fabric.utilities.data import sized_len
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BatchSizeFinder
from lightning.pytorch.tuner import batch_size_scaling as scaling
from lightning.pytorch.utilities.exceptions import _TunerExitException
from lightning.pytorch.utilities.memory import is_oom_error
from lightning.pytorch.utilities.parsing import lightning_getattr

log = logging.getLogger(__name__)

# The text Lightning's is_oom_error looks for in a CPU out-of-memory RuntimeError.
CPU_OOM = "DefaultCPUAllocator: can't allocate memory"
# How libraries report a refused allocation besides torch's CPU_OOM: oneDNN cannot create a primitive when
# its scratchpad is refused; C++ code throws std::bad_alloc; errno 12 reads "Cannot allocate memory".
ALLOCATION_FAILURES = ("could not create a primitive", "bad_alloc", "Cannot allocate memory", "out of memory")
# The max_val handed to Lightning, never reached: the finder refuses sizes above tune.max_val itself, since
# Lightning stops at its max_val with a size it has not tried (in power mode even one above max_val).
UNREACHABLE = 2**62
MiB = 2**20
Trial = Callable[[Trainer, dict[str, Any]], None]


class SearchStop(RuntimeError):
    """A trial the search refuses, raised as Lightning's CPU out-of-memory error so that Lightning's search
    handles it as it handles a real one (power: keep the last size that fit; binsearch: bisect below it)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{CPU_OOM} ({reason}): {detail}")  # one argument: is_oom_error reads args[0]
        self.detail = detail


class SearchDone(Exception):
    """Ends Lightning's search at once (its ``finally`` restores the trainer): after a failed trial of at least
    the training set's size, where Lightning would return that untried size (power) or retry it forever
    (binsearch), as its ``_adjust_batch_size`` changes no size at or above the dataset's length."""


class BudgetedBatchSizeFinder(BatchSizeFinder):
    """Lightning's batch-size search, kept below a memory budget on CPU and to the training set's size.

    Lightning's search stops only at ``max_trials``, at ``max_val`` or on an out-of-memory RuntimeError from a
    trial, and it empties ``trainer.callbacks`` while trials run, so no callback hook sees one. What remains
    is the one function that runs a trial, ``batch_size_scaling._try_loop_run``: it is wrapped for the search
    (and put back after) to measure each trial's peak memory and to refuse a trial whose predicted peak passes
    the budget or whose size passes ``tune.max_val``. A refusal is Lightning's own CPU out-of-memory error, so
    its power / binsearch logic decides what comes next. On CUDA trials are measured, and only the device's
    out-of-memory error stops them (Lightning's path, unchanged).
    """

    def __init__(
        self,
        *,
        largest: int,
        max_memory_fraction: float,
        max_memory_bytes: int | None,
        hard_limit: float,
        poll_interval: float,
        **lightning: Any,
    ) -> None:
        super().__init__(max_val=UNREACHABLE, **lightning)
        self._early_exit = True  # as Tuner.scale_batch_size: the fit that runs the search ends with it
        self.largest = largest
        self.fraction = max_memory_fraction
        self.cap = max_memory_bytes
        self.hard_limit = hard_limit
        self.poll_interval = poll_interval
        self.trials: list[dict[str, Any]] = []
        self.stopped: str | None = None
        self.budget: int | None = None
        self.data_limit: int | None = None
        self.baseline = 0
        self.available = 0
        self.train_features: int | None = None
        self.longest: int | None = None
        self.meter: PeakMemory | None = None

    def scale_batch_size(self, trainer: Trainer, pl_module: LightningModule) -> None:
        run = getattr(scaling, "_try_loop_run", None)
        if run is None:
            raise RuntimeError(
                "tune.batch_size: this Lightning has no batch_size_scaling._try_loop_run (a trial), which the "
                "memory budget wraps: use lightning>=2.4,<2.7, which has it."
            )
        self.start(trainer.strategy.root_device)
        early_exit, self._early_exit = self._early_exit, False  # super() returns, so its result can be settled
        scaling._try_loop_run = lambda trainer, params: self.trial(run, trainer, params)
        try:
            super().scale_batch_size(trainer, pl_module)
        except SearchDone:  # Lightning's own finally has restored the trainer and the weights
            self.optimal_batch_size = UNREACHABLE  # settled below: the largest size that fit
        finally:
            scaling._try_loop_run = run
            self._early_exit = early_exit
            if self.meter is not None:
                self.meter.close()
        self.optimal_batch_size = self.settle(self.optimal_batch_size)
        if self._early_exit:
            raise _TunerExitException()

    def start(self, device: torch.device) -> None:
        """Baseline and budget, taken when the search starts (the model and the data are loaded by then)."""
        self.meter = PeakMemory(device, self.poll_interval)
        self.baseline = self.meter.current()
        if device.type != "cpu":
            return
        # what the search could use: the memory the system has free for it, plus what this process holds
        self.available = psutil.virtual_memory().available + self.baseline
        self.budget = int(self.fraction * self.available) - self.baseline
        if self.budget <= 0:
            raise ValueError(
                f"tune.max_memory_fraction={self.fraction} leaves the batch-size search no memory: "
                f"{self.fraction} of {self.available / MiB:.0f} MiB is less than the {self.baseline / MiB:.0f} MiB "
                "this process already holds. Raise it (e.g. 0.5)."
            )
        if self.cap is not None:
            self.budget = min(self.budget, self.cap)
        data = _proc_status("VmData") if sys.platform.startswith("linux") else None
        if data is not None:
            self.data_limit = data + int(self.hard_limit * self.budget)
        log.info("batch-size finder: memory budget %.0f MiB over %.0f MiB", self.budget / MiB, self.baseline / MiB)

    def trial(self, run: Trial, trainer: Trainer, params: dict[str, Any]) -> None:
        """One trial of Lightning's search, measured; refused (as an out-of-memory error) when it must not run."""
        requested = int(lightning_getattr(trainer.lightning_module, self._batch_arg_name))
        if self.train_features is None and trainer.train_dataloader is not None:
            dataset = getattr(trainer.train_dataloader, "dataset", None)
            self.train_features = sized_len(dataset)
            lengths = getattr(dataset, "lengths", None)  # datamodules/mrc.py FeatureTable: tokens per feature
            self.longest = max(lengths(), default=None) if callable(lengths) else None
        if getattr(trainer.train_dataloader, "batch_size", None) not in (None, requested):
            scaling._reset_dataloaders(trainer)  # Lightning runs its first trial with the loader of the old size
        # a batch larger than the training set is the whole set: what the loader yields, and what is recorded
        size = min(requested, self.train_features) if self.train_features else requested
        record: dict[str, Any] = {"batch_size": size, "peak_bytes": None, "predicted_bytes": None, "tokens": None}
        self.trials.append(record)
        try:
            self.attempt(run, trainer, params, record)
        except RuntimeError as error:
            log.info("batch size %d: %s (%s)", size, record.get("result", "error"), getattr(error, "detail", error))
            if size <= 1 and record.get("result") in ("memory_budget", "oom"):  # Lightning would try 0 next
                self.stopped = record["result"]
                raise ValueError(f"tune.batch_size: not even batch size 1 fits: {self.describe_budget()}") from None
            if "result" in record and self.train_features and requested >= self.train_features:
                raise SearchDone() from error
            raise
        log.info("batch size %d: fit, peak %s MiB over the baseline", size, _mib(record["peak_bytes"]))

    def attempt(self, run: Trial, trainer: Trainer, params: dict[str, Any], record: dict[str, Any]) -> None:
        assert self.meter is not None
        size = record["batch_size"]
        if size > self.largest:
            record["result"] = "max_val"
            raise SearchStop("max_val", f"batch size {size} is above tune.max_val={self.largest}")
        if self.budget is not None:
            held = self.meter.current() - self.baseline  # a trial's peak is at least what the process holds now
            record["predicted_bytes"] = predicted = max(self.predict(size) or 0, held, 0)
            if predicted > self.budget:
                record.update(result="memory_budget", stopped_by="prediction")
                raise SearchStop("memory_budget", f"batch size {size}: predicted {_mib(predicted)} MiB, not run")
        self.meter.reset()
        limited = False
        try:
            with BatchTokens(trainer.lightning_module) as seen, data_limit(self.data_limit) as limited:
                run(trainer, params)
            record.update(tokens=seen.tokens or None, length=seen.length or None)
        except (MemoryError, RuntimeError) as error:
            record["peak_bytes"] = max(self.meter.peak() - self.baseline, 0)
            if limited and (isinstance(error, MemoryError) or any(s in str(error) for s in ALLOCATION_FAILURES)):
                record.update(result="memory_budget", stopped_by="memory_limit", error=str(error)[:200])
                raise SearchStop("memory_budget", f"batch size {size} reached the kernel's limit") from error
            if isinstance(error, RuntimeError) and is_oom_error(error):  # the device's own: Lightning's path
                record["result"] = "oom"
            raise
        record["peak_bytes"] = peak = max(self.meter.peak() - self.baseline, 0)  # < 0: memory freed since
        if self.budget is not None and peak > self.budget:  # it ran, past the budget: as if out of memory
            record.update(result="memory_budget", stopped_by="peak")
            raise SearchStop("memory_budget", f"batch size {size} used {_mib(peak)} MiB, over the budget")
        record["result"] = "fit"
        longest = self.predict(size)  # with this trial's measure: its size filled with the longest features
        if self.budget is not None and longest is not None and longest > self.budget:
            record.update(result="memory_budget", stopped_by="longest_batch", predicted_bytes=longest)
            raise SearchStop("memory_budget", f"batch size {size}: {_mib(longest)} MiB predicted at full length")

    def predict(self, size: int) -> int | None:
        """The peak a batch of ``size`` of the longest training features should reach; None when a trial that
        fit measured as much.

        Memory grows about linearly with the tokens of a batch (batch x padded length), and the trials'
        batches can be shorter than later ones (a curriculum starts with the shortest): the line through the
        largest batch that fit and the largest one with at most 2/3 of its tokens (a wide base, steadier than
        two neighbours of noisy lengths), or in proportion to the only one, read at ``size`` x the longest
        feature. Without token counts (no embedding layer seen), batch sizes stand for tokens.
        """
        fits = [t for t in self.trials if t.get("result") == "fit"]
        by_tokens = bool(fits) and all(t["tokens"] for t in fits)
        points = sorted((t["tokens"] if by_tokens else t["batch_size"], t["peak_bytes"]) for t in fits)
        length = (self.longest or max(t["length"] or 0 for t in fits)) if by_tokens else 1
        target = size * max(length, 1)
        if not points or target <= points[-1][0]:
            return None
        large, high = points[-1]
        small, low = max((p for p in points if p[0] <= large * 2 / 3), default=(0, 0))
        return int(high + max(high - low, 0) / (large - small) * (target - large))

    def settle(self, size: int | None) -> int | None:
        """Lightning's result, never above the largest size that ran and fit (after ``max_val`` or the end of
        the data Lightning returns a size it has not tried); records why the search stopped."""
        fits = [t["batch_size"] for t in self.trials if t.get("result") == "fit"]
        if size is None:  # fast_dev_run: Lightning skips the search
            return None
        if not fits:
            raise ValueError(f"tune.batch_size: no batch size fit: {self.describe_budget()}")
        self.stopped = self.stop_reason()
        return min(size, max(fits))

    def stop_reason(self) -> str:
        """memory_budget | oom | max_val (the last trial refused or failed) | dataset_size | max_trials |
        converged (binsearch between a size that fit and a larger one that did not: that one's reason)."""
        last = self.trials[-1]
        if last["result"] != "fit":
            return last["result"]
        if self.train_features is not None and last["batch_size"] >= self.train_features:
            return "dataset_size"
        counted = self.trials if self._mode == "power" else [t for t in self.trials if t["result"] == "fit"]
        if len(counted) >= self._max_trials:
            return "max_trials"
        failed = [t["result"] for t in self.trials if t["result"] != "fit"]
        return failed[-1] if failed else "converged"

    def describe_budget(self) -> str:
        if self.budget is None:
            return "the device ran out of memory (a smaller model, max_seq_length or precision=16-mixed helps)."
        return (
            f"the memory budget is {self.budget / MiB:.0f} MiB on top of the {self.baseline / MiB:.0f} MiB held; "
            "raise tune.max_memory_fraction (or tune.max_memory_bytes)."
        )

    def report(self) -> dict[str, Any]:
        """What batch_size_finder.json records of the search and its memory."""
        return {
            "stopped": self.stopped,
            "train_features": self.train_features,
            "longest_feature": self.longest,
            "max_val": self.largest,
            "memory": self.meter.kind if self.meter is not None else None,
            "baseline_bytes": self.baseline,
            "memory_budget_bytes": self.budget,
            "memory_available_bytes": self.available or None,
            "max_memory_fraction": self.fraction,
            "max_memory_bytes": self.cap,
            "memory_hard_limit": self.hard_limit if self.data_limit is not None else None,
            "trials": self.trials,
        }


class BatchTokens:
    """The largest training batch a trial fed the model, in tokens, and its padded length: read off the
    inputs of the model's embedding layers (torch forward pre-hooks, as Lightning runs no callback then)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.tokens = self.length = 0
        self._hooks: list[Any] = []

    def __enter__(self) -> BatchTokens:
        embeddings = [m for m in self.module.modules() if isinstance(m, torch.nn.Embedding)]
        self._hooks = [m.register_forward_pre_hook(self._see, with_kwargs=True) for m in embeddings]
        return self

    def __exit__(self, *exc: object) -> None:
        for hook in self._hooks:
            hook.remove()

    def _see(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = args[0] if args else kwargs.get("input")
        if module.training and isinstance(ids, torch.Tensor) and ids.dim() >= 2 and ids.numel() > self.tokens:
            self.tokens, self.length = ids.numel(), ids.shape[-1]


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value / MiB:.0f}"


def _proc_status(field: str) -> int | None:
    """A ``kB`` line of Linux's /proc/self/status in bytes (None elsewhere): psutil reads neither the peak
    RSS (VmHWM) nor the data segment (VmData) that the kernel's data limit counts."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, MemoryError):
        pass
    return None


class PeakMemory:
    """The most memory this process used between ``reset()`` and ``peak()``, in bytes.

    CPU: resident memory (RSS), sampled by a psutil thread every ``interval`` s; on Linux also the kernel's
    exact high-water mark (VmHWM, restarted per trial through /proc/self/clear_refs), which no sample can
    miss. CUDA: torch's peak of allocated bytes on the device. Other devices: not measured (0).
    """

    def __init__(self, device: torch.device, interval: float) -> None:
        self.device = device
        self.kind = {"cpu": "rss", "cuda": "cuda_allocated"}.get(device.type, "none")
        self.interval = interval
        self._process = psutil.Process()
        self._sampled = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.kind == "rss":
            self._thread = threading.Thread(target=self._poll, name="batch-size-memory", daemon=True)
            self._thread.start()

    def current(self) -> int:
        if self.kind == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return self._process.memory_info().rss if self.kind == "rss" else 0

    def reset(self) -> None:
        if self.kind == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        with self._lock:
            self._sampled = self.current()
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")  # "5": restart the peak RSS (Linux >= 4.0)

    def peak(self) -> int:
        if self.kind == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        if self.kind != "rss":
            return 0
        with self._lock:
            sampled = max(self._sampled, self.current())
        return max(sampled, _proc_status("VmHWM") or 0)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                rss = self._process.memory_info().rss
            except (MemoryError, psutil.Error):  # the kernel's data limit may refuse even this sample's memory
                continue
            with self._lock:
                self._sampled = max(self._sampled, rss)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@contextlib.contextmanager
def data_limit(limit: int | None) -> Iterator[bool]:
    """Linux, CPU: while a trial runs, the kernel refuses memory past ``limit`` bytes of data segment
    (RLIMIT_DATA), so a trial that runs away fails with an allocation error instead of the OOM killer ending
    the process. The limit counts memory as it is reserved, at least what becomes resident. Yields whether
    it is set (not without a limit, off Linux, or where the hard limit is lower)."""
    if limit is None:
        yield False
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY and hard < limit:
        yield False
        return
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    try:
        yield True
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
