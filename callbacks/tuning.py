"""Lightning's Tuner before ``task=fit`` trains: an LR range test and a batch-size search (``tune:`` config).

Both write what they found to the run directory (``lr_finder.png``, ``lr_finder.json``,
``batch_size_finder.json``) and, unless ``tune.apply=false``, train with it: the suggested LR goes into
``model.hparams.optimizer.lr`` (so the checkpoint records it) and the batch size into the datamodule's
``batch_size``. The batch size is searched first, as the best LR depends on it. On CPU the search keeps to a
memory budget (``tune.max_memory_fraction``, docs/tuning.md): nothing raises an out-of-memory error there, so
Lightning's own search would double the batch until the kernel's OOM killer ends the process.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import BatchSizeFinder
from lightning.pytorch.tuner import Tuner

from callbacks.batch_size_search import BudgetedBatchSizeFinder
from core.files import write_json

log = logging.getLogger(__name__)

BATCH_SIZE_MODES = ("power", "binsearch")


def tune(
    settings: Mapping[str, Any] | None,
    trainer: Trainer,
    model: LightningModule,
    datamodule: LightningDataModule,
    output_dir: Path,
) -> dict[str, Any]:
    """Run the finders ``settings`` asks for; returns what they found (empty when none ran)."""
    settings = dict(settings or {})
    mode = settings.get("batch_size")
    if mode is not None and mode not in BATCH_SIZE_MODES:
        raise ValueError(f"tune.batch_size={mode!r} is unknown: use null, {' or '.join(BATCH_SIZE_MODES)}.")
    found: dict[str, Any] = {}
    if mode is not None:
        found["batch_size"] = find_batch_size(settings, trainer, model, datamodule, output_dir)
    if settings.get("lr_find"):
        found["lr"] = find_lr(settings, trainer, model, datamodule, output_dir)
    return found


def memory_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The memory keys of ``tune:``, checked before any work; the finder's keyword arguments."""
    fraction = settings.get("max_memory_fraction", 0.5)
    if not _number(fraction) or not 0 < fraction <= 1:
        raise ValueError(
            f"tune.max_memory_fraction={fraction!r} must be a number in (0, 1]: the share of the memory available "
            "when the batch-size search starts that it may use (e.g. 0.5)."
        )
    cap = settings.get("max_memory_bytes")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0):
        raise ValueError(
            f"tune.max_memory_bytes={cap!r} must be null or a positive number of bytes the batch-size search may "
            "add to what the process holds (e.g. 4000000000)."
        )
    hard = settings.get("memory_hard_limit", 1.5)
    if not _number(hard) or hard < 1:
        raise ValueError(f"tune.memory_hard_limit={hard!r} must be a multiple of the memory budget, at least 1 (e.g. 1.5).")
    poll = settings.get("memory_poll_interval", 0.005)
    if not _number(poll) or poll <= 0:
        raise ValueError(f"tune.memory_poll_interval={poll!r} must be a positive number of seconds (e.g. 0.005).")
    return {"max_memory_fraction": float(fraction), "max_memory_bytes": cap, "hard_limit": float(hard),
            "poll_interval": float(poll)}  # fmt: skip


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def find_batch_size(
    settings: Mapping[str, Any],
    trainer: Trainer,
    model: LightningModule,
    datamodule: LightningDataModule,
    output_dir: Path,
) -> int | None:
    """Lightning's batch-size search on the datamodule's ``batch_size``, kept to a memory budget on CPU and to
    the training set's size; writes batch_size_finder.json (the size, why the search stopped, each trial)."""
    memory = memory_settings(settings)
    if trainer.world_size > 1:
        raise ValueError(
            "tune.batch_size runs on one device (Lightning's finder does not support distributed strategies): "
            "run it with trainer.devices=1, then set datamodule.batch_size to what it found."
        )
    if not hasattr(datamodule, "batch_size"):
        raise ValueError(f"tune.batch_size: {type(datamodule).__name__} has no batch_size attribute to scale.")
    initial = datamodule.batch_size
    steps = int(settings.get("steps_per_trial", 3))
    default_max = inspect.signature(BatchSizeFinder.__init__).parameters["max_val"].default  # Lightning's 8192
    max_val = int(settings["max_val"]) if settings.get("max_val") is not None else int(default_max)
    if max_val < 1:
        raise ValueError(f"tune.max_val={max_val} must be a batch size of at least 1 (or null: Lightning's {default_max}).")
    finder = BudgetedBatchSizeFinder(
        mode=settings["batch_size"],
        steps_per_trial=steps,
        init_val=int(settings.get("init_val", 2)),
        max_trials=int(settings.get("max_trials", 25)),
        largest=max_val,
        **memory,
    )
    # Tuner.scale_batch_size, with this finder instead of its plain BatchSizeFinder (it takes no other)
    trainer.callbacks = [finder, *trainer.callbacks]
    report = {"mode": settings["batch_size"], "initial_batch_size": initial, "steps_per_trial": steps}
    report["device"] = str(trainer.strategy.root_device)
    try:
        trainer.fit(model, datamodule=datamodule)
    except ValueError:  # no size fits: the trials that ran say why
        write_json(output_dir / "batch_size_finder.json", {"batch_size": None, **report, **finder.report()})
        raise
    finally:
        trainer.callbacks = [c for c in trainer.callbacks if c is not finder]
    size = finder.optimal_batch_size
    apply = bool(settings.get("apply", True)) and size is not None
    datamodule.batch_size = size if apply else initial
    write_json(
        output_dir / "batch_size_finder.json",
        {"batch_size": size, **report, "applied": apply, **finder.report()},
    )
    log.info(
        "batch-size finder: %s (stopped: %s; %s)", size, finder.stopped,
        "used" if apply else f"not used, training with {initial}",
    )
    return size


