"""Training orders as samplers, so datasets stay order-free and Lightning can shard them for DDP.

Under DDP Lightning wraps any custom sampler in ``DistributedSamplerWrapper(shuffle=False)``: each
rank then reads every world_size-th index of this order, so every rank still sees easy-to-hard (or
batches of similar length). Both samplers are seeded per epoch through ``set_epoch``, so a resumed run
draws the same order as an uninterrupted one; ``SkipFirst`` drops what a mid-epoch checkpoint had
already consumed (``callbacks.resume.ExactResume`` puts it in place).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices


class SeededShuffleSampler(Sampler[int]):
    """A fresh permutation every epoch from ``seed + epoch``.

    With ``lengths`` and ``batch_size`` the permutation is length-grouped (HF Trainer's
    ``group_by_length``: shuffle, then sort inside mega-batches of 50 batches), which cuts the padding
    of dynamically padded batches to a fraction while keeping the order random at the batch level.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        lengths: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> None:
        if lengths is not None and (batch_size is None or len(lengths) != num_samples):
            raise ValueError("Length-grouped shuffling needs one length per sample and the batch size.")
        self.num_samples = num_samples
        self.seed = seed
        self.lengths = list(lengths) if lengths is not None else None
        self.batch_size = batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at the start of every training epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.lengths is None:
            return iter(torch.randperm(self.num_samples, generator=generator).tolist())
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))

    def __len__(self) -> int:
        return self.num_samples


class CurriculumSampler(Sampler[int]):
    """Yields indices sorted by a difficulty score (stable, so equal scores keep dataset order).

    ``ordered_epochs``: how many epochs keep the easy-to-hard order before handing over to ``then``
    (a seeded shuffle; None = every epoch ordered, the strict recipe). Fine-tuning a pretrained encoder
    copes with strict order; a model trained from scratch learns much faster once the order is relaxed.
    """

    def __init__(
        self,
        difficulties: Sequence[float],
        descending: bool = False,
        ordered_epochs: int | None = None,
        then: SeededShuffleSampler | None = None,
    ) -> None:
        scores = np.asarray(difficulties, dtype=np.float64)
        if scores.ndim != 1:
            raise ValueError("CurriculumSampler needs one difficulty score per sample.")
        order = np.argsort(-scores if descending else scores, kind="stable")
        self.order: list[int] = order.tolist()
        self.ordered_epochs = ordered_epochs
        self.then = then or SeededShuffleSampler(len(self.order))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at the start of every training epoch."""
        self.epoch = epoch
        self.then.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        if self.ordered_epochs is not None and self.epoch >= self.ordered_epochs:
            return iter(self.then)
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class SkipFirst(Sampler[int]):
    """Drops the first ``skip`` indices of the next pass over ``sampler``, once; later passes are untouched.

    A mid-epoch resume goes on from the batch where the checkpoint was written: skipping indices (not
    loaded batches) costs nothing, and the length stays the epoch's full length, which is what Lightning's
    batch counter expects. Under DDP ``sampler`` is the rank's ``DistributedSamplerWrapper``, so ``skip``
    counts this rank's indices.
    """

    def __init__(self, sampler: Any, skip: int) -> None:
        if skip < 0:
            raise ValueError(f"SkipFirst: skip={skip} must be >= 0.")
        self.sampler = sampler
        self.skip = skip

    def set_epoch(self, epoch: int) -> None:
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return itertools.islice(iter(self.sampler), skip, None)

    def __len__(self) -> int:
        return len(self.sampler)
