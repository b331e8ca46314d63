"""Exact resume: ``ckpt_path=<run>/checkpoints/last.ckpt`` goes on as if training had never stopped.

Lightning 2.6 restores the weights, optimiser, LR scheduler, loop counters and callback states from a
checkpoint. Two things it leaves out are added here:

* the data position inside an epoch. A plain DataLoader is not resumable, so after a mid-epoch
  checkpoint Lightning replays the epoch from its first batch (it only warns). The framework's samplers
  are seeded per epoch (``set_epoch``), so the epoch's order can be rebuilt and the batches already
  trained on skipped (``ExactResume``);
* the random-number generators (dropout masks), kept in the checkpoint by ``ExactResume``.

``LastCheckpoint`` writes ``last.ckpt`` at every validation, every ``every_n_train_steps`` optimiser
steps, when ``trainer.max_steps`` ends training mid-epoch, and when Ctrl-C or SIGTERM stops the run. It also
makes every checkpoint of the fit atomic (``AtomicCheckpointIO``), so a SIGKILL, which no handler sees, leaves
the previous ``last.ckpt`` whole: see docs/resume.md.
"""

from __future__ import annotations

import logging
import random
import signal
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import BatchSampler, DataLoader

from core.files import atomic_open, remove_stale_temps
from datamodules.samplers import SkipFirst

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- random states


def rng_states() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python states as tensors and tuples (loads with weights_only=True)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ----------------------------------------------------------------------------- data position


def train_loaders(trainer: Trainer) -> list[Any]:
    """The training DataLoader(s) of the running fit, however they were nested."""
    loaders = trainer.train_dataloader
    if isinstance(loaders, Mapping):
        return list(loaders.values())
    if isinstance(loaders, Sequence):
        return list(loaders)
    return [] if loaders is None else [loaders]


def resumed_batch(trainer: Trainer) -> int:
    """The batch of the current epoch that Lightning's training loop resumes at (mirrors its ``reset``).

    A checkpoint written at a batch end counts that batch as done; one written at the epoch's last batch
    starts the next epoch. ``ExactResume`` checks the result against the first ``batch_idx`` it sees.
    """
    epoch_loop = trainer.fit_loop.epoch_loop
    done = epoch_loop.batch_progress.current.completed + int(epoch_loop.restarted_on_train_batch_end)
    return 0 if done >= trainer.num_training_batches else done


def skip_batches(loader: Any, batches: int) -> bool:
    """Make ``loader``'s next pass start at ``batches`` (a multiple of its batch size); False if it cannot."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    if not isinstance(loader, DataLoader) or not isinstance(batch_sampler, BatchSampler) or not loader.batch_size:
        return batches == 0
    if batches:
        batch_sampler.sampler = SkipFirst(batch_sampler.sampler, batches * loader.batch_size)
    return True


class ExactResume(Callback):
    """Puts the training order at the batch the checkpoint stopped at, and restores the RNG states.

    Runs in ``on_train_start``: after Lightning restored the loops and built the loader, before the first
    batch is drawn. The epoch's order is rebuilt with ``set_epoch`` and the consumed indices skipped
    (``SkipFirst``); with worker processes, which read ahead from the sampler when their iterator is made,
    the iterator is made again.
    """

    def __init__(self) -> None:
        self._restored_rng: dict[str, Any] | None = None
        self._expected_batch: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_rng = state_dict.get("rng")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rng, self._restored_rng = self._restored_rng, None
        if trainer.ckpt_path is None:  # a fresh fit (tuners restore their own checkpoints: not a resume)
            return
        loop = trainer.fit_loop
        epoch = loop.epoch_progress.current.processed
        batch = resumed_batch(trainer)
        loaders = train_loaders(trainer)
        skipped = all([skip_batches(loader, batch) for loader in loaders])
        if not skipped:
            rank_zero_warn(
                f"ExactResume: a training loader without a BatchSampler cannot skip the {batch} batches already "
                "trained on: this epoch starts again from its first batch."
            )
        for loader in loaders:  # as Lightning will, but before the workers below read the order
            batch_sampler = getattr(loader, "batch_sampler", None)
            for sampler in (getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
                if callable(getattr(sampler, "set_epoch", None)):
                    sampler.set_epoch(epoch)
        if any(getattr(loader, "num_workers", 0) > 0 for loader in loaders) and loop._data_fetcher is not None:
            iter(loop._data_fetcher)  # the workers already read ahead with the pre-resume epoch and position
        if rng is not None:
            set_rng_states(rng)
        self._expected_batch = batch if skipped else None
        if skipped:  # Lightning's "your dataloader is not resumable" warning no longer applies
            warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch")
        if trainer.is_global_zero:
            log.info("Resuming epoch %d at batch %d (global step %d)", epoch, batch, trainer.global_step)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        expected, self._expected_batch = self._expected_batch, None
        if expected is not None and batch_idx != expected:
            rank_zero_warn(
                f"ExactResume skipped {expected} batches but Lightning resumed at batch {batch_idx}: "
                "the data order of this epoch differs from an uninterrupted run."
            )


# ----------------------------------------------------------------------------- atomic checkpoints


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temp file beside the checkpoint, fsync, rename (``core.files.atomic_open``).

    Lightning's own save (``_atomic_save``) writes through an fsspec transaction, whose local temp file is
    made by ``tempfile.mkstemp`` in ``$TMPDIR`` and moved with ``shutil.move``: across filesystems (a tmpfs
    ``/tmp``, outputs on another disk) that move is a copy into the checkpoint itself, so a SIGKILL during it
    leaves a truncated checkpoint; on one filesystem it leaves a checkpoint-sized temp in ``$TMPDIR`` that
    nothing removes. It also serialises the whole checkpoint into memory first. Here the bytes stream to a
    temp in the checkpoint's own directory. Remote paths (``s3://``, ...) keep Lightning's way.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        with atomic_open(Path(str(path).removeprefix("file://")), binary=True) as handle:
            torch.save(checkpoint, handle)


def install_atomic_checkpoint_io(trainer: Trainer) -> bool:
    """Use ``AtomicCheckpointIO`` for ``trainer``'s checkpoints when it has Lightning's default IO (a custom or
    wrapping plugin, e.g. async saving, is left alone); returns whether it is in place."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
    return isinstance(strategy.checkpoint_io, AtomicCheckpointIO)


