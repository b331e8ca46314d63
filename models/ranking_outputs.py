"""Evaluation collectors of the trained retrievers: per item, its index and a vector, synced across processes."""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["IndexedRows"]


class IndexedRows(Metric):
    """(index, row) pairs of an epoch; ``compute`` gives them sorted by index, each once (a distributed sampler
    repeats some items to even out the processes)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("rows", default=[], dist_reduce_fx="cat")

    def update(self, index: torch.Tensor, rows: torch.Tensor) -> None:  # type: ignore[override]
        self.index.append(index.detach().long())
        self.rows.append(rows.detach().float())

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.index, list) and not self.index:
            return torch.empty(0, dtype=torch.long), torch.empty(0)
        index, rows = dim_zero_cat(self.index), dim_zero_cat(self.rows)
        order = torch.argsort(index, stable=True)
        index, rows = index[order], rows[order]
        first = torch.ones_like(index, dtype=torch.bool)
        first[1:] = index[1:] != index[:-1]
        return index[first], rows[first]
