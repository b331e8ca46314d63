"""Optimisers and LR schedules from config: curves against torch/transformers, clipping and accumulation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback
from omegaconf import OmegaConf
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts
from transformers import (
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from models.optim import build_optimizer, build_scheduler, parameter_groups
from tasks.build import build_run
from tests.conftest import ROOT, TINY_RUN
from tests.test_configs import compose_config

BASE_LR = 0.1
TOTAL = 60


def option(group: str, name: str, **settings: Any) -> dict[str, Any]:
    """The shipped ``model/<group>=<name>`` option (conf/model/<group>/<name>.yaml) with ``settings`` on top."""
    node = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / group / f"{name}.yaml"))
    return {**node, **settings}


def _optimizer(lr: float = BASE_LR) -> torch.optim.Optimizer:
    return torch.optim.AdamW(nn.Linear(3, 2).parameters(), lr=lr)


def _curve(scheduler: Any, optimizer: torch.optim.Optimizer, steps: int = TOTAL) -> list[float]:
    """The LR used by each of ``steps`` optimiser steps (Lightning steps the scheduler after each one)."""
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def _ours(name: str, steps: int = TOTAL, **settings: Any) -> list[float]:
    optimizer = _optimizer()
    config = build_scheduler(optimizer, option("scheduler", name, **settings), total_steps=TOTAL)
    assert config["interval"] == "step" and config["frequency"] == 1
    return _curve(config["scheduler"], optimizer, steps)


@pytest.mark.parametrize(
    ("settings", "reference"),
    [
        ({"name": "linear", "warmup_ratio": 0.1}, lambda o: get_linear_schedule_with_warmup(o, 6, TOTAL)),
        ({"name": "linear", "warmup_steps": 7, "warmup_ratio": 0.5}, lambda o: get_linear_schedule_with_warmup(o, 7, TOTAL)),
        ({"name": "cosine", "warmup_ratio": 0.05}, lambda o: get_cosine_schedule_with_warmup(o, 3, TOTAL)),
        ({"name": "constant", "warmup_steps": 5}, lambda o: get_constant_schedule_with_warmup(o, 5)),
        ({"name": "constant", "warmup_steps": 0}, get_constant_schedule),
        ({"name": "cosine", "warmup_steps": 4, "kwargs": {"num_cycles": 1.5}},
         lambda o: get_cosine_schedule_with_warmup(o, 4, TOTAL, num_cycles=1.5)),
    ],
    ids=["linear", "linear-warmup-steps-win", "cosine", "constant-with-warmup", "constant", "cosine-kwargs"],
)
def test_transformers_schedules_match_their_reference(settings: dict, reference) -> None:
    optimizer = _optimizer()
    expected = _curve(reference(optimizer), optimizer)
    assert _ours(**settings) == pytest.approx(expected, abs=1e-12)


def test_linear_schedule_closed_form() -> None:
    """Independent of transformers: 0 -> peak over the warmup, then straight down to 0 at the last step."""
    lrs = _ours("linear", warmup_ratio=0.1)
    expected = [BASE_LR * (s / 6 if s < 6 else (TOTAL - s) / (TOTAL - 6)) for s in range(TOTAL)]
    assert lrs == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("t_0", "t_mult", "eta_min"), [(8, 1, 0.0), (5, 2, 0.01)])
def test_cosine_warm_restarts_is_torchs_schedule_after_a_linear_warmup(t_0: int, t_mult: int, eta_min: float) -> None:
    warmup = 4
    lrs = _ours("cosine_warm_restarts", warmup_steps=warmup, T_0=t_0, T_mult=t_mult, eta_min=eta_min)
    assert lrs[:warmup] == pytest.approx([BASE_LR * s / warmup for s in range(warmup)], abs=1e-12)
    reference_optimizer = _optimizer()
    reference = CosineAnnealingWarmRestarts(reference_optimizer, T_0=t_0, T_mult=t_mult, eta_min=eta_min)
    assert lrs[warmup:] == pytest.approx(_curve(reference, reference_optimizer, TOTAL - warmup), abs=1e-12)
    # closed form: restarts to the peak at warmup + T_0, warmup + T_0 + T_0*T_mult, ...
    restart, cycle = warmup, t_0
    while restart < TOTAL:
        assert lrs[restart] == pytest.approx(BASE_LR)
        middle = restart + cycle // 2
        if middle < TOTAL and cycle % 2 == 0:
            assert lrs[middle] == pytest.approx(eta_min + (BASE_LR - eta_min) / 2)
        restart, cycle = restart + cycle, cycle * t_mult


def test_cosine_warm_restarts_without_warmup_or_t0() -> None:
    no_warmup = _ours("cosine_warm_restarts", warmup_steps=0, T_0=10)
    optimizer = _optimizer()
    assert no_warmup == pytest.approx(_curve(CosineAnnealingWarmRestarts(optimizer, T_0=10), optimizer), abs=1e-12)
    # T_0 null: one cosine cycle over the steps after the warmup, the same curve as transformers' cosine
    one_cycle = _ours("cosine_warm_restarts", warmup_steps=6, T_0=None)
    optimizer = _optimizer()
    expected = _curve(get_cosine_schedule_with_warmup(optimizer, 6, TOTAL), optimizer)
    assert one_cycle == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("name", ["linear", "cosine_warm_restarts"])
def test_schedule_state_round_trips_mid_training(name: str) -> None:
    """What a resumed run relies on: scheduler + optimiser state saved at step 17 continue the same curve."""
    settings = option("scheduler", name, warmup_steps=5, T_0=6, T_mult=2)
    full = _ours(name, warmup_steps=5, T_0=6, T_mult=2)
    first_optimizer = _optimizer()
    first = build_scheduler(first_optimizer, settings, TOTAL)["scheduler"]
    _curve(first, first_optimizer, 17)
    optimizer = _optimizer()
    resumed = build_scheduler(optimizer, settings, TOTAL)["scheduler"]
    optimizer.load_state_dict(first_optimizer.state_dict())
    resumed.load_state_dict(first.state_dict())
    assert _curve(resumed, optimizer, TOTAL - 17) == pytest.approx(full[17:], abs=1e-12)


def test_none_and_unknown_schedules() -> None:
    assert build_scheduler(_optimizer(), option("scheduler", "none"), TOTAL) is None
    with pytest.raises(ValueError, match=r"model.scheduler._target_='transformers.get_cosine_warmup' cannot be "
                                         r"imported.*cosine_warm_restarts"):
        build_scheduler(_optimizer(), {"_target_": "transformers.get_cosine_warmup"}, TOTAL)
    with pytest.raises(ValueError, match=r"model.scheduler.T_0"):
        build_scheduler(_optimizer(), option("scheduler", "cosine_warm_restarts", T_0=0), TOTAL)
    with pytest.raises(ValueError, match=r"model.scheduler.T_mult"):
        build_scheduler(_optimizer(), option("scheduler", "cosine_warm_restarts", T_0=5, T_mult=0), TOTAL)
    # the old spelling stops with the new one
    with pytest.raises(ValueError, match=r"model.scheduler.name: cosine is the old spelling.*model/scheduler=cosine"):
        build_scheduler(_optimizer(), {"name": "cosine", "warmup_ratio": 0.1}, TOTAL)


def test_schedule_keys_it_does_not_take_are_left_out() -> None:
    """An experiment's T_0 under model/scheduler=linear is ignored, as before the options were classes."""
    assert _ours("linear", warmup_ratio=0.1, T_0=50, eta_min=0.1) == pytest.approx(_ours("linear", warmup_ratio=0.1))