# ----------------------------------------------------------------------------- last.ckpt


class LastCheckpoint(Checkpoint):
    """Writes ``<dirpath>/last.ckpt``, the state to resume from, whenever training may stop.

    At each validation of fit (as ModelCheckpoint's ``save_last``), every ``every_n_train_steps`` optimiser
    steps (null: never), when ``trainer.max_steps`` is reached (at that batch's end, so a resume continues
    the epoch), at the end of training, and when Ctrl-C or SIGTERM stops the run. The first Ctrl-C asks
    Lightning to stop after the current batch, as SIGTERM does; a second one stops at once.

    At the start of a fit it makes every checkpoint atomic (``install_atomic_checkpoint_io``) and deletes the
    temp files a writer killed mid-write left in the checkpoint directories (a run resumed in place).
    """

    FILE_NAME = "last.ckpt"

    def __init__(
        self, dirpath: str, every_n_train_steps: int | None = None, save_on_interrupt: bool = True
    ) -> None:
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(
                f"callbacks.last_checkpoint.every_n_train_steps={every_n_train_steps} must be >= 1 (null: off)."
            )
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = every_n_train_steps
        self.save_on_interrupt = save_on_interrupt
        self.interrupted_by: signal.Signals | None = None
        self._saved_step: int | None = None
        self._previous_sigint: Any = None

    @property
    def path(self) -> Path:
        return self.dirpath / self.FILE_NAME

    def save(self, trainer: Trainer) -> None:
        trainer.save_checkpoint(self.path)
        self._saved_step = trainer.global_step

    def _fitting(self, trainer: Trainer) -> bool:
        return trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and not trainer.fast_dev_run

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != TrainerFn.FITTING:
            return
        if not install_atomic_checkpoint_io(trainer):
            log.info("%s is not Lightning's default: checkpoints are written its way",
                     type(trainer.strategy.checkpoint_io).__name__)
        if trainer.is_global_zero:
            directories = {self.dirpath, *(Path(c.dirpath) for c in trainer.checkpoint_callbacks
                                           if isinstance(c, ModelCheckpoint) and c.dirpath)}
            for directory in sorted(directories):
                for stale in remove_stale_temps(directory):
                    log.warning("Removed %s, left by a checkpoint write that was killed", stale)

    # ------------------------------------------------------------------ when

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if not self._fitting(trainer) or step == self._saved_step:
            return
        every = self.every_n_train_steps
        if (every and step % every == 0) or (trainer.max_steps > 0 and step >= trainer.max_steps):
            self.save(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._fitting(trainer):
            self.save(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._fitting(trainer) and trainer.global_step != self._saved_step:
            self.save(trainer)
        self._restore_sigint()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore_sigint()
        if not (self.save_on_interrupt and isinstance(exception, KeyboardInterrupt | SIGTERMException)):
            return
        if self.interrupted_by is None:
            self.interrupted_by = signal.SIGINT if isinstance(exception, KeyboardInterrupt) else signal.SIGTERM
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self.save(trainer)
            if trainer.is_global_zero:
                log.warning(
                    "%s: wrote %s at global step %d; resume with ckpt_path=%s",
                    self.interrupted_by.name, self.path, trainer.global_step, self.path,
                )

    # ------------------------------------------------------------------ Ctrl-C

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.save_on_interrupt and callable(signal.getsignal(signal.SIGTERM)):
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        """First Ctrl-C: Lightning's SIGTERM path (stop after this batch); the second: KeyboardInterrupt."""
        if self.interrupted_by is not None:
            raise KeyboardInterrupt
        self.interrupted_by = signal.SIGINT
        log.warning("Ctrl-C: stopping after this batch and writing last.ckpt (Ctrl-C again to stop now)")
        signal.raise_signal(signal.SIGTERM)

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None


def _last_checkpoint(trainer: Trainer) -> LastCheckpoint | None:
    return next((c for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)


def stop_requested(trainer: Trainer) -> bool:
    """A Ctrl-C or SIGTERM that Lightning took in but never acted on: it checks between batches and epochs,
    so one that lands after its last check (while the final checkpoints are written) lets ``fit`` return."""
    stopper = _last_checkpoint(trainer)
    return bool(trainer.received_sigterm or (stopper is not None and stopper.interrupted_by is not None))


def interrupt_exit_code(trainer: Trainer) -> int:
    """The shell's code for the signal that stopped training (130 Ctrl-C, 143 SIGTERM)."""
    stopper = _last_checkpoint(trainer)
    received = stopper.interrupted_by if stopper and stopper.interrupted_by else signal.SIGTERM
    return 128 + int(received)
