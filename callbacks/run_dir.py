"""Hydra callback: every run writes to a directory of its own, so no run overwrites another's results.

Hydra writes ``.hydra/`` into the run directory before the job starts, and the job writes its backbone,
logs and checkpoints long before it can fail; so a run that reuses a directory destroys what was there,
even when it fails. Before Hydra touches the directory (``on_run_start``):

* the default, time-stamped directory (``outputs/<run_name>/<date>/<time>``) is claimed with an atomic
  ``mkdir``; when another run started in the same second, this one takes ``<time>-1``, ``<time>-2``, ...;
* an explicit ``hydra.run.dir`` that already holds a run's results (``metrics.json``, predictions,
  checkpoints) is refused, unless the run resumes from a checkpoint inside it (``ckpt_path=<dir>/...``),
  which is how a scheduler requeues an interrupted job.

Registered in ``conf/hydra/default.yaml``; multirun jobs get numbered directories from Hydra itself.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

__all__ = ["FreshRunDir", "earlier_results"]

RESULT_FILES = ("metrics.json", "predictions.json", "test_predictions.json", "retrieved.json")


def earlier_results(run_dir: Path) -> list[str]:
    """What in ``run_dir`` a new run would overwrite: result files and checkpoints (relative names)."""
    found = [name for name in RESULT_FILES if (run_dir / name).is_file()]
    found += sorted(str(p.relative_to(run_dir)) for p in (run_dir / "checkpoints").glob("*.ckpt"))
    return found


def _explicit(config: DictConfig) -> bool:
    """Whether ``hydra.run.dir`` came from the command line (Lightning's DDP children pass it too)."""
    overrides = config.hydra.overrides.get("hydra") or []
    return any(o.lstrip("+~").split("=", 1)[0] == "hydra.run.dir" for o in overrides)


def _resumes_inside(config: DictConfig, run_dir: Path) -> bool:
    ckpt = config.get("ckpt_path")
    return bool(ckpt) and run_dir.resolve() in Path(str(ckpt)).resolve().parents


class FreshRunDir(Callback):
    """Claims a fresh default run directory; refuses an explicit one that holds an earlier run's results."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(str(config.hydra.run.dir))
        if not _explicit(config):
            claimed = self._claim(run_dir)
            if claimed != run_dir:
                with read_write(config.hydra), open_dict(config.hydra):
                    config.hydra.run.dir = str(claimed)
            return
        held = earlier_results(run_dir) if run_dir.is_dir() else []
        if held and not _resumes_inside(config, run_dir):
            shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
            last = run_dir / "checkpoints" / "last.ckpt"
            resume = f", or resume it with ckpt_path={last}" if last.is_file() else ""
            print(
                f"\nerror: hydra.run.dir={run_dir} already holds the results of an earlier run ({shown}); a new "
                "run there would overwrite them, even if it failed.\n  fix: choose another hydra.run.dir (or "
                f"leave it out: each run gets a new one) or move that run away{resume}",
                file=sys.stderr,
            )
            sys.exit(1)

    @staticmethod
    def _claim(run_dir: Path) -> Path:
        """``run_dir``, or the first free ``<run_dir>-N``: ``mkdir`` is atomic, so two runs never share one."""
        for n in itertools.count():
            candidate = run_dir if n == 0 else run_dir.with_name(f"{run_dir.name}-{n}")
            try:
                candidate.mkdir(parents=True)
            except FileExistsError:
                continue
            return candidate
        raise AssertionError("unreachable")
