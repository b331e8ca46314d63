"""Lightning's Tuner before ``task=fit`` trains: an LR range test and a batch-size search (``tune:`` config).

Both write what they found to the run directory (``lr_finder.png``, ``lr_finder.json``,
``batch_size_finder.json``) and, unless ``tune.apply=false``, train with it: the suggested LR goes into
``model.hparams.optimizer.lr`` (so the checkpoint records it) and the batch size into the datamodule's
``batch_size``. The batch size is searched first, as the best LR depends on it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.tuner import Tuner

from datamodules.files import write_json

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


def find_batch_size(
    settings: Mapping[str, Any],
    trainer: Trainer,
    model: LightningModule,
    datamodule: LightningDataModule,
    output_dir: Path,
) -> int | None:
    """``Tuner.scale_batch_size`` on the datamodule's ``batch_size``; writes batch_size_finder.json."""
    if trainer.world_size > 1:
        raise ValueError(
            "tune.batch_size runs on one device (Lightning's finder does not support distributed strategies): "
            "run it with trainer.devices=1, then set datamodule.batch_size to what it found."
        )
    if not hasattr(datamodule, "batch_size"):
        raise ValueError(f"tune.batch_size: {type(datamodule).__name__} has no batch_size attribute to scale.")
    initial = datamodule.batch_size
    extra = {"max_val": int(settings["max_val"])} if settings.get("max_val") is not None else {}
    size = Tuner(trainer).scale_batch_size(
        model,
        datamodule=datamodule,
        mode=settings["batch_size"],
        steps_per_trial=int(settings.get("steps_per_trial", 3)),
        init_val=int(settings.get("init_val", 2)),
        max_trials=int(settings.get("max_trials", 25)),
        batch_arg_name="batch_size",
        **extra,
    )
    apply = bool(settings.get("apply", True)) and size is not None
    datamodule.batch_size = size if apply else initial
    write_json(
        output_dir / "batch_size_finder.json",
        {
            "batch_size": size,
            "mode": settings["batch_size"],
            "initial_batch_size": initial,
            "applied": apply,
            "steps_per_trial": int(settings.get("steps_per_trial", 3)),
            "device": str(trainer.strategy.root_device),
        },
    )
    log.info("batch-size finder: %s (%s)", size, "used" if apply else f"not used, training with {initial}")
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
