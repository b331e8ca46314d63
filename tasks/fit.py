"""``task=fit``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tasks.build import (
    build_run,
    checkpoint_arg,
    eval_metrics,
    preflight,
    verify_checkpoint,
)
from tasks.outputs import (
    export_artifacts,
    export_best,
    metric_name,
    reader_metric,
    save_predictions,
    save_test_predictions,
)

log = logging.getLogger(__name__)


def task_fit(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Train (resuming from ``ckpt_path`` when given), then validate the best checkpoint."""
    preflight(cfg, "train", "validation", "test")  # before the imports below: a bad file fails in a second
    metric_name(cfg)
    ckpt = checkpoint_arg(cfg)
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from callbacks.resume import interrupt_exit_code, stop_requested
    from callbacks.run_metrics import RunMetricsCallback
    from callbacks.tuning import tune

    run = build_run(cfg)
    verify_checkpoint(ckpt, run)
    backbone = run["backbone"]
    if not (ckpt or backbone.weights or backbone.source == "tiny" or cfg.model.get("init_from")):
        log.warning(  # backbone=local of a run's backbone/ (config and tokenizer only): say so, not silently
            "backbone.name_or_path=%s holds no weight files: training starts from random weights "
            "(set model.init_from= or ckpt_path= for trained ones)", backbone.source,
        )
    trainer, model, datamodule = run["trainer"], run["model"], run["datamodule"]
    tuning = OmegaConf.to_container(cfg.tune, resolve=True) if cfg.get("tune") else {}
    if cfg.get("ckpt_path") and (tuning.get("lr_find") or tuning.get("batch_size")):
        log.warning("resuming from ckpt_path: tune.* is skipped (the checkpoint holds the LR and the batch order)")
    elif tuning:
        tune(tuning, trainer, model, datamodule, output_dir)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    except SIGTERMException:  # Ctrl-C or SIGTERM: callbacks.last_checkpoint wrote last.ckpt
        raise SystemExit(interrupt_exit_code(trainer)) from None
    if stop_requested(trainer):  # asked to stop after Lightning's last check: stop all the same (last.ckpt is written)
        raise SystemExit(interrupt_exit_code(trainer))
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
    results = trainer.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True)
    metrics: dict[str, Any] = eval_metrics(results)
    for callback in trainer.callbacks:  # callbacks that measure the run (throughput, padding) add their numbers
        if isinstance(callback, RunMetricsCallback):
            metrics.update(callback.run_metrics())
    metrics["best_checkpoint"] = best
    metrics["global_step"] = trainer.global_step
    save_predictions(run, output_dir)
    metrics.update(reader_metric(cfg, run))
    metrics.update(export_artifacts(run, output_dir))  # after validate(ckpt_path=best): the best weights
    metrics.update(export_best(cfg, run, output_dir, best))
    metrics.update(save_test_predictions(cfg, run, output_dir, best))
    return metrics
