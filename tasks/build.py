"""Build a run from its config: backbone -> datamodule -> model -> trainer, and the checks before it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.distributed import in_multirun, is_rank_zero

log = logging.getLogger(__name__)


def print_config(cfg: DictConfig) -> None:
    """The composed config as a rich tree, one branch per config group."""
    import rich
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for key, value in cfg.items():
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(str(key)).add(Syntax(text, "yaml", theme="ansi_dark", word_wrap=True))
    rich.print(tree)


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list[Any]:
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import LearningRateMonitor

    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None or "_target_" not in node:
            continue
        callback = instantiate(node)
        if isinstance(callback, LearningRateMonitor) and not has_logger:
            log.info("logger=none: leaving out the %s callback, which needs a logger", name)
            continue
        callbacks.append(callback)
    return callbacks


def build_loggers(cfg: DictConfig) -> list[Any]:
    from hydra.utils import instantiate

    return [instantiate(node) for node in (cfg.get("logger") or {}).values() if node and "_target_" in node]


def build_run(cfg: DictConfig) -> dict[str, Any]:
    """Backbone -> datamodule -> model -> trainer, each from its config group."""
    from hydra.utils import instantiate
    from lightning.pytorch import seed_everything

    from tasks.difficulty import attach_difficulty
    from tasks.negatives import attach_negatives
    from tasks.retriever_data import attach_retrieval_data

    seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    backbone = build_backbone(cfg)
    if is_rank_zero():  # under DDP every process builds the run; one writes it
        backbone.save(output_dir / "backbone")
    datamodule = instantiate(cfg.datamodule, tokenizer=backbone.tokenizer, _convert_="all")
    datamodule = attach_negatives(attach_difficulty(datamodule), cfg.get("retriever") or {})
    datamodule = attach_retrieval_data(datamodule, cfg.get("retriever") or {})
    check_contract(cfg, "datamodule", datamodule)
    model = instantiate(cfg.model, backbone=backbone, **model_arguments(cfg, datamodule), _convert_="all")
    check_contract(cfg, "model", model)
    loggers = build_loggers(cfg)
    callbacks = build_callbacks(cfg, has_logger=bool(loggers))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    if trainer.world_size > 1 and in_multirun():
        raise ValueError(
            "DDP re-runs main.py's command line once per process, which would start the whole sweep again: "
            "run multi-process trainers as single runs (no -m, no hparams_search)."
        )
    for logger in trainer.loggers:  # the resolved config is every logger's run config (W&B's too)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return {"backbone": backbone, "datamodule": datamodule, "model": model, "trainer": trainer}


def build_backbone(cfg: DictConfig) -> Any:
    """``cfg.backbone``; a pretrained name that cannot be loaded (offline, typo) is one clear error."""
    from hydra.utils import instantiate

    from models.safe_loading import pretrained_load_error

    try:
        return instantiate(cfg.backbone, _convert_="all")
    except Exception as error:
        name = cfg.backbone.get("name_or_path")
        clear = pretrained_load_error("backbone.name_or_path", str(name), error) if name else None
        if clear is None:
            raise
        raise clear from None


def check_contract(cfg: DictConfig, group: str, built: Any) -> None:
    """The one check of what the verbs rely on (core/contracts.py): the configured class subclasses the base that
    implements it, so nothing later probes for attributes."""
    from datamodules.base import TaskDataModule
    from models.base import TaskModule

    base = {"datamodule": TaskDataModule, "model": TaskModule}[group]
    if not isinstance(built, base):
        raise ValueError(f"{group}._target_={cfg[group].get('_target_')} built a {type(built).__name__}, not a "
                         f"{base.__module__}.{base.__name__}: subclass it (docs/extending.md).")


def model_arguments(cfg: DictConfig, datamodule: Any) -> dict[str, Any]:
    """What the datamodule knows and the model needs (a classifier's classes, read from the training data)."""
    provided = datamodule.model_arguments()
    unknown = [key for key in provided if key not in cfg.model]
    if unknown:
        raise ValueError(
            f"{type(datamodule).__name__} gives the model {unknown}, which {cfg.model.get('_target_')} does not take: "
            "a classification datamodule needs model=classifier (real-valued labels: datamodule=regression "
            "model=regressor)."
        )
    return provided


def require(cfg: DictConfig, key: str, why: str) -> Any:
    value = OmegaConf.select(cfg, key)
    if value in (None, ""):
        raise ValueError(f"task={cfg.task} needs {key}=...: {why}")
    return value


def preflight(cfg: DictConfig, *splits: str) -> None:
    """Let the datamodule check the task's files before anything slow (tokenizer training, model download).

    A bad record then costs a second, not the minutes before the datamodule reaches it (or, for ``test_file`` in
    ``task=fit``, the whole training run). The datamodule's class says what it checks
    (``TaskDataModule.check_files``: the MRC datamodule reads its files; the others check theirs in setup).
    """
    from hydra.utils import get_class

    from datamodules.base import TaskDataModule

    node = cfg.datamodule
    target = node.get("_target_") if node is not None else None
    if not target:
        return
    datamodule_class = get_class(str(target))
    if isinstance(datamodule_class, type) and issubclass(datamodule_class, TaskDataModule):
        datamodule_class.check_files(node, splits)  # a DictConfig is a Mapping; values resolve when read


def checkpoint_arg(cfg: DictConfig, why: str | None = None) -> str | None:
    """``ckpt_path`` (required when ``why`` says what for), checked to be a file before anything slow runs."""
    from models.safe_loading import existing_checkpoint

    ckpt = require(cfg, "ckpt_path", why) if why else cfg.get("ckpt_path")
    return existing_checkpoint(ckpt) if ckpt else None


def verify_checkpoint(ckpt: str | None, run: dict[str, Any]) -> None:
    """Refuse a checkpoint of another tokenizer or model before Lightning loads it (weights only, no pickle)."""
    from models.safe_loading import check_checkpoint

    if ckpt:
        check_checkpoint(ckpt, run["model"], run["backbone"].tokenizer)


def eval_metrics(results: list[dict[str, Any]], prefix: str = "val") -> dict[str, float]:
    """Lightning's logged ``val_*`` values under the public names ``exact_match`` and ``f1``."""
    merged = {k: float(v) for result in results for k, v in result.items()}
    out: dict[str, Any] = {k.removeprefix(f"{prefix}_"): v for k, v in merged.items() if k.startswith(f"{prefix}_")}
    out["examples"] = int(out.pop("examples", 0))
    if "examples_total" in out:  # partial validation: which examples the scores cover (models/eval_coverage.py)
        from models.eval_coverage import describe_subset

        counts = {k: int(out[k]) for k in ("examples_total", "examples_missing", "examples_partial") if k in out}
        out.update(counts)
        out["subset"] = describe_subset(
            out["examples"], counts["examples_total"], counts["examples_missing"], counts.get("examples_partial", 0)
        )
    return out
