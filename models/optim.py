"""Optimiser and LR-schedule glue shared by every LightningModule of the framework."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import get_scheduler

NO_DECAY_MARKERS = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias", "norm.weight")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups with no weight decay on biases and normalisation weights (BERT recipe)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if any(marker in name for marker in NO_DECAY_MARKERS) else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, settings: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``model.optimizer`` config: lr, weight_decay, betas, eps (torch.optim.AdamW)."""
    settings = dict(settings)
    weight_decay = float(settings.pop("weight_decay", 0.01))
    name = settings.pop("name", "adamw").lower()
    if name != "adamw":
        raise ValueError(f"model.optimizer.name={name!r} is not supported: use 'adamw'.")
    if "betas" in settings:
        settings["betas"] = tuple(settings["betas"])
    return torch.optim.AdamW(parameter_groups(model, weight_decay), **settings)


def warmup_steps(settings: Mapping[str, Any], total_steps: int) -> int:
    """``warmup_steps`` wins over ``warmup_ratio`` (a share of all optimiser steps)."""
    if settings.get("warmup_steps") is not None:
        return int(settings["warmup_steps"])
    return math.ceil(float(settings.get("warmup_ratio", 0.0)) * total_steps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, settings: Mapping[str, Any], total_steps: int
) -> dict[str, Any] | None:
    """``model.scheduler`` config: name (any transformers SchedulerType), warmup_ratio|warmup_steps, extras.

    Returns Lightning's lr_scheduler dict stepped every optimiser step, or None for ``name: none``.
    """
    name = settings.get("name", "linear")
    if name in (None, "none"):
        return None
    extra = dict(settings.get("kwargs") or {})
    scheduler = get_scheduler(
        name,
        optimizer,
        num_warmup_steps=warmup_steps(settings, total_steps),
        num_training_steps=total_steps,
        scheduler_specific_kwargs=extra or None,
    )
    return {"scheduler": scheduler, "interval": "step", "frequency": 1, "name": "lr"}
