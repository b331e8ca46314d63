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
    """Collects (feature index, top-k starts, top-k ends, no-answer score) for all features seen in an epoch.

    Each step's rows are copied into a block of ``block_rows`` rows per field and the state keeps views of it:
    one allocation per block instead of six small long-lived ones per step. On CPU, small tensors that outlive
    the step can land in the large chunks the forward pass has just freed and keep glibc from handing that memory
    back, so the heap can grow with every step of a long evaluation.
    """

    full_state_update = False
    fields = ("feature_index", "start_idx", "start_val", "end_idx", "end_val", "null_val")

    def __init__(self, block_rows: int = 4096, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in self.fields:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.block_rows = block_rows
        self._blocks: dict[str, tuple[torch.Tensor, int]] = {}  # field -> (current block, rows used)

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
            getattr(self, name).append(self._stored(name, value.detach()))

    def _stored(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """``value`` copied into the field's current block (a new one when it is full); returns that view."""
        rows = value.size(0)
        block, used = self._blocks.get(name, (None, 0))
        if (
            block is None
            or used + rows > block.size(0)
            or (block.dtype, block.device, block.shape[1:]) != (value.dtype, value.device, value.shape[1:])
        ):
            block, used = value.new_empty((max(self.block_rows, rows), *value.shape[1:])), 0
        block[used : used + rows] = value
        self._blocks[name] = (block, used + rows)
        return block[used : used + rows]

    def reset(self) -> None:
        super().reset()
        self._blocks = {}

    def compute(self) -> dict[str, torch.Tensor]:
        # Under DDP, torchmetrics syncs before compute and the list states arrive as one gathered tensor.
        if isinstance(self.feature_index, list) and not self.feature_index:
            return {}
        return {name: dim_zero_cat(getattr(self, name)).cpu() for name in self.fields}