def test_optimizer_by_target_with_its_own_arguments() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    adamw = build_optimizer(model, option("optimizer", "adamw", lr=1e-3, weight_decay=0.1, betas=[0.9, 0.98], eps=1e-6))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.9, 0.98)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.1, 0.0]
    assert len(adamw.param_groups[0]["params"]) == 1  # only the Linear weight decays
    # null keys are left to the optimiser (an experiment's AdamW betas/eps do not fit SGD)
    sgd = build_optimizer(model, option("optimizer", "sgd", lr=0.5, momentum=0.9, betas=None, eps=None))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    adam = build_optimizer(model, option("optimizer", "adam", lr=0.5))
    assert type(adam) is torch.optim.Adam and adam.defaults["lr"] == 0.5
    with pytest.raises(ValueError, match=r"model.optimizer.betas is not an argument of torch.optim.SGD"):
        build_optimizer(model, option("optimizer", "sgd", lr=0.5, betas=[0.9, 0.9]))
    with pytest.raises(ValueError, match=r"model.optimizer._target_='torch.optim.Lion' cannot be imported.*adamw"):
        build_optimizer(model, {"_target_": "torch.optim.Lion", "lr": 0.5})
    with pytest.raises(ValueError, match=r"model.optimizer.name: lion is the old spelling.*model/optimizer=lion"):
        build_optimizer(model, {"name": "lion", "lr": 0.5})
    assert len(parameter_groups(model, 0.0)[1]["params"]) == 3  # Linear bias + LayerNorm weight and bias


# ----------------------------------------------------------------------------- in a real Trainer


class GradientProbe(Callback):
    """Records, after every batch, the gradient norm the optimiser saw and the optimiser step count."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.steps: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        grads = [p.grad.detach().flatten() for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.cat(grads).norm()) if grads else 0.0)
        self.steps.append(trainer.global_step)


def _train(tmp_path: Path, *overrides: str) -> tuple[Any, GradientProbe]:
    cfg = compose_config(
        [*TINY_RUN, "logger=none", "callbacks.early_stopping=null", "callbacks.model_checkpoint=null",
         "trainer.num_sanity_val_steps=0",
         "trainer.limit_val_batches=0", "trainer.limit_train_batches=4", "callbacks.progress_bar=null",
         f"paths.cache_dir={tmp_path / 'cache'}", *overrides],
        tmp_path / "run",
    )
    run = build_run(cfg)
    probe = GradientProbe()
    run["trainer"].callbacks.append(probe)
    run["trainer"].fit(run["model"], datamodule=run["datamodule"])
    return run["trainer"], probe


def test_gradient_clipping_takes_effect(tmp_path: Path) -> None:
    _, free = _train(tmp_path / "free", "trainer.gradient_clip_val=null")
    _, clipped = _train(tmp_path / "clipped", "trainer.gradient_clip_val=0.001")
    assert min(free.norms) > 0.01  # unclipped gradients of a fresh model are far larger than the threshold
    assert all(0 < n <= 0.001 * (1 + 1e-4) for n in clipped.norms), clipped.norms


def test_gradient_accumulation_steps_every_n_batches(tmp_path: Path) -> None:
    trainer, probe = _train(tmp_path, "trainer.accumulate_grad_batches=2", "model/scheduler=linear")
    assert probe.steps == [0, 1, 1, 2]
    assert trainer.global_step == 2
    # the schedule is sized in optimiser steps: 4 batches / 2 = 2 (it decays to 0 at the last step)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == 2 and math.isclose(scheduler.get_last_lr()[0], 0.0, abs_tol=1e-12)
