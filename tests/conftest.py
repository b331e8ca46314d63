"""Shared fixtures: run main.py as a user would (a real process, real Hydra, real files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.main_process import run_script

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "mrc_sample"
SHARED_DATA = ROOT.parent / "shared" / "data"

# Small enough for CI's 2 cores, big enough to touch every part of the loop.
TINY_LOOP = [
    "print_config=false",
    "logger=csv",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "datamodule.max_train_examples=48",
    "datamodule.max_eval_examples=12",
    "datamodule.batch_size=8",
]
# The tiny backbone's shape (a reloaded backbone=local takes its shape from the saved config instead).
TINY_BACKBONE = [
    "backbone.config.hidden_size=32",
    "backbone.config.num_hidden_layers=1",
    "backbone.config.num_attention_heads=2",
    "backbone.config.intermediate_size=64",
    "backbone.tokenizer.vocab_size=2000",
]
TINY_RUN = TINY_LOOP + TINY_BACKBONE
# Environment keys a forked run honours (read after start-up); any other key gets a fresh interpreter.
FORKABLE_ENV = {"PYTHONPATH", "WANDB_MODE", "WANDB_DIR", "TOKENIZERS_PARALLELISM", "HYDRA_FULL_ERROR"}


def main_command(*overrides: str, run_dir: Path, cache_dir: Path | None = None) -> list[str]:
    """The ``python main.py`` command line, run dir (and feature cache) under the test's tmp dir."""
    args = [sys.executable, str(ROOT / "main.py"), *overrides, f"hydra.run.dir={run_dir}"]
    return args + ([f"paths.cache_dir={cache_dir}"] if cache_dir is not None else [])


def main_env(env: dict | None = None) -> dict:
    return {
        **os.environ, "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false", "HYDRA_FULL_ERROR": "0", **(env or {})
    }


def run_main(
    *overrides: str, run_dir: Path, cache_dir: Path | None = None, check: bool = True, env: dict | None = None
):
    """``python main.py <overrides>`` with its run dir (and feature cache) under the test's tmp dir."""
    args = main_command(*overrides, run_dir=run_dir, cache_dir=cache_dir)
    if set(env or {}) <= FORKABLE_ENV:  # forked from a server that has imported torch & co. (main_process.py)
        result = run_script(ROOT / "main.py", args[2:], env=main_env(env), cwd=ROOT, timeout=600)
    else:  # an environment read at import time needs a fresh interpreter
        result = subprocess.run(args, cwd=ROOT, env=main_env(env), capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"main.py failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def start_main(*overrides: str, run_dir: Path, cache_dir: Path | None = None, env: dict | None = None):
    """``python main.py <overrides>`` started in the background (a ``subprocess.Popen``; output to files)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    out = open(run_dir.parent / f"{run_dir.name}.out", "w", encoding="utf-8")  # noqa: SIM115 - closed with the process
    args = main_command(*overrides, run_dir=run_dir, cache_dir=cache_dir)
    return subprocess.Popen(args, cwd=ROOT, env=main_env(env), stdout=out, stderr=subprocess.STDOUT, text=True)


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def sample_files() -> dict[str, Path]:
    files = {"train": SAMPLE / "train.json", "validation": SAMPLE / "validation.json", "corpus": SAMPLE / "corpus.jsonl"}
    missing = [str(p) for p in files.values() if not p.exists()]
    assert not missing, f"embedded data missing: {missing} (python data/generate_mrc_sample.py)"
    return files


@pytest.fixture(scope="session")
def fitted_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny fit shared by the end-to-end tests that only read its outputs."""
    base = tmp_path_factory.mktemp("fit")
    run_dir = base / "run"
    # metric=klue_mrc: metrics.json also gets KLUE-MRC's EM / ROUGE-W beside the KorQuAD scores
    run_main("+experiment=mrc_curriculum", *TINY_RUN, "metric=klue_mrc", run_dir=run_dir, cache_dir=base / "cache")
    return run_dir
