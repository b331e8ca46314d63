"""Per-feature top-k span candidates as a torchmetrics state, gathered across DDP processes.

Windows of one example can land on different ranks (and DDP pads with duplicates), so decoding
must wait until every rank's candidates are gathered; the top-k per feature keeps the state small
and fixed-size while losing nothing the decoder would use.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class SpanCandidates(Metric):
    """Collects (feature index, top-k starts, top-k ends, no-answer score) for all features seen in an epoch."""

    full_state_update = False
    fields = ("feature_index", "start_idx", "start_val", "end_idx", "end_val", "null_val")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in self.fields:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(  # type: ignore[override]
        self,
        feature_index: torch.Tensor,
        start_idx: torch.Tensor,
        start_val: torch.Tensor,
        end_idx: torch.Tensor,
        end_val: torch.Tensor,
        null_val: torch.Tensor,
    ) -> None:
        values = (feature_index, start_idx, start_val.float(), end_idx, end_val.float(), null_val.float())
        for name, value in zip(self.fields, values, strict=True):
            getattr(self, name).append(value.detach())

    def compute(self) -> dict[str, torch.Tensor]:
        # Under DDP, torchmetrics syncs before compute and the list states arrive as one gathered tensor.
        if isinstance(self.feature_index, list) and not self.feature_index:
            return {}
        return {name: dim_zero_cat(getattr(self, name)).cpu() for name in self.fields}
