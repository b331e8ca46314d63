"""Training orders as samplers, so datasets stay order-free and Lightning can shard them for DDP.

Pacings (``datamodules.curriculum`` builds them from ``datamodule.curriculum``): ``SeededShuffleSampler``
(none), ``CurriculumSampler`` (sorted; anti = descending), ``BabyStepsSampler`` and ``CompetenceSampler``.
Every order is a pure function of (difficulties, seed, epoch): nothing else is state, which is what makes
DDP shares agree and a resumed run draw the same sequence.

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
        self.order: list[int] = _order(difficulties, descending).tolist()
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


def _order(difficulties: Sequence[float], descending: bool) -> np.ndarray:
    """Indices from easiest to hardest; a stable sort, so equal scores keep dataset order."""
    scores = np.asarray(difficulties, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError("A curriculum needs one difficulty score per sample.")
    return np.argsort(-scores if descending else scores, kind="stable")


class _PacedSampler(Sampler[int]):
    """What the paced samplers share: the easy-to-hard order, a seed, and the epoch that sets the pool.

    An epoch is always ``len(difficulties)`` draws, so Lightning's batch count, the LR schedule and a
    mid-epoch resume see the same epoch length as a shuffled run.
    """

    name = "paced"

    def __init__(self, difficulties: Sequence[float], seed: int, descending: bool) -> None:
        self.order = torch.from_numpy(_order(difficulties, descending))
        self.num_samples = int(self.order.numel())
        if self.num_samples == 0:
            raise ValueError(f"{self.name}: there are no training samples to order.")
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at the start of every training epoch."""
        self.epoch = epoch

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + self.epoch)

    def __len__(self) -> int:
        return self.num_samples


class BabyStepsSampler(_PacedSampler):
    """Baby steps (Bengio et al. 2009; Spitkovsky et al. 2010): ``num_buckets`` buckets of increasing
    difficulty; the pool starts with the easiest and gains the next bucket every ``bucket_epochs`` epochs.

    An epoch is seeded permutations of the pool, one after another, cut at the data's length: a small
    early pool is simply repeated.
    """

    name = "baby_steps"

    def __init__(
        self,
        difficulties: Sequence[float],
        num_buckets: int = 5,
        bucket_epochs: int = 1,
        seed: int = 0,
        descending: bool = False,
    ) -> None:
        if int(num_buckets) < 1 or int(bucket_epochs) < 1:
            raise ValueError(
                f"baby_steps: num_buckets={num_buckets} and bucket_epochs={bucket_epochs} must both be >= 1."
            )
        super().__init__(difficulties, seed, descending)
        self.buckets = list(torch.tensor_split(self.order, min(int(num_buckets), self.num_samples)))
        self.bucket_epochs = int(bucket_epochs)

    def pool(self, epoch: int | None = None) -> torch.Tensor:
        """The indices allowed in ``epoch`` (default: the current one), easiest bucket first."""
        epoch = self.epoch if epoch is None else epoch
        return torch.cat(self.buckets[: min(len(self.buckets), epoch // self.bucket_epochs + 1)])

    def __iter__(self) -> Iterator[int]:
        pool = self.pool()
        generator = self.generator()
        passes = -(-self.num_samples // pool.numel())
        draws = torch.cat([pool[torch.randperm(pool.numel(), generator=generator)] for _ in range(passes)])
        return iter(draws[: self.num_samples].tolist())


def competence(t: float | np.ndarray, c0: float, horizon: float) -> np.ndarray:
    """Platanios et al. (2019)'s square-root competence: c(t) = min(1, sqrt(t (1 - c0^2) / T + c0^2))."""
    return np.minimum(1.0, np.sqrt(np.asarray(t, dtype=np.float64) * (1 - c0**2) / horizon + c0**2))


class CompetenceSampler(_PacedSampler):
    """Competence-based curriculum (Platanios et al. 2019): each draw is uniform over the easiest c(t)
    fraction of the samples, with c(t) growing from ``c0`` to 1 over ``horizon`` epochs.

    Time is counted in epochs, fractions included: draw ``k`` of epoch ``e`` is at t = e + k / N. That is
    the paper's step count divided by the steps per epoch, so it holds for any batch size and number of
    processes. Draws are with replacement, as in the paper, and seeded per epoch.
    """

    name = "competence"

    def __init__(
        self,
        difficulties: Sequence[float],
        c0: float = 0.01,
        horizon: float = 1.0,
        seed: int = 0,
        descending: bool = False,
    ) -> None:
        if not 0 < float(c0) <= 1 or not float(horizon) > 0:
            raise ValueError(f"competence: c0={c0} must lie in (0, 1] and T={horizon} (epochs) must be > 0.")
        super().__init__(difficulties, seed, descending)
        self.c0, self.horizon = float(c0), float(horizon)

    def pool_sizes(self, epoch: int | None = None) -> np.ndarray:
        """How many of the easiest samples each draw of ``epoch`` may pick from (at least one)."""
        epoch = self.epoch if epoch is None else epoch
        t = epoch + np.arange(self.num_samples) / self.num_samples
        sizes = np.ceil(competence(t, self.c0, self.horizon) * self.num_samples - 1e-6).astype(np.int64)  # float noise
        return np.clip(sizes, 1, self.num_samples)

    def __iter__(self) -> Iterator[int]:
        uniform = torch.rand(self.num_samples, generator=self.generator(), dtype=torch.float64)
        sizes = torch.from_numpy(self.pool_sizes())
        ranks = torch.minimum((uniform * sizes).long(), sizes - 1)
        return iter(self.order[ranks].tolist())


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
