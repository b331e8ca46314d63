"""Classification metrics with KLUE's definitions, from torchmetrics, on 0-100 scales as KLUE reports them.

* ``accuracy``; ``macro_f1`` (KLUE-YNAT): torchmetrics.
* ``micro_f1`` (KLUE-RE): micro-F1 over every class except ``no_relation`` (scikit-learn's
  ``f1_score(average="micro", labels=<all but no_relation>)``), from torchmetrics' confusion matrix, so
  predicting ``no_relation`` for a relation costs recall and predicting a relation for ``no_relation`` costs
  precision.
* ``auprc`` (KLUE-RE): per class, the trapezoidal area under the precision-recall curve
  (``sklearn.metrics.auc(recall, precision)``), averaged over all classes. Like scikit-learn, a class with no
  gold example has recall 1 at every threshold, which gives it an area of 0.5.

:class:`ClassificationOutputs` gathers (index, probabilities, target) over an epoch and across processes, so
the metrics are computed once, exactly, on de-duplicated examples (a distributed sampler repeats some).
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision_recall_curve,
)
from torchmetrics.utilities import dim_zero_cat


def micro_f1_without(confusion: torch.Tensor, excluded: int | None) -> float:
    """Micro-F1 (0-100) over every class but ``excluded``, from a confusion matrix (rows gold, columns predicted)."""
    keep = torch.ones(confusion.size(0), dtype=torch.bool)
    if excluded is not None:
        keep[excluded] = False
    confusion = confusion.double()
    true_positives = confusion.diagonal()[keep].sum()
    predicted = confusion[:, keep].sum()
    gold = confusion[keep, :].sum()
    if true_positives == 0:
        return 0.0
    precision, recall = true_positives / predicted, true_positives / gold
    return float(200 * precision * recall / (precision + recall))


def klue_auprc(probs: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over classes of the area under each one-vs-rest precision-recall curve (0-100), as KLUE-RE scores it."""
    precision, recall, _ = multiclass_precision_recall_curve(probs.float(), target, num_classes=probs.size(1),
                                                             thresholds=None)
    areas = []
    for c in range(probs.size(1)):
        if not bool((target == c).any()):
            areas.append(0.5)  # scikit-learn: recall 1 at every threshold, then (0, 1): a triangle of area 0.5
            continue
        areas.append(float(torch.trapezoid(precision[c].double(), recall[c].double()).abs()))
    return 100.0 * sum(areas) / len(areas)


def classification_scores(probs: torch.Tensor, target: torch.Tensor, no_relation_index: int | None = None) -> dict[str, float]:
    """``accuracy``, ``macro_f1``, ``auprc`` and, with a ``no_relation`` class, KLUE-RE's ``micro_f1`` (all 0-100)."""
    num_classes = probs.size(1)
    preds = probs.argmax(dim=1)
    scores = {
        "accuracy": 100.0 * float(multiclass_accuracy(preds, target, num_classes=num_classes, average="micro")),
        "macro_f1": 100.0 * float(multiclass_f1_score(preds, target, num_classes=num_classes, average="macro")),
        "auprc": klue_auprc(probs, target),
    }
    if no_relation_index is not None:
        confusion = multiclass_confusion_matrix(preds, target, num_classes=num_classes)
        scores["micro_f1"] = micro_f1_without(confusion, no_relation_index)
    return scores


class ClassificationOutputs(Metric):
    """Every evaluated example's probabilities and gold class (-100: none), synced across processes."""

    full_state_update = False
    # the gold values' type, and what stands for "no gold" (a batch without labels)
    target_dtype: torch.dtype = torch.long
    missing_target: float = -100

    def __init__(self) -> None:
        super().__init__()
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, index: torch.Tensor, probs: torch.Tensor, target: torch.Tensor | None) -> None:
        if target is None:
            target = torch.full(index.shape, self.missing_target, dtype=self.target_dtype, device=index.device)
        self.index.append(index.detach().long())
        self.probs.append(probs.detach().float())
        self.target.append(target.detach().to(self.target_dtype))

    def compute(self) -> dict[str, torch.Tensor]:
        """Sorted by example index, each example once."""
        # after a DDP sync each state is one concatenated tensor, not a list
        if isinstance(self.index, list) and not self.index:
            return {}
        index, probs, target = (dim_zero_cat(s) for s in (self.index, self.probs, self.target))
        order = torch.argsort(index, stable=True)
        index, probs, target = index[order], probs[order], target[order]
        first = torch.ones_like(index, dtype=torch.bool)
        first[1:] = index[1:] != index[:-1]
        return {"index": index[first], "probs": probs[first], "target": target[first]}
