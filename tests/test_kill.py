"""kill -9 survival: a fit killed with SIGKILL leaves only whole files, and resumes to the uninterrupted run.

SIGKILL runs no handler (no last.ckpt on the way out, no logger flush): what survives is what the run had
already written, so every file must be whole at every moment (docs/resume.md).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from callbacks.resume import AtomicCheckpointIO, LastCheckpoint
from core.files import is_temp_file, temp_path
from tests.conftest import ROOT, read_json, run_main
from tests.test_resume import EXACT, assert_same_run, train_losses

# 400 examples make 62 batches of 8: the kill lands in epoch 0, past the step-10 last.ckpt (every 5 steps);
# the CSV logger writes each step, so its progress says when training has gone past that checkpoint.
RUN = [*EXACT, "datamodule.max_train_examples=400", "callbacks.last_checkpoint.every_n_train_steps=5",
       "++logger.csv.flush_logs_every_n_steps=1", "export.enabled=false"]  # fmt: skip
STEPS = 20  # where the resumed run and the reference stop; the killed run was told 100000
KILL_AFTER_CSV_STEP = 11  # the row of optimiser step 12 is on disk, so last.ckpt of step 10 is too


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, what: str, timeout: float = 300) -> None:
    """Poll ``condition`` until it holds; fail if ``process`` ends first or ``timeout`` seconds go by."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the process ended ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(0.01)


def start_main(overrides: list[str], run_dir: Path, cache_dir: Path, output: Path) -> subprocess.Popen:
    """``python main.py`` started, not waited for (conftest's ``run_main`` settings); its output goes to a file,
    not a pipe, which would stall it once full."""
    args = [sys.executable, str(ROOT / "main.py"), *overrides, f"hydra.run.dir={run_dir}", f"paths.cache_dir={cache_dir}"]
    env = {**os.environ, "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false", "HYDRA_FULL_ERROR": "0"}
    with output.open("w") as out:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def whole_lines(path: Path) -> str:
    """The text of a line-by-line log up to its last newline: a kill may cut the last line short (even inside
    a UTF-8 character), which a reader drops. What the framework promises for ``main.log`` and metrics.csv."""
    data = path.read_bytes() if path.exists() else b""
    return data[: data.rfind(b"\n") + 1].decode("utf-8")


def complete_rows(path: Path) -> list[dict[str, str]]:
    """metrics.csv's whole rows; every one has the header's fields. Lightning appends rows (and rewrites the
    file when a new metric appears), so a reader of a live file sees the same."""
    lines = whole_lines(path).splitlines()
    if not lines:
        return []
    header, *rows = csv.reader(lines)
    assert all(len(row) == len(header) for row in rows), f"{path}: a row in the middle is cut short"
    return [dict(zip(header, row, strict=True)) for row in rows]


def csv_losses(path: Path) -> dict[int, float]:
    return {int(row["step"]): float(row["train_loss"]) for row in complete_rows(path) if row.get("train_loss")}


def assert_whole(run_dir: Path) -> None:
    """Every file the killed run left parses; checkpoints load without pickle; only temps are partial."""
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        if is_temp_file(path):  # a write the kill cut short: never under a real name, removed on resume
            continue
        if path.suffix == ".ckpt":
            assert isinstance(torch.load(path, weights_only=True)["global_step"], int), path
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".yaml":
            assert yaml.safe_load(path.read_text(encoding="utf-8")) is not None, path
        elif path.suffix == ".csv":
            complete_rows(path)
        elif path.suffix == ".log":  # Hydra's log
            whole_lines(path)
        else:
            raise AssertionError(f"{path}: a file this test does not know how to check")
    assert AutoTokenizer.from_pretrained(str(run_dir / "backbone")).vocab_size > 0


