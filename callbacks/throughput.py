"""Run-level training throughput, for metrics.json and docs/benchmarks.md.

Lightning's ThroughputMonitor reports windowed rates to loggers only; comparisons across runs
need one number per run, measured over optimiser steps alone (no validation, no data loading).
"""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import LightningModule, Trainer

from callbacks.run_metrics import RunMetricsCallback
from models.base import TaskModule


class TrainThroughput(RunMetricsCallback):
    """Samples (features) per second over the forward/backward/step time of training batches."""

    def __init__(self) -> None:
        self.samples = 0
        self.seconds = 0.0
        self._started = 0.0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.seconds += time.perf_counter() - self._started
        size = pl_module.batch_size_of(batch) if isinstance(pl_module, TaskModule) else int(batch["input_ids"].size(0))
        self.samples += size * trainer.world_size

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.log("train_samples_per_second", self.samples_per_second)

    def run_metrics(self) -> dict[str, Any]:
        return {"train_samples_per_second": self.samples_per_second, "train_seconds": self.seconds}
