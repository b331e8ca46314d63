"""The optimiser and LR schedule of every module, from the ``model/optimizer`` and ``model/scheduler`` options.

``model.optimizer`` names an optimiser class by ``_target_`` (``torch.optim.AdamW`` by default; any class
called as ``cls(parameter_groups, **keys)``). ``model.scheduler`` names a function or class that Lightning steps
once per optimiser step: transformers' schedules (``linear``, ``cosine``, ``constant`` ...),
:func:`cosine_warm_restarts`, :func:`no_schedule`, or a user's own. The framework keeps three keys of a schedule
node for itself (``warmup_ratio``, ``warmup_steps``, ``kwargs``) and passes ``num_warmup_steps`` and
``num_training_steps`` (``trainer.estimated_stepping_batches``) when the schedule takes them.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, LambdaLR, LRScheduler, SequentialLR
from transformers.pytorch_utils import ALL_LAYERNORM_LAYERS
from transformers.trainer_pt_utils import get_parameter_names

from models.plugins import accepted_arguments, locate, partial, plugin_settings

log = logging.getLogger(__name__)

# HF Trainer's rule: no weight decay inside LayerNorm layers nor on parameters named like a bias or a norm.
NO_DECAY_NAME_PATTERNS = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")
# keys of a model.scheduler node that the framework reads (the rest go to the schedule)
SCHEDULE_KEYS = ("warmup_ratio", "warmup_steps", "kwargs")


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


def check_optimizer(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``model.optimizer`` checked before anything trains: the class imports and takes every key given.

    A key set to null is left to the optimiser's default (``model.optimizer.betas=null`` for ``sgd`` under a
    config that sets AdamW's betas).
    """
    settings = plugin_settings("optimizer", settings)
    target = settings["_target_"]
    accepted = accepted_arguments(locate("optimizer", target))
    own = {k: v for k, v in settings.items() if not k.startswith("_") and v is not None}
    unknown = sorted(set(own) - (accepted or set(own)) - {"weight_decay"})
    if unknown:
        raise ValueError(
            f"model.optimizer.{unknown[0]} is not an argument of {target} "
            f"(it takes {', '.join(sorted((accepted or set()) - {'params'}))}): set model.optimizer.{unknown[0]}=null."
        )
    return settings


def default_weight_decay(optimizer_class: Any) -> float:
    """The optimiser's own default ``weight_decay`` (0 when it has none)."""
    try:
        parameter = inspect.signature(optimizer_class).parameters.get("weight_decay")
    except (TypeError, ValueError):
        return 0.0
    return float(parameter.default) if parameter is not None and isinstance(parameter.default, (int, float)) else 0.0


def build_optimizer(model: nn.Module, settings: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``model.optimizer`` over ``model``'s trainable parameters; ``weight_decay`` on the decayed group only."""
    settings = check_optimizer(settings)
    keys = {k: v for k, v in settings.items() if v is not None}
    weight_decay = float(keys.pop("weight_decay", default_weight_decay(locate("optimizer", settings["_target_"]))))
    # tuples do not survive instantiate (OmegaConf makes them lists): betas go in at the call
    at_call = {"betas": tuple(keys.pop("betas"))} if "betas" in keys else {}
    return partial(keys)(parameter_groups(model, weight_decay), **at_call)


def warmup_steps(settings: Mapping[str, Any], total_steps: int) -> int:
    """``warmup_steps`` wins over ``warmup_ratio`` (a share of all optimiser steps)."""
    if settings.get("warmup_steps") is not None:
        return int(settings["warmup_steps"])
    return math.ceil(float(settings.get("warmup_ratio") or 0.0) * total_steps)


def cosine_warm_restarts(
    optimizer: torch.optim.Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    T_0: int | None = None,  # noqa: N803 - torch's name, kept as the config key
    T_mult: int = 1,  # noqa: N803
    eta_min: float = 0.0,
) -> LRScheduler:
    """Linear warmup from 0 over the warmup steps, then SGDR cycles of ``T_0``, ``T_0 * T_mult`` ... steps
    (``T_0`` null: one cycle over the rest of training); the LR falls to ``eta_min`` in each cycle."""
    warmup = int(num_warmup_steps)
    t_0 = max(num_training_steps - warmup, 1) if T_0 is None else T_0
    t_mult = 1 if T_mult is None else T_mult
    if isinstance(t_0, bool) or not isinstance(t_0, int) or t_0 < 1:
        raise ValueError(f"model.scheduler.T_0={t_0!r} must be a positive number of optimiser steps.")
    if isinstance(t_mult, bool) or not isinstance(t_mult, int) or t_mult < 1:
        raise ValueError(f"model.scheduler.T_mult={t_mult!r} must be an integer >= 1 (1: cycles of equal length).")
    restarts = CosineAnnealingWarmRestarts(optimizer, T_0=t_0, T_mult=t_mult, eta_min=float(eta_min or 0.0))
    if warmup <= 0:
        return restarts
    ramp = LambdaLR(optimizer, lambda step: step / warmup)
    return SequentialLR(optimizer, [ramp, restarts], milestones=[warmup])


def no_schedule(optimizer: torch.optim.Optimizer, **_: Any) -> None:
    """``model/scheduler=none``: the optimiser's learning rate throughout."""
    return None


def check_scheduler(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``model.scheduler`` checked before anything trains: the schedule imports."""
    settings = plugin_settings("scheduler", settings)
    locate("scheduler", settings["_target_"])
    return settings


def build_scheduler(
    optimizer: torch.optim.Optimizer, settings: Mapping[str, Any], total_steps: int
) -> dict[str, Any] | None:
    """Lightning's lr_scheduler dict, stepped every optimiser step, or None when the schedule gives none.

    The schedule is called as ``_target_(optimizer, num_warmup_steps=..., num_training_steps=..., **its keys,
    **kwargs)``; the step counts only when it takes them. Keys of the node it does not take (``T_0`` left by
    an experiment under ``model/scheduler=linear``) are left out, as before the options were classes.
    """
    settings = check_scheduler(settings)
    function = locate("scheduler", settings["_target_"])
    accepted = accepted_arguments(function)
    steps = {"num_warmup_steps": warmup_steps(settings, total_steps), "num_training_steps": total_steps}
    keys = {k: v for k, v in settings.items() if k not in SCHEDULE_KEYS}
    keys.update(dict(settings.get("kwargs") or {}))
    if accepted is not None:
        left_out = sorted(k for k in keys if not k.startswith("_") and k not in accepted)
        if left_out:
            log.info("model.scheduler: %s takes no %s: left out", settings["_target_"], ", ".join(left_out))
        keys = {k: v for k, v in keys.items() if k.startswith("_") or k in accepted}
        steps = {k: v for k, v in steps.items() if k in accepted}
    scheduler = partial(keys)(optimizer, **steps)
    if scheduler is None:
        return None
    return {"scheduler": scheduler, "interval": "step", "frequency": 1, "name": "lr"}


def optimization(
    model: nn.Module, optimizer: Mapping[str, Any], scheduler: Mapping[str, Any], total_steps: int
) -> Any:
    """What every LightningModule's ``configure_optimizers`` returns: the optimiser, with its schedule."""
    built = build_optimizer(model, optimizer)
    schedule = build_scheduler(built, scheduler, total_steps)
    return built if schedule is None else {"optimizer": built, "lr_scheduler": schedule}
