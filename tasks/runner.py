"""Run one composed config: the task verb (or the stages), then metrics.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.config import CONF_DIR, register_resolvers
from core.distributed import finish_wandb, is_rank_zero
from core.files import write_json
from tasks.build import print_config
from tasks.registry import TASKS
from tasks.stages import run_stages

log = logging.getLogger(__name__)


def run_task(cfg: DictConfig) -> dict[str, Any]:
    if cfg.task not in TASKS:
        raise ValueError(f"task={cfg.task!r} is unknown: choose one of {', '.join(TASKS)}.")
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("print_config", True) and is_rank_zero():
        print_config(cfg)
    if is_rank_zero():
        print(f"Run dir: {output_dir}")
    try:
        metrics = run_stages(cfg, output_dir) if cfg.get("stages") else TASKS[cfg.task](cfg, output_dir)
    finally:
        finish_wandb()
    metrics = {"task": cfg.task, **metrics}
    if is_rank_zero():
        write_json(output_dir / "metrics.json", metrics)
        print(json.dumps(metrics, ensure_ascii=False, indent=2))
    return metrics


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config ``python main.py <overrides>`` would run with, run dir ``output_dir`` (Hydra's compose API):
    for tests and benchmarks that build a run in-process."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"hydra.run.dir={output_dir}"], return_hydra_config=True)
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg
