"""``stages:``: several tasks in a row, each in its own sub-directory, each from the previous one's weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.distributed import finish_wandb, is_rank_zero
from core.files import write_json
from tasks.registry import TASKS

log = logging.getLogger(__name__)


# What the next stage starts from, by preference: an exported HF directory, else the best checkpoint.
HANDOFF_KEYS = ("mlm_backbone", "merged_model")


def stage_list(cfg: DictConfig) -> list[dict[str, Any]]:
    """``stages:`` entries: ``name`` (its sub-directory), ``overrides`` (Hydra overrides), ``from_previous``."""
    stages = OmegaConf.to_container(cfg.stages, resolve=False)
    if not isinstance(stages, list) or not stages:
        raise ValueError("stages must be a list of {name, overrides} entries: see conf/experiment/mrc_two_stage.yaml.")
    names = []
    for index, stage in enumerate(stages):
        name = stage.get("name") if isinstance(stage, dict) else None
        overrides = stage.get("overrides", []) if isinstance(stage, dict) else None
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"stages[{index}]: name each stage with letters, digits, '-' or '_' (got {name!r}).")
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise ValueError(f"stages[{index}] ({name}): overrides must be a list of Hydra overrides (k=v).")
        names.append(name)
    if len(set(names)) != len(names):
        raise ValueError(f"stages: names must be unique (got {names}); each one is a sub-directory of the run.")
    return stages


def quote(value: Any) -> str:
    """A path as a Hydra override value (quoted: paths may hold characters the override grammar reserves)."""
    return "'" + str(value).replace("'", "\\'") + "'"


def compose_stage(
    cli: list[str], own: list[str], internal: list[str], name: str
) -> tuple[DictConfig, list[str]]:
    """The stage's config: the command line's overrides, then the stage's own (and ``internal``), which win.

    A command-line override of a key the stage sets is dropped; so is one inside a config group the
    stage switches (``datamodule=mlm_text``) when the new option has no such key. Returns the dropped ones.
    """
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    config_name = HydraConfig.get().job.config_name
    groups = set(GlobalHydra.instance().config_loader().list_groups(""))
    parser = OverridesParser.create()
    try:
        own_keys = {o.key_or_group for o in parser.parse_overrides(own + internal)}
        switched = own_keys & groups
        kept, dropped, unsure = [], [], []
        for override in parser.parse_overrides(cli):
            line, key = override.input_line, override.key_or_group
            if key in own_keys:
                dropped.append(line)
            elif key.split(".")[0] in switched and key not in groups:
                unsure.append((line, override))
            else:
                kept.append(line)
        if unsure:
            probe = compose(config_name=config_name, overrides=kept + own + internal)
            absent = object()
            for line, override in unsure:
                exists = OmegaConf.select(probe, override.key_or_group, default=absent) is not absent
                (kept if exists and not override.is_add() else dropped).append(line)
        stage_cfg = compose(config_name=config_name, overrides=kept + own + internal)
    except (HydraException, OmegaConfBaseException) as error:
        raise ValueError(f"stage {name} (overrides {own}): {error}") from None
    if stage_cfg.task not in TASKS:
        raise ValueError(f"stage {name}: task={stage_cfg.task!r} is unknown: choose one of {', '.join(TASKS)}.")
    return stage_cfg, dropped


def handoff(name: str, stage_dir: Path, metrics: dict[str, Any]) -> tuple[str, str]:
    """(backbone directory, weights) the next stage starts from: tokenizer and encoder stay together."""
    for key in HANDOFF_KEYS:
        if metrics.get(key):
            return str(metrics[key]), str(metrics[key])
    weights = metrics.get("best_checkpoint") or stage_dir / "checkpoints" / "last.ckpt"
    if not Path(weights).exists():
        raise ValueError(f"stage {name} left no checkpoint for the next stage to start from ({weights}).")
    return str(stage_dir / "backbone"), str(weights)


def run_stages(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Run ``cfg.stages`` in order, each in ``<run>/<name>/``, each from the previous stage's weights.

    A later stage loads the previous stage's tokenizer and config (``backbone=local``) and its weights
    (``model.init_from``: an exported directory or the best checkpoint); optimizer and schedule start fresh.
    The run's metrics are the last stage's, plus every stage's under ``stages``.
    """
    from hydra.core.hydra_config import HydraConfig

    if cfg.get("ckpt_path"):
        raise ValueError("ckpt_path= resumes one training run; it is ambiguous for a multi-stage experiment.")
    stages = stage_list(cfg)
    cli = list(HydraConfig.get().overrides.task)

    def internal(index: int, previous: tuple[str, str] | None) -> list[str]:
        """Run dir and tag; unless ``from_previous: false``, the previous stage's backbone and weights."""
        name = stages[index]["name"]
        tags = ",".join(quote(tag) for tag in [*(cfg.get("tags") or []), name])  # loggers tell the stages apart
        out = [f"paths.output_dir={quote(output_dir / name)}", f"tags=[{tags}]"]
        if index > 0 and stages[index].get("from_previous", True):
            backbone_dir, weights = previous or ("<previous stage>", "<previous stage>")
            out += ["backbone=local", f"backbone.name_or_path={quote(backbone_dir)}"]
            out.append(f"model.init_from={quote(weights)}")
        return out

    for index, stage in enumerate(stages):  # every stage composes before the first one trains
        compose_stage(cli, stage.get("overrides", []), internal(index, None), stage["name"])
    results: dict[str, dict[str, Any]] = {}
    previous: tuple[str, str] | None = None
    for index, stage in enumerate(stages):
        name, stage_dir = stage["name"], output_dir / stage["name"]
        stage_cfg, dropped = compose_stage(cli, stage.get("overrides", []), internal(index, previous), name)
        if is_rank_zero():
            stage_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(stage_cfg, stage_dir / "config.yaml", resolve=True)  # what the stage ran with
            print(f"Stage {index + 1}/{len(stages)} {name}: task={stage_cfg.task}, run dir {stage_dir}")
        if dropped:
            log.info("stage %s: command-line overrides it replaces or cannot take: %s", name, dropped)
        try:
            metrics = {"task": stage_cfg.task, "stage": name, **TASKS[stage_cfg.task](stage_cfg, stage_dir)}
        finally:
            finish_wandb()  # one W&B run per stage
        if is_rank_zero():
            write_json(stage_dir / "metrics.json", metrics)
        results[name] = metrics
        if index + 1 < len(stages):
            previous = handoff(name, stage_dir, metrics)
    final = {k: v for k, v in results[stages[-1]["name"]].items() if k not in ("task", "stage")}
    return {**final, "stages": results}
