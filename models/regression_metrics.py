"""Regression metrics (KLUE-STS): Pearson's and Spearman's correlation, mean squared error, binary F1.

* ``pearson``, ``spearman``: the correlation coefficients (-1..1, as scipy.stats.pearsonr / spearmanr give
  them; KLUE's tables print them x 100), from torchmetrics, in float64;
* ``mse``: the mean squared error of the predictions;
* ``f1`` (0-100, as the classifier's F1): KLUE-STS's binary score, prediction and gold both thresholded at
  ``binary_threshold`` (3.0: KLUE's binary label is ``label >= 3``), as KLUE's baseline scores a regressor.

The scores are computed once per epoch on every example's prediction, gathered across processes and
de-duplicated by :class:`RegressionOutputs` (a distributed sampler repeats some examples), so they are exact
under DDP too.
"""

from __future__ import annotations

import math

import torch
from torchmetrics.functional import mean_squared_error, pearson_corrcoef, spearman_corrcoef
from torchmetrics.functional.classification import binary_f1_score

from models.cls_metrics import ClassificationOutputs


def regression_scores(prediction: torch.Tensor, target: torch.Tensor,
                      binary_threshold: float | None = None) -> dict[str, float]:
    """``pearson``, ``spearman``, ``mse`` and, with a threshold, ``f1`` of predictions against gold scores."""
    prediction, target = prediction.double().flatten(), target.double().flatten()
    if prediction.numel() < 2:  # a correlation needs two points
        correlations = {"pearson": math.nan, "spearman": math.nan}
    else:
        correlations = {"pearson": float(pearson_corrcoef(prediction, target)),
                        "spearman": float(spearman_corrcoef(prediction, target))}
    scores = {**correlations, "mse": float(mean_squared_error(prediction, target))}
    if binary_threshold is not None:
        predicted, gold = (prediction >= binary_threshold).long(), (target >= binary_threshold).long()
        scores["f1"] = 100.0 * float(binary_f1_score(predicted, gold))
    return scores


class RegressionOutputs(ClassificationOutputs):
    """Every evaluated example's prediction and gold score (NaN: none), synced across processes."""

    target_dtype = torch.float
    missing_target = math.nan

    def compute(self) -> dict[str, torch.Tensor]:
        """``index``, ``prediction``, ``target``: sorted by example index, each example once."""
        state = super().compute()
        if not state:
            return {}
        return {"index": state["index"], "prediction": state["probs"].flatten(), "target": state["target"]}
