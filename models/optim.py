"""Optimiser and LR-schedule glue shared by every LightningModule of the framework.

``model.optimizer`` names any ``torch.optim`` optimiser (AdamW by default); ``model.scheduler`` names a
schedule that Lightning steps once per optimiser step: any transformers schedule (``linear``, ``cosine``,
``constant``, ``polynomial`` ...) or ``cosine_warm_restarts`` (torch's CosineAnnealingWarmRestarts after a
linear warmup). Warmup is ``warmup_steps`` or ``warmup_ratio`` of ``trainer.estimated_stepping_batches``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, LambdaLR, LRScheduler, SequentialLR
from transformers import SchedulerType, get_scheduler
from transformers.pytorch_utils import ALL_LAYERNORM_LAYERS
from transformers.trainer_pt_utils import get_parameter_names

# HF Trainer's rule: no weight decay inside LayerNorm layers nor on parameters named like a bias or a norm.
NO_DECAY_NAME_PATTERNS = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    cls.__name__.lower(): cls
    for cls in vars(torch.optim).values()
    if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer
}
# Schedules this module builds itself; every other name goes to transformers.get_scheduler.
OWN_SCHEDULES = ("cosine_warm_restarts",)
# Need a monitored metric or a plain optimiser step, not a per-step LambdaLR: not offered.
UNSUPPORTED_SCHEDULES = ("reduce_lr_on_plateau", "greedy")
SCHEDULES = tuple(
    sorted({t.value for t in SchedulerType} - set(UNSUPPORTED_SCHEDULES) | set(OWN_SCHEDULES) | {"none"})
)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups with no weight decay on biases and normalisation weights (BERT recipe, as HF Trainer)."""
    decay_names = set(get_parameter_names(model, ALL_LAYERNORM_LAYERS, list(NO_DECAY_NAME_PATTERNS)))
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if name in decay_names else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, settings: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``model.optimizer``: ``name`` (any torch.optim class, case-insensitive) plus its arguments.

    ``weight_decay`` goes to the decayed parameter group only; a key set to null is left to the
    optimiser's default (``model.optimizer.betas=null`` before switching to ``name=sgd``).
    """
    settings = {key: value for key, value in dict(settings).items() if value is not None}
    name = str(settings.pop("name", "adamw")).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"model.optimizer.name={name!r} is unknown: choose one of {', '.join(sorted(OPTIMIZERS))}.")
    cls = OPTIMIZERS[name]
    signature = inspect.signature(cls).parameters
    default_decay = signature["weight_decay"].default if "weight_decay" in signature else 0.0
    weight_decay = float(settings.pop("weight_decay", default_decay))
    accepted = set(signature) - {"params"}
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise ValueError(
            f"model.optimizer.{unknown[0]} is not an argument of torch.optim.{cls.__name__} "
            f"(it takes {', '.join(sorted(accepted))}): set model.optimizer.{unknown[0]}=null."
        )
    if "betas" in settings:
        settings["betas"] = tuple(settings["betas"])
    return cls(parameter_groups(model, weight_decay), **settings)


def warmup_steps(settings: Mapping[str, Any], total_steps: int) -> int:
    """``warmup_steps`` wins over ``warmup_ratio`` (a share of all optimiser steps)."""
    if settings.get("warmup_steps") is not None:
        return int(settings["warmup_steps"])
    return math.ceil(float(settings.get("warmup_ratio") or 0.0) * total_steps)


def cosine_warm_restarts(
    optimizer: torch.optim.Optimizer, warmup: int, t_0: int, t_mult: int = 1, eta_min: float = 0.0
) -> LRScheduler:
    """Linear warmup from 0 over ``warmup`` steps, then SGDR cycles of ``t_0``, ``t_0 * t_mult`` ... steps."""
    if not isinstance(t_0, int) or t_0 < 1:
        raise ValueError(f"model.scheduler.T_0={t_0!r} must be a positive number of optimiser steps.")
    if not isinstance(t_mult, int) or t_mult < 1:
        raise ValueError(f"model.scheduler.T_mult={t_mult!r} must be an integer >= 1 (1: cycles of equal length).")
    restarts = CosineAnnealingWarmRestarts(optimizer, T_0=t_0, T_mult=t_mult, eta_min=eta_min)
    if warmup <= 0:
        return restarts
    ramp = LambdaLR(optimizer, lambda step: step / warmup)
    return SequentialLR(optimizer, [ramp, restarts], milestones=[warmup])


def build_scheduler(
    optimizer: torch.optim.Optimizer, settings: Mapping[str, Any], total_steps: int
) -> dict[str, Any] | None:
    """``model.scheduler``: ``name``, ``warmup_ratio``|``warmup_steps``, schedule extras.

    ``constant`` keeps the warmup (transformers' ``constant_with_warmup``); ``cosine_warm_restarts`` reads
    ``T_0`` (steps of the first cycle after warmup; null: one cycle over the rest of training), ``T_mult``
    and ``eta_min``; ``kwargs`` go to the transformers schedule (``num_cycles``, ``power``, ``lr_end`` ...).
    Returns Lightning's lr_scheduler dict stepped every optimiser step, or None for ``name: none``.
    """
    name = settings.get("name") or "none"
    if name not in SCHEDULES:
        raise ValueError(f"model.scheduler.name={name!r} is unknown: choose one of {', '.join(SCHEDULES)}.")
    if name == "none":
        return None
    warmup = warmup_steps(settings, total_steps)
    if name == "cosine_warm_restarts":
        t_0 = settings.get("T_0")
        scheduler = cosine_warm_restarts(
            optimizer,
            warmup,
            t_0=int(t_0) if t_0 is not None else max(total_steps - warmup, 1),
            t_mult=int(1 if settings.get("T_mult") is None else settings["T_mult"]),
            eta_min=float(settings.get("eta_min") or 0.0),
        )
    else:
        if name == "constant" and warmup > 0:
            name = "constant_with_warmup"
        scheduler = get_scheduler(
            name,
            optimizer,
            num_warmup_steps=warmup,
            num_training_steps=total_steps,
            scheduler_specific_kwargs=dict(settings.get("kwargs") or {}) or None,
        )
    return {"scheduler": scheduler, "interval": "step", "frequency": 1, "name": "lr"}


def optimization(
    model: nn.Module, optimizer: Mapping[str, Any], scheduler: Mapping[str, Any], total_steps: int
) -> Any:
    """What every LightningModule's ``configure_optimizers`` returns: the optimiser, with its schedule."""
    built = build_optimizer(model, optimizer)
    schedule = build_scheduler(built, scheduler, total_steps)
    return built if schedule is None else {"optimizer": built, "lr_scheduler": schedule}
