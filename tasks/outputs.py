"""What a finished run writes: predictions, MRC scores, exported weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from core.files import write_json

log = logging.getLogger(__name__)


def save_predictions(run: dict[str, Any], output_dir: Path) -> None:
    model, trainer = run["model"], run["trainer"]
    if trainer.is_global_zero and model.last_predictions is not None:  # a masked LM predicts no answers
        write_json(output_dir / "predictions.json", model.last_predictions)
        if model.last_nbest is not None:  # the reader's n-best spans; a classifier's records hold probabilities
            write_json(output_dir / "nbest_predictions.json", model.last_nbest)


def metric_name(cfg: DictConfig) -> str:
    """``metric=`` (default korquad), checked: tasks call it first, so a mistyped name fails before any work."""
    from models.mrc_metrics import check_metric

    return check_metric(str(cfg.get("metric") or "korquad"))


def reader_metric(cfg: DictConfig, run: dict[str, Any]) -> dict[str, Any]:
    """``metric=klue_mrc`` or ``squad`` on a reader's validation predictions (under that name in metrics.json),
    beside the KorQuAD EM/F1 that training logs and checkpoints on; the questions scored are those predicted."""
    metric = metric_name(cfg)
    model, datamodule = run["model"], run["datamodule"]
    if metric == "korquad" or model.last_nbest is None:  # only a reader has n-best spans
        return {}
    if not run["trainer"].is_global_zero:
        return {}
    predictions = model.last_predictions
    examples = [ex for ex in datamodule.load_examples("validation", True) if ex["id"] in predictions]
    folds = cfg.datamodule.get("n_folds") is not None  # K-fold: the held-out fold of train_file, no question types
    gold = None if folds else cfg.datamodule.get("validation_file")
    return {metric: mrc_scores(cfg, examples, predictions, gold, cfg.datamodule.get("validation_split"))}


def mrc_scores(
    cfg: DictConfig, examples: list[Any], predictions: dict[str, str], gold_path: Any, split: str | None
) -> dict[str, Any]:
    """``metric=`` (korquad | klue_mrc | squad) scores on ``examples``, per ``question_type`` when the gold has it."""
    from datamodules.mrc_formats import question_types
    from models.mrc_metrics import score_against

    types = question_types(gold_path, split=split) if gold_path else None
    return score_against(examples, predictions, metric_name(cfg), types)


def save_test_predictions(cfg: DictConfig, run: dict[str, Any], output_dir: Path, ckpt: str | None) -> dict[str, Any]:
    """fit with ``datamodule.test_file``: that file's predictions too (``test_predictions.json``), e.g. per K-fold run."""
    model, trainer = run["model"], run["trainer"]
    if not cfg.datamodule.get("test_file") or model.last_predictions is None:
        return {}
    trainer.predict(model, datamodule=run["datamodule"], ckpt_path=ckpt, return_predictions=False, weights_only=True)
    if trainer.is_global_zero:
        write_json(output_dir / "test_predictions.json", model.last_predictions)
        if model.last_nbest is not None:  # a reader's n-best spans: what soft voting of K-fold readers reads
            write_json(output_dir / "test_nbest_predictions.json", model.last_nbest)
    return {"test_predictions": len(model.last_predictions)}


def export_artifacts(run: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """What a module writes besides checkpoints (``mlm_backbone/``, LoRA ``merged/``), from its weights.

    Rank 0 writes; the broadcast gives every rank the paths once they exist (a next stage loads them).
    """
    trainer = run["trainer"]
    return trainer.strategy.broadcast(run["model"].export_artifacts(output_dir) if trainer.is_global_zero else {})


def export_best(cfg: DictConfig, run: dict[str, Any], output_dir: Path, source: str | None) -> dict[str, Any]:
    """``<run>/<export.dir>/``: the weights held now (the best checkpoint's) in HF format (models/export.py)."""
    from models.export import unexportable

    if not (cfg.get("export") or {}).get("enabled", True):
        return {}
    reason = unexportable(run["model"])
    if reason:
        log.info("export: no HF-format directory: %s", reason)
        return {}
    trainer = run["trainer"]
    out = hf_export(cfg, run["model"], output_dir, source or "the final weights") if trainer.is_global_zero else {}
    return trainer.strategy.broadcast(out)


def hf_export(cfg: DictConfig, model: Any, output_dir: Path, source: str) -> dict[str, Any]:
    """``export_hf`` with the ``export.*`` settings."""
    from models.export import export_hf

    node = cfg.get("export") or {}
    directory = output_dir / str(node.get("dir") or "hf_model")
    return export_hf(model, directory, merge_lora=bool(node.get("merge_lora", True)), source=source)
