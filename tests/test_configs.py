"""Every config composes, and the parts that can be built offline are built."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tasks.build import build_callbacks, build_loggers
from tasks.registry import TASKS
from tasks.runner import compose_config
from tests.conftest import ROOT

CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
GROUP_OPTIONS = [
    (group, p.stem)
    for group in ("backbone", "datamodule", "model", "trainer", "logger", "callbacks", "retriever")
    for p in sorted((CONF / group).glob("*.yaml"))
]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(experiment: str, tmp_path: Path) -> None:
    cfg = compose_config([f"+experiment={experiment}"], tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["paths"]["output_dir"] == str(tmp_path)
    assert resolved["task"] in TASKS


def test_mrc_curriculum_uses_length_order(tmp_path: Path) -> None:
    cfg = compose_config(["+experiment=mrc_curriculum"], tmp_path)
    assert cfg.datamodule.curriculum.name == "length"
    assert cfg.datamodule.curriculum.ascending is True


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_group_option_composes(group: str, option: str, tmp_path: Path) -> None:
    overrides = [f"{group}={option}"]
    if option in ("pretrained", "local"):
        overrides.append("backbone.name_or_path=some/model")
    if option in ("korquad", "klue_mrc"):
        overrides += ["datamodule.train_file=t.json", "datamodule.validation_file=v.json"]
    cfg = compose_config(overrides, tmp_path)
    OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("option", ["default", "cpu"])
def test_trainer_callbacks_and_loggers_instantiate(option: str, tmp_path: Path) -> None:
    cfg = compose_config([f"trainer={option}", "logger=csv"], tmp_path)
    loggers = build_loggers(cfg)
    callbacks = build_callbacks(cfg, has_logger=True)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    assert trainer.max_epochs == cfg.trainer.max_epochs
    names = {type(c).__name__ for c in trainer.callbacks}
    assert {"ModelCheckpoint", "LearningRateMonitor", "TrainThroughput", "EarlyStopping"} <= names


def test_logger_none_drops_the_lr_monitor(tmp_path: Path) -> None:
    cfg = compose_config(["logger=none"], tmp_path)
    assert build_loggers(cfg) == []
    names = {type(c).__name__ for c in build_callbacks(cfg, has_logger=False)}
    assert "LearningRateMonitor" not in names and "ModelCheckpoint" in names


def test_wandb_logger_is_offline_without_an_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = compose_config(["logger=wandb"], tmp_path)
    (logger,) = build_loggers(cfg)
    assert logger._offline is True
    assert not any("api_key" in str(k).lower() for k in OmegaConf.to_container(cfg.logger, resolve=True)["wandb"])
