"""Classification losses: cross-entropy, focal loss (Lin et al., 2017) and label smoothing, one module.

``alpha`` weights the classes exactly as ``torch.nn.CrossEntropyLoss(weight=...)`` does (a weighted mean
over the batch), so focal loss with ``gamma: 0`` is cross-entropy, with or without class weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("ce", "focal", "label_smoothing")


def class_weights(alpha: Any, num_labels: int, class_counts: Sequence[int] | None = None) -> torch.Tensor | None:
    """``alpha``: null (unweighted), one weight per class, or ``balanced`` (n / (classes x count), scikit-learn's rule)."""
    if alpha is None:
        return None
    if alpha == "balanced":
        if not class_counts:
            return None  # set once the training data is known (the classifier's setup)
        counts = torch.tensor([max(int(c), 1) for c in class_counts], dtype=torch.float)
        return counts.sum() / (len(counts) * counts)
    if isinstance(alpha, str) or not isinstance(alpha, Sequence):
        raise ValueError(
            f"model.loss.alpha={alpha!r}: give one weight per class (a list of {num_labels} numbers), balanced, or null."
        )
    if len(alpha) != num_labels or any(float(a) < 0 for a in alpha):
        raise ValueError(f"model.loss.alpha has {len(alpha)} weights for {num_labels} classes: give one non-negative "
                         "weight per class, in label-map order.")
    return torch.tensor([float(a) for a in alpha])


class ClassificationLoss(nn.Module):
    """``name``: ``ce`` | ``focal`` (``gamma``) | ``label_smoothing`` (``smoothing``); class weights ``alpha``."""

    def __init__(self, name: str = "ce", gamma: float = 2.0, smoothing: float = 0.1,
                 weight: torch.Tensor | None = None) -> None:
        super().__init__()
        if name not in LOSSES:
            raise ValueError(f"model.loss.name={name!r} is unknown: choose one of {', '.join(LOSSES)}.")
        if gamma < 0:
            raise ValueError(f"model.loss.gamma={gamma}: focal loss needs gamma >= 0 (0 is cross-entropy).")
        if not 0 <= smoothing < 1:
            raise ValueError(f"model.loss.smoothing={smoothing}: give a value in [0, 1).")
        self.name, self.gamma, self.smoothing = name, float(gamma), float(smoothing)
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        weight = None if self.weight is None else self.weight.to(logits.device)
        if self.name != "focal":
            smoothing = self.smoothing if self.name == "label_smoothing" else 0.0
            return F.cross_entropy(logits, target, weight=weight, label_smoothing=smoothing)
        keep = target != -100
        logits, target = logits[keep], target[keep]
        log_pt = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
        loss = -((1.0 - log_pt.exp()) ** self.gamma) * log_pt
        w = weight[target] if weight is not None else torch.ones_like(loss)
        return (w * loss).sum() / w.sum().clamp_min(torch.finfo(loss.dtype).tiny)


def build_loss(settings: Mapping[str, Any] | None, num_labels: int) -> ClassificationLoss:
    settings = dict(settings or {})
    return ClassificationLoss(
        name=settings.get("name", "ce"),
        gamma=float(settings.get("gamma", 2.0)),
        smoothing=float(settings.get("smoothing", 0.1)),
        weight=class_weights(settings.get("alpha"), num_labels),
    )