def test_sigkill_mid_epoch_resumes_to_the_uninterrupted_run(tmp_path: Path) -> None:
    """Killed after step 12, resumed in place (a requeued job) from last.ckpt of step 10, stopped at step 20:
    the same losses, metrics and weights as a run that was never killed. That reference trains from scratch,
    the strongest comparison exact resume allows: a resume from a copy of last.ckpt would only show that the
    same bytes give the same run, while this shows the bytes hold the whole state at step 10."""
    cache, run_dir, reference = tmp_path / "cache", tmp_path / "run", tmp_path / "reference"
    metrics_csv, last = run_dir / "csv" / "metrics.csv", run_dir / "checkpoints" / "last.ckpt"
    # the reference runs meanwhile: most of a run is its single-threaded start, and there are two cores
    uninterrupted = start_main([*RUN, f"++trainer.max_steps={STEPS}"], reference, cache, tmp_path / "reference.out")
    process = start_main([*RUN, "++trainer.max_steps=100000"], run_dir, cache, tmp_path / "killed.out")
    try:
        wait_for(lambda: last.exists() and max(csv_losses(metrics_csv), default=-1) >= KILL_AFTER_CSV_STEP,
                 process, f"last.ckpt and a train_loss row for step {KILL_AFTER_CSV_STEP}")  # fmt: skip
        os.kill(process.pid, signal.SIGKILL)  # the python process itself (no shell between)
        assert process.wait(timeout=60) == -signal.SIGKILL

        assert_whole(run_dir)
        assert not (run_dir / "metrics.json").exists()
        step = torch.load(last, weights_only=True)["global_step"]
        before_kill = csv_losses(metrics_csv)
        assert step % 5 == 0 and 10 <= step < STEPS and max(before_kill) >= step, (step, max(before_kill))
        stale = temp_path(last)  # as a write killed half-way leaves it: it must not stop or mislead the resume
        stale.write_bytes(last.read_bytes()[: last.stat().st_size // 2])

        run_main(*RUN, f"++trainer.max_steps={STEPS}", f"ckpt_path={last}", run_dir=run_dir, cache_dir=cache)
        assert uninterrupted.wait(timeout=600) == 0, (tmp_path / "reference.out").read_text(encoding="utf-8")[-3000:]
    finally:
        for running in (process, uninterrupted):
            if running.poll() is None:
                running.kill()
                running.wait()

    log = (run_dir / "main.log").read_text(encoding="utf-8")
    assert log.count(f"Resuming epoch 0 at batch {step} (global step {step})") == 1
    assert f"Removed {stale}" in log and not [p for p in last.parent.iterdir() if is_temp_file(p)]
    expected = train_losses(reference)
    assert sorted(expected) == list(range(STEPS))
    assert before_kill == {s: expected[s] for s in before_kill}  # the killed run was the reference up to the kill
    # Lightning's CSVLogger deletes the metrics.csv it finds in its directory: in place, the resumed run's
    # file starts at the checkpoint's step (docs/resume.md)
    resumed = train_losses(run_dir)
    assert sorted(resumed) == list(range(step, STEPS))
    assert [resumed[s] for s in resumed] == [expected[s] for s in resumed]
    assert read_json(run_dir / "metrics.json")["global_step"] == STEPS
    assert_same_run(run_dir, reference)


# ----------------------------------------------------------------------------- killed while writing


class BigModel(LightningModule):
    """200 MB of weights, so a checkpoint write lasts long enough to be killed half-way; SGD moves the first
    four by -0.1 a step, so a checkpoint says whether its weights belong to its step."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(50_000_000))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return (self.weight[:4] * batch).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(torch.ones(100_000, 4), batch_size=1)


def fit_big(directory: str, max_steps: int = -1, ckpt_path: str | None = None) -> Trainer:
    """LastCheckpoint and a ModelCheckpoint (newest kept, the one before removed) writing every step."""
    callbacks = [LastCheckpoint(directory, every_n_train_steps=1),
                 ModelCheckpoint(dirpath=directory, every_n_train_steps=1, save_top_k=1)]  # fmt: skip
    trainer = Trainer(
        max_steps=max_steps, max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks, default_root_dir=directory,
    )  # fmt: skip
    trainer.fit(BigModel(), ckpt_path=ckpt_path, weights_only=True)
    return trainer


def test_sigkill_while_a_checkpoint_is_written_leaves_the_previous_one(tmp_path: Path) -> None:
    """The kill lands while a temp file is being written: last.ckpt stays the previous whole checkpoint, no
    temp lands in $TMPDIR (where Lightning's own save puts it), and the resume removes the stale temp."""
    checkpoints, tmpdir = tmp_path / "checkpoints", tmp_path / "tmpdir"
    tmpdir.mkdir()
    code = f"from tests.test_kill import fit_big; fit_big({str(checkpoints)!r})"
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        def writing() -> bool:
            names = [p.name for p in checkpoints.iterdir()] if checkpoints.is_dir() else []
            return "last.ckpt" in names and any(is_temp_file(name) for name in names)

        wait_for(writing, process, "checkpoint write after the first last.ckpt", timeout=120)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    left = sorted(checkpoints.iterdir())
    temps = [p for p in left if is_temp_file(p)]
    assert temps, "the kill landed after the write it was meant to cut short"
    assert not list(tmpdir.glob("tmp*")), "a checkpoint went through $TMPDIR (tempfile.mkstemp)"
    for path in left:
        if path not in temps:
            assert path.suffix == ".ckpt", path
            state = torch.load(path, weights_only=True)
            weight = state["state_dict"]["weight"]
            assert torch.allclose(weight[:4], torch.full((4,), -0.1 * state["global_step"])) and not weight[4:].any()
    step = torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"]

    trainer = fit_big(str(checkpoints), max_steps=step + 1, ckpt_path=str(checkpoints / "last.ckpt"))
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert not [p for p in checkpoints.iterdir() if is_temp_file(p)]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == step + 1
    shutil.rmtree(checkpoints)  # 400 MB that pytest would keep for its last three sessions
