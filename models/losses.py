"""The losses of ``model/loss``: cross-entropy, focal loss (Lin et al., 2017), label smoothing, MSE and Huber.

Every option's ``_target_`` is a :class:`Loss` subclass, built by the module as
``_target_(num_labels=<outputs per example>, **the option's keys)`` and called as ``loss(logits, target)``
(docs/extending.md). ``alpha`` (class weights, :class:`WeightedLoss`) weighs the classes exactly as
``torch.nn.CrossEntropyLoss(weight=...)`` does (a weighted mean over the batch), so focal loss with ``gamma: 0``
is cross-entropy, with or without class weights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.plugins import accepted_arguments, locate, partial, plugin_settings

log = logging.getLogger(__name__)


def class_weights(alpha: Any, num_labels: int, class_counts: Sequence[int] | None = None) -> torch.Tensor | None:
    """``alpha``: null (unweighted), one weight per class, or ``balanced`` (n / (classes x count), scikit-learn's rule)."""
    if alpha is None:
        return None
    if alpha == "balanced":
        if not class_counts:
            return None  # set once the training data is known (Loss.use_class_counts)
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


class Loss(nn.Module):
    """The contract of a ``model/loss`` option: what every loss receives and what it returns.

    Built with ``num_labels`` (the model's outputs per example: the classes, 1 for a regressor) and the keys of
    its config node; ``forward(logits, target)``: ``logits`` ``[batch, num_labels]`` (``[batch]`` for a
    regressor), ``target`` the class ids (-100: ignored) or real values; returns a scalar to minimise.
    A loss that needs the training data's class counts says so with :attr:`needs_class_counts`; the module then
    calls :meth:`use_class_counts` once the data is read (``task=fit``).
    """

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.num_labels = int(num_labels)

    @property
    def needs_class_counts(self) -> bool:
        return False

    def use_class_counts(self, counts: Sequence[int]) -> None:
        """The training examples per class, in label-map order (called when :attr:`needs_class_counts`)."""


class WeightedLoss(Loss):
    """A classification loss with class weights ``alpha``: null | [w_0, w_1, ...] | balanced."""

    def __init__(self, num_labels: int, alpha: Any = None) -> None:
        super().__init__(num_labels)
        self.alpha = list(alpha) if isinstance(alpha, Sequence) and not isinstance(alpha, str) else alpha
        self.register_buffer("weight", class_weights(alpha, self.num_labels), persistent=False)

    @property
    def needs_class_counts(self) -> bool:
        return self.alpha == "balanced"

    def use_class_counts(self, counts: Sequence[int]) -> None:
        self.weight = class_weights(self.alpha, self.num_labels, counts)

    def class_weight(self, logits: torch.Tensor) -> torch.Tensor | None:
        return None if self.weight is None else self.weight.to(logits.device)


class CrossEntropyLoss(WeightedLoss):
    """``model/loss=ce``."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return F.cross_entropy(logits, target, weight=self.class_weight(logits))


class LabelSmoothingLoss(WeightedLoss):
    """``model/loss=label_smoothing``: ``smoothing`` of the probability mass spread over all classes."""

    def __init__(self, num_labels: int, smoothing: float = 0.1, alpha: Any = None) -> None:
        super().__init__(num_labels, alpha)
        if not 0 <= smoothing < 1:
            raise ValueError(f"model.loss.smoothing={smoothing}: give a value in [0, 1).")
        self.smoothing = float(smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return F.cross_entropy(logits, target, weight=self.class_weight(logits), label_smoothing=self.smoothing)


class FocalLoss(WeightedLoss):
    """``model/loss=focal``: (1 - p_t)^gamma down-weights easy examples; ``gamma`` 0 is cross-entropy."""

    def __init__(self, num_labels: int, gamma: float = 2.0, alpha: Any = None) -> None:
        super().__init__(num_labels, alpha)
        if gamma < 0:
            raise ValueError(f"model.loss.gamma={gamma}: focal loss needs gamma >= 0 (0 is cross-entropy).")
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        weight = self.class_weight(logits)
        keep = target != -100
        logits, target = logits[keep], target[keep]
        log_pt = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
        loss = -((1.0 - log_pt.exp()) ** self.gamma) * log_pt
        w = weight[target] if weight is not None else torch.ones_like(loss)
        return (w * loss).sum() / w.sum().clamp_min(torch.finfo(loss.dtype).tiny)


class MSELoss(Loss):
    """``model/loss=mse`` (the regressor's default): mean squared error."""

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(prediction, target)


class HuberLoss(Loss):
    """``model/loss=huber``: quadratic within ``delta`` of the gold value, linear beyond (less pull from noise)."""

    def __init__(self, num_labels: int = 1, delta: float = 1.0) -> None:
        super().__init__(num_labels)
        if delta <= 0:
            raise ValueError(f"model.loss.delta={delta}: the Huber loss needs delta > 0.")
        self.delta = float(delta)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.huber_loss(prediction, target, delta=self.delta)


def build_loss(settings: Mapping[str, Any], num_labels: int) -> Loss:
    """The ``model/loss`` option ``settings`` as a :class:`Loss` for ``num_labels`` outputs.

    Keys the class does not take (``gamma`` left by an experiment under ``model/loss=label_smoothing``) are left
    out, as when one loss class read them all.
    """
    settings = plugin_settings("loss", settings)
    cls = locate("loss", settings["_target_"])
    if not (isinstance(cls, type) and issubclass(cls, Loss)):
        raise ValueError(
            f"model.loss._target_={settings['_target_']!r} is not a models.losses.Loss: subclass it, so that it is "
            "built with num_labels and can be given class counts (docs/extending.md)."
        )
    accepted = accepted_arguments(cls)
    if accepted is not None:
        left_out = sorted(k for k in settings if not k.startswith("_") and k not in accepted)
        if left_out:
            log.info("model.loss: %s takes no %s: left out", settings["_target_"], ", ".join(left_out))
        settings = {k: v for k, v in settings.items() if k.startswith("_") or k in accepted}
    return partial(settings)(num_labels=num_labels)