def find_lr(
    settings: Mapping[str, Any],
    trainer: Trainer,
    model: LightningModule,
    datamodule: LightningDataModule,
    output_dir: Path,
) -> float | None:
    """``Tuner.lr_find`` (LR range test); writes lr_finder.png and lr_finder.json (``suggestion``)."""
    optimizer_settings = model.hparams.get("optimizer")
    if not isinstance(optimizer_settings, dict) or "lr" not in optimizer_settings:
        raise ValueError(f"tune.lr_find: {type(model).__name__} has no hparams.optimizer.lr to tune.")
    num_training = int(settings.get("num_training", 100))
    finder = Tuner(trainer).lr_find(
        model,
        datamodule=datamodule,
        min_lr=float(settings.get("min_lr", 1e-8)),
        max_lr=float(settings.get("max_lr", 1.0)),
        num_training=num_training,
        mode=settings.get("mode", "exponential"),
        early_stop_threshold=settings.get("early_stop_threshold", 4.0),
        update_attr=False,
    )
    if finder is None:  # fast_dev_run
        return None
    suggestion = finder.suggestion()
    if suggestion is None:
        log.warning(
            "LR finder: no suggestion from %d of tune.num_training=%d steps (it needs more than 11). The end of "
            "trainer.max_epochs or a diverging loss (tune.early_stop_threshold) stops it early.",
            len(finder.results.get("lr", [])), num_training,
        )
    initial = optimizer_settings["lr"]
    apply = bool(settings.get("apply", True)) and suggestion is not None
    if apply:
        optimizer_settings["lr"] = suggestion
    plot_lr_finder(finder, output_dir / "lr_finder.png")
    write_json(
        output_dir / "lr_finder.json",
        {
            "suggestion": suggestion,
            "applied": apply,
            "initial_lr": initial,
            "min_lr": finder.lr_min,
            "max_lr": finder.lr_max,
            "num_training": num_training,
            "mode": finder.mode,
            "lr": [float(v) for v in finder.results["lr"]],
            "loss": [float(v) for v in finder.results["loss"]],
        },
    )
    log.info("LR finder suggests %s (%s)", suggestion, "used" if apply else f"not used, training with {initial}")
    return suggestion


def plot_lr_finder(finder: Any, path: Path) -> Path:
    """Loss against LR with the suggestion marked, drawn with the Agg backend (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    finder.plot(suggest=True, ax=ax)
    suggestion = finder.suggestion()
    title = f"LR finder: suggestion {suggestion:.3g}" if suggestion is not None else "LR finder: no suggestion"
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
